"""bench/mint_token.py DIR: the benchmarks' issuer key and caller token.
Writes into DIR a fresh RSA-2048 key's JWKS (jwks.json, kid "bench"), its
public key (pub.pem) and a self-signed certificate (cert.pem) for the peers
that want those forms (HAProxy, Apache), and one RS256 token (token) with
iss https://issuer.bench, aud https://gateway.bench, valid one hour.
Shared by bench/proxy.sh, bench/ratelimit.sh and bench/audit_evidence.sh."""
import base64
import datetime
import json
import sys
import time

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

t = sys.argv[1]
k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
pub = k.public_key()
open(t + "/pub.pem", "wb").write(pub.public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
now = datetime.datetime.utcnow()
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(pub)
        .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2)).sign(k, hashes.SHA256()))
open(t + "/cert.pem", "wb").write(cert.public_bytes(serialization.Encoding.PEM))


def b64(n):
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


nums = pub.public_numbers()
json.dump({"keys": [{"kty": "RSA", "kid": "bench", "alg": "RS256", "use": "sig",
                     "n": b64(nums.n), "e": b64(nums.e)}]}, open(t + "/jwks.json", "w"))
iat = int(time.time())
open(t + "/token", "w").write(jwt.encode(
    {"iss": "https://issuer.bench", "sub": "arn:aws:iam::123456789012:role/bench",
     "aud": "https://gateway.bench", "iat": iat, "exp": iat + 3600, "jti": "bench-1"},
    k, algorithm="RS256", headers={"kid": "bench"}))

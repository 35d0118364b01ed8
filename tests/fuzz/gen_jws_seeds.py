#!/usr/bin/python3
"""Writes the seed corpora of the `jws` and `jwk` fuzz targets, and prints the
public JWK Set that fuzz_jws.c embeds (FUZZ_JWKS).

Run once by hand: /usr/bin/python3 tests/fuzz/gen_jws_seeds.py > /tmp/jwks.json
The private keys exist only while this script runs; the seeds stay valid
because fuzz_jws.c verifies at a fixed time (FUZZ_NOW, 2026-01-01) and the
tokens expire in 2100. Re-running changes the keys: paste the printed JWKS
into fuzz_jws.c at the same time.
"""
import base64, json, os, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

HERE = os.path.dirname(os.path.abspath(__file__))
ISS, AUD, EXP = "https://fuzz.example", "https://gw.example", 4102444800


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def uint(n, size=None):
    size = size or (n.bit_length() + 7) // 8
    return n.to_bytes(size, "big")


rsa_k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_k = ec.generate_private_key(ec.SECP256R1())
ed_k = ed25519.Ed25519PrivateKey.generate()
rn = rsa_k.public_key().public_numbers()
en = ec_k.public_key().public_numbers()
ed_x = ed_k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
jwks = {"keys": [
    {"kty": "RSA", "kid": "r1", "alg": "RS256", "use": "sig", "n": b64(uint(rn.n)), "e": b64(uint(rn.e))},
    {"kty": "EC", "kid": "e1", "crv": "P-256", "x": b64(uint(en.x, 32)), "y": b64(uint(en.y, 32))},
    {"kty": "OKP", "kid": "d1", "crv": "Ed25519", "x": b64(ed_x)},
]}


def sign(alg, signing_input):
    if alg == "RS256":
        return rsa_k.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    if alg == "PS256":
        return rsa_k.sign(signing_input, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    if alg == "ES256":
        r, s = utils.decode_dss_signature(ec_k.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return uint(r, 32) + uint(s, 32)
    if alg == "EdDSA":
        return ed_k.sign(signing_input)
    return b""


def token(header, claims, alg=None, raw_header=None, raw_claims=None):
    h = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    p = raw_claims if raw_claims is not None else json.dumps(claims, separators=(",", ":")).encode()
    si = (b64(h) + "." + b64(p)).encode()
    return si + b"." + b64(sign(alg or header.get("alg", ""), si)).encode()


good = {"iss": ISS, "sub": "arn:aws:iam::123456789012:role/x", "aud": AUD, "exp": EXP, "iat": 1700000000,
        "jti": "j", "https://sts.amazonaws.com/": {"aws_account": "123456789012"}}
seeds = {
    "valid_rs256": token({"alg": "RS256", "typ": "JWT", "kid": "r1"}, good),
    "ps256_over_rs256_pinned_key": token({"alg": "PS256", "kid": "r1"}, good),
    "valid_es256": token({"alg": "ES256", "typ": "at+jwt", "kid": "e1"}, good),
    "valid_eddsa": token({"alg": "EdDSA", "kid": "d1"}, good),
    "valid_aud_array": token({"alg": "EdDSA", "kid": "d1"}, dict(good, aud=["x", AUD])),
    "alg_none": token({"alg": "none"}, good),
    "alg_hs256": token({"alg": "HS256", "kid": "r1"}, good, alg="none") + b"c2lnbmF0dXJl",
    "crit": token({"alg": "EdDSA", "kid": "d1", "crit": ["exp"]}, good),
    "b64_false": token({"alg": "EdDSA", "kid": "d1", "b64": False}, good),
    "embedded_jwk": token({"alg": "EdDSA", "kid": "d1", "jwk": jwks["keys"][2]}, good),
    "expired": token({"alg": "EdDSA", "kid": "d1"}, dict(good, exp=1600000000)),
    "nbf_future": token({"alg": "EdDSA", "kid": "d1"}, dict(good, nbf=EXP - 10)),
    "wrong_aud": token({"alg": "EdDSA", "kid": "d1"}, dict(good, aud="https://other")),
    "no_kid": token({"alg": "EdDSA"}, good),
    "unknown_kid": token({"alg": "EdDSA", "kid": "../x' OR 1=1"}, good),
    "alg_key_mismatch": token({"alg": "ES256", "kid": "d1"}, good, alg="EdDSA"),
    "dup_keys": token({}, {}, alg="EdDSA", raw_header=b'{"alg":"EdDSA","kid":"d1","kid":"r1"}',
                      raw_claims=json.dumps(good).encode()),
    "deep": token({"alg": "EdDSA", "kid": "d1"}, {}, raw_claims=b'{"iss":"' + ISS.encode() + b'","a":' + b"[" * 40 + b"]" * 40 + b"}"),
    "typ_wrong": token({"alg": "EdDSA", "kid": "d1", "typ": "JOSE"}, good),
    "padding": token({"alg": "EdDSA", "kid": "d1"}, good) + b"==",
    "junk": b"eyJhbGciOiJFZERTQSJ9.e30.!!!!",
    "five_parts": b"a.b.c.d.e",
    "empty": b"",
    "der_es256": token({"alg": "ES256", "kid": "e1"}, good, alg="none") + b64(ec_k.sign(b"x", ec.ECDSA(hashes.SHA256()))).encode(),
}
for name, tok in seeds.items():
    with open(os.path.join(HERE, "corpus", "jws", name), "wb") as f:
        f.write(tok)

jwk_seeds = {
    "three_keys": jwks,
    "enc_and_ops": {"keys": [dict(jwks["keys"][0], use="enc"), dict(jwks["keys"][1], key_ops=["encrypt"]),
                             dict(jwks["keys"][2], key_ops=["verify"])]},
    "rsa_1024": {"keys": [{"kty": "RSA", "kid": "small", "n": b64(uint(rsa.generate_private_key(65537, 1024).public_key().public_numbers().n)), "e": "AQAB"}]},
    "rsa_e3": {"keys": [dict(jwks["keys"][0], e="Aw")]},
    "ec_off_curve": {"keys": [dict(jwks["keys"][1], y=b64(uint((en.y + 1) % (2**256), 32)))]},
    "ec_short_x": {"keys": [dict(jwks["keys"][1], x=b64(uint(en.x, 32)[1:]))]},
    "dup_kid": {"keys": [jwks["keys"][2], jwks["keys"][2]]},
    "alg_mismatch": {"keys": [dict(jwks["keys"][1], alg="RS256"), dict(jwks["keys"][0], alg="HS256")]},
    "unknown_kty": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}, {"kty": "OKP", "crv": "X25519", "x": b64(ed_x)}]},
    "padded_b64": {"keys": [dict(jwks["keys"][2], x=b64(ed_x) + "=")]},
    "too_many": {"keys": [jwks["keys"][2]] * 101},
    "no_keys": {"kid": "x"},
}
for name, doc in jwk_seeds.items():
    with open(os.path.join(HERE, "corpus", "jwk", name), "w") as f:
        json.dump(doc, f)
with open(os.path.join(HERE, "corpus", "jwk", "not_json"), "w") as f:
    f.write('{"keys":[{"kty":"RSA",')
with open(os.path.join(HERE, "corpus", "jwk", "deep"), "w") as f:
    f.write('{"keys":' + "[" * 50 + "]" * 50 + "}")
json.dump(jwks, sys.stdout, separators=(",", ":"))
print()

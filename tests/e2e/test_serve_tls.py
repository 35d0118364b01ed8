"""https upstreams (Cloud Run URLs): TLS with certificate and hostname
verification and SNI, trust from $SSL_CERT_FILE; and the failure paths whose
audit record must still be exactly one: a client that disconnects mid-
response, an upstream that stalls mid-body, fsync "always"."""
import datetime
import ipaddress
import json
import socket
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from serve_env import ServeEnv, status_of, default_policies, SUB
from upstream import Upstream


def make_ca_and_cert(d, names):
    now = datetime.datetime.utcnow()
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "baton test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sans = [x509.IPAddress(ipaddress.ip_address(n)) if n[0].isdigit() else x509.DNSName(n)
            for n in names]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return d / "ca.pem", d / "cert.pem", d / "key.pem"


def tls_env(tmp_path, up_plain, tls_up, host, trust=True):
    pols = default_policies(None)
    pols["tls"] = {"route": {"host": "*", "path_prefix": "/tls/"}, "upstream": "secure",
                   "callers": [{"issuer": "test", "claims": {"sub": SUB}}],
                   "allow": [{"methods": ["GET", "POST"], "paths": ["/**"]}]}
    env = {"SSL_CERT_FILE": str(tmp_path / "ca.pem")} if trust else {"SSL_CERT_FILE": "/nonexistent"}
    e = ServeEnv(tmp_path / "baton", up_plain.port, policies=pols, env=env)
    e.config["upstreams"].append({"name": "secure", "url": "https://%s:%d" % (host, tls_up.port),
                                  "identity": "none", "timeout_ms": 5000})
    e.write_config()
    return e


@pytest.fixture
def plain():
    u = Upstream().start()
    yield u
    u.stop()


@pytest.mark.parametrize("names,host,trust,want", [
    (["localhost"], "localhost", True, 200),
    (["127.0.0.1"], "127.0.0.1", True, 200),
    (["other.example"], "localhost", True, 502),
    (["localhost"], "localhost", False, 502),
], ids=["verified_name", "verified_ip", "wrong_name", "untrusted_ca"])
def test_https_upstream_verification(tmp_path, plain, names, host, trust, want):
    (tmp_path / "baton").mkdir()
    _, cert, key = make_ca_and_cert(tmp_path, names)
    tls_up = Upstream(tls=(str(cert), str(key))).start()
    e = tls_env(tmp_path, plain, tls_up, host, trust)
    e.start()
    try:
        st, _, body = e.request("GET", "/tls/x?q=1", token=e.token())
        assert st == want
        if want == 200:
            rec = json.loads(body)
            assert rec["target"] == "/tls/x?q=1"
            h = {n.lower(): v for n, v in rec["headers"]}
            assert h["host"] == "%s:%d" % (host, tls_up.port)
            for _ in range(3):  # kept alive and reused over TLS
                assert e.request("GET", "/tls/y", token=e.token())[0] == 200
            assert tls_up.connections == 1
        else:
            assert tls_up.requests() == [], "nothing sent over an unverified connection"
    finally:
        assert e.stop() == 0
        tls_up.stop()
    recs = e.audit_records()
    assert recs[0]["reason"] == ("allowed" if want == 200 else "upstream_error")
    if want == 502:
        line = [json.loads(l) for l in e.log_text().splitlines() if "upstream secure" in l][0]
        assert line["upstream"] == "secure" and line["address"] == "127.0.0.1:%d" % tls_up.port
        assert line["error"].startswith("TLS: certificate verify failed: "), line["error"]


def test_client_disconnect_mid_response_is_recorded_once(tmp_path, plain):
    e = ServeEnv(tmp_path, plain.port)
    e.start()
    try:
        s = socket.create_connection(("127.0.0.1", e.port), timeout=10)
        s.sendall(("GET /api/big?resp_bytes=%d HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
                   "X-Request-Id: gone-1\r\n\r\n" % (200 << 20, e.token())).encode())
        got = 0
        while got < (1 << 20):
            got += len(s.recv(65536))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST mid-body
        deadline = time.monotonic() + 10
        while not [r for r in e.audit_records() if (r.get("client_request_id") or r["request_id"]) == "gone-1"]:
            assert time.monotonic() < deadline, "the record is written when the client leaves"
            time.sleep(0.05)
        assert e.request("GET", "/api/after", token=e.token())[0] == 200
    finally:
        assert e.stop() == 0
    recs = [r for r in e.audit_records() if (r.get("client_request_id") or r["request_id"]) == "gone-1"]
    assert len(recs) == 1
    assert recs[0]["reason"] == "client_closed" and recs[0]["decision"] == "error"


def test_upstream_stall_mid_body_is_a_timeout(tmp_path, plain):
    e = ServeEnv(tmp_path, plain.port)
    e.start()
    try:
        s = socket.create_connection(("127.0.0.1", e.port), timeout=10)
        t0 = time.monotonic()
        s.sendall(("GET /slow/x?stall=1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
                   "X-Request-Id: stall-1\r\n\r\n" % e.token()).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        assert status_of(data) == 200, "the head went out before the upstream stalled"
        assert time.monotonic() - t0 < 3, "closed at the step's 500 ms timeout"
    finally:
        assert e.stop() == 0
    rec = [r for r in e.audit_records() if (r.get("client_request_id") or r["request_id"]) == "stall-1"][0]
    assert rec["reason"] == "upstream_timeout" and rec["decision"] == "error"


def test_fsync_always_answers_after_the_record(tmp_path, plain):
    e = ServeEnv(tmp_path, plain.port, audit_fsync="always")
    e.start()
    try:
        tok = e.token()
        c = e.conn()
        for i in range(5):
            c.request("GET", "/api/a%d" % i, headers={"Authorization": "Bearer " + tok,
                                                      "X-Request-Id": "alw-%d" % i})
            r = c.getresponse()
            assert r.status == 200
            r.read()
            # the record is on disk by the time the response arrived
            assert any((x.get("client_request_id") or x["request_id"]) == "alw-%d" % i for x in e.audit_records())
        c.close()
        assert e.request("GET", "/nowhere", token=tok, headers={"X-Request-Id": "alw-404"})[0] == 404
        assert any((x.get("client_request_id") or x["request_id"]) == "alw-404" for x in e.audit_records())
    finally:
        assert e.stop() == 0

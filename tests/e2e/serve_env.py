"""Test environment for `baton serve`: a temp directory with an issuer key pair
(a `jwks_file` issuer, so no IdP stand-in is needed), a main config, step
policies and an audit log; a running baton on free loopback ports; helpers to
mint tokens, send raw bytes, and read the audit log.

    env = ServeEnv(tmp_path, upstream_port=up.port)
    env.start()
    status, headers, body = env.request("GET", "/api/x", token=env.token())
    env.stop()           # SIGTERM, waits, returns the exit code
    env.audit_records()  # request records (checkpoints left out)
"""
import http.client
import json
import os
import pathlib
import signal
import socket
import subprocess
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import BATON

ISSUER = "https://issuer.test"
AUDIENCE = "https://gateway.test"
SUB = "arn:aws:iam::123456789012:role/caller"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _b64u_int(n):
    import base64
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# Policies every serve test can use: path prefix -> (policy body overrides).
def default_policies(upstreams):
    allow_all = [{"methods": ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"],
                  "paths": ["/**"]}]
    caller = [{"issuer": "test", "claims": {"sub": SUB}}]
    return {
        "api": {"route": {"host": "*", "path_prefix": "/api/"}, "upstream": "echo",
                "callers": caller, "allow": allow_all},
        "base": {"route": {"host": "*", "path_prefix": "/based/"}, "upstream": "echo_base",
                 "callers": caller, "allow": allow_all},
        "getonly": {"route": {"host": "*", "path_prefix": "/getonly/"}, "upstream": "echo",
                    "callers": caller, "allow": [{"methods": ["GET"], "paths": ["/getonly/*"]}]},
        "other": {"route": {"host": "*", "path_prefix": "/other/"}, "upstream": "echo",
                  "callers": [{"issuer": "test", "claims": {"sub": "someone-else"}}],
                  "allow": allow_all},
        "hdr": {"route": {"host": "*", "path_prefix": "/hdr/"}, "upstream": "echo",
                "callers": caller, "allow": allow_all,
                "require_headers": {"X-Sfn-Execution": "arn:aws:states:*"}},
        "dry": {"route": {"host": "*", "path_prefix": "/dry/"}, "upstream": "echo",
                "mode": "dry_run",
                "callers": [{"issuer": "test", "claims": {"sub": "nobody"}}], "allow": allow_all},
        "rate": {"route": {"host": "*", "path_prefix": "/rate/"}, "upstream": "echo",
                 "callers": caller, "allow": allow_all,
                 "limits": {"rate_per_s": 1, "burst": 3}},
        "small": {"route": {"host": "*", "path_prefix": "/small/"}, "upstream": "echo",
                  "callers": caller, "allow": allow_all,
                  "limits": {"max_body_bytes": 1000}},
        "slow": {"route": {"host": "*", "path_prefix": "/slow/"}, "upstream": "echo",
                 "callers": caller, "allow": allow_all, "limits": {"timeout_ms": 500}},
        "dead": {"route": {"host": "*", "path_prefix": "/dead/"}, "upstream": "dead",
                 "callers": caller, "allow": allow_all},
        "google": {"route": {"host": "*", "path_prefix": "/google/"}, "upstream": "gcp",
                   "callers": caller, "allow": allow_all},
        "vhost": {"route": {"host": "only.example", "path_prefix": "/api/"}, "upstream": "echo",
                  "callers": caller, "allow": [{"methods": ["GET"], "paths": ["/api/vhost"]}]},
    }


class ServeEnv:
    def __init__(self, tmp, upstream_port, limits=None, workers=1, extra=None, policies=None,
                 audit_fsync="batch", trusted_proxies=None, env=None):
        self.dir = pathlib.Path(tmp)
        self.upstream_port = upstream_port
        self.port = free_port()
        self.admin_port = free_port()
        self.proc = None
        self.env = env or {}
        self.stderr_path = self.dir / "baton.stderr"
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_pem = key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
        pub = key.public_key().public_numbers()
        self.kid = "test-key-1"
        (self.dir / "jwks.json").write_text(json.dumps({"keys": [{
            "kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
            "n": _b64u_int(pub.n), "e": _b64u_int(pub.e)}]}))
        (self.dir / "policies").mkdir(exist_ok=True)
        self.audit_path = self.dir / "audit.jsonl"
        self.limits = {"max_header_bytes": 8192, "max_uri_bytes": 2048,
                       "max_body_bytes": 1 << 40, "header_timeout_ms": 3000,
                       "idle_timeout_ms": 5000, "max_connections": 1000}
        self.limits.update(limits or {})
        self.config = {
            "listen": "127.0.0.1:1",  # PORT overrides it: proves the override works
            "admin_listen": "127.0.0.1:%d" % self.admin_port,
            "workers": workers,
            "trusted_proxies": trusted_proxies or [],
            "limits": self.limits,
            "issuers": [{"name": "test", "issuer": ISSUER, "jwks_file": "jwks.json",
                         "audiences": [AUDIENCE], "algorithms": ["RS256"], "leeway_s": 5}],
            "upstreams": [
                {"name": "echo", "url": "http://127.0.0.1:%d" % upstream_port,
                 "identity": "none", "timeout_ms": 5000},
                {"name": "echo_base", "url": "http://127.0.0.1:%d/base" % upstream_port,
                 "identity": "none", "timeout_ms": 5000},
                {"name": "dead", "url": "http://127.0.0.1:%d" % free_port(),
                 "identity": "none", "timeout_ms": 2000},
                {"name": "gcp", "url": "http://127.0.0.1:%d" % upstream_port,
                 "audience": "https://gcp.test", "token_header": "x-serverless-authorization",
                 "identity": "google", "timeout_ms": 5000},
            ],
            "google": {"credentials": "local"},
            "policies": "policies",
            "audit": {"path": str(self.audit_path), "fsync": audit_fsync,
                      "on_failure": "deny", "record_headers": ["X-Sfn-Execution"]},
        }
        if extra:
            self.config.update(extra)
        self.write_policies(policies if policies is not None else default_policies(None))
        self.write_config()

    # -- files
    def write_config(self):
        (self.dir / "baton.json").write_text(json.dumps(self.config, indent=2))

    def write_policies(self, pols):
        pdir = self.dir / "policies"
        for f in pdir.glob("*.json"):
            f.unlink()
        for name, body in pols.items():
            doc = {"step": name, "description": "test step " + name, "mode": "enforce"}
            doc.update(body)
            (pdir / (name + ".json")).write_text(json.dumps(doc, indent=2))

    # -- process
    def start(self, wait=True):
        env = dict(os.environ)
        env.pop("BATON_CONFIG", None)
        env["PORT"] = str(self.port)
        env.update(self.env)
        self.stderr = open(self.stderr_path, "ab")
        self.t_exec = time.monotonic()
        self.proc = subprocess.Popen([str(BATON), "serve", "-c", str(self.dir / "baton.json")],
                                     stdout=subprocess.DEVNULL, stderr=self.stderr, env=env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("baton exited %d: %s" % (self.proc.returncode, self.log_text()))
            try:
                st, _, _ = self.admin("/readyz")
                if st == 200 and self.listening():
                    t = time.monotonic() - self.t_exec
                    self._wait_probe_closed()
                    return t
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("baton not ready: " + self.log_text())

    def _wait_probe_closed(self, timeout=2):
        """The connection listening() opened is gone from baton's count, so a
        test of max_connections starts from zero."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, _, body = self.admin("/metrics")
            if b"\nbaton_open_connections 0\n" in body:
                return
            time.sleep(0.01)

    def listening(self):
        """True when the serving port accepts a connection (the start gate opened)."""
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=15):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        rc = self.proc.returncode
        return rc

    def log_text(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def rss_kb(self):
        for line in open("/proc/%d/status" % self.proc.pid):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return -1

    # -- tokens
    def token(self, sub=SUB, aud=AUDIENCE, iss=ISSUER, exp_in=300, kid=None, key=None, **claims):
        now = int(time.time())
        body = {"iss": iss, "sub": sub, "aud": aud, "iat": now, "exp": now + exp_in,
                "jti": "j-%d-%d" % (now, id(claims))}
        body.update(claims)
        return jwt.encode(body, key or self.key_pem, algorithm="RS256",
                          headers={"kid": kid or self.kid})

    # -- clients
    def admin(self, path):
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def conn(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, token=None, headers=None, body=None, timeout=10):
        c = self.conn(timeout)
        try:
            h = dict(headers or {})
            if token:
                h["Authorization"] = "Bearer " + token
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def raw(self, data, timeout=5, read_all=True):
        """Sends raw bytes, returns everything read until close or timeout."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        try:
            s.sendall(data)
            out = b""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                out += chunk
                if not read_all and b"\r\n\r\n" in out:
                    break
            return out
        finally:
            s.close()

    # -- audit
    def audit_lines(self):
        if not self.audit_path.exists():
            return []
        out = []
        for p in sorted(self.dir.glob("audit.jsonl*")):
            text = p.read_text()
            # The writer may be mid-line: a record counts once its newline is there.
            for line in text[: text.rfind("\n") + 1].splitlines():
                if line.strip():
                    out.append(json.loads(line))
        return out

    def audit_records(self):
        """Request records only (checkpoints and other chain records left out)."""
        return [r for r in self.audit_lines() if "request_id" in r and "decision" in r]


def status_of(raw):
    if not raw.startswith(b"HTTP/1.1 "):
        return None
    return int(raw[9:12])


def read_response(s, timeout=5):
    """Reads one response framed by Content-Length (none: no body) off s.
    Returns (head, body, complete): body is what came after the head;
    complete is True when it is exactly Content-Length bytes (False: the
    peer closed first, or more came unasked)."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return data, b"", False
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    body = bytearray(rest)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(body) < length:
        chunk = s.recv(1 << 20)
        if not chunk:
            return head, bytes(body), False
        body += chunk
    return head, bytes(body), len(body) == length


def eventually(fn, timeout=5.0, step=0.02):
    """fn() until it is truthy or `timeout` seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)

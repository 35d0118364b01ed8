#!/usr/bin/python3
"""bench/assertion_cost.py: what the caller assertion costs per request, in
instructions, which a shared and noisy machine does not blur.

    /usr/bin/python3 bench/assertion_cost.py [BATON_BINARY] [N]

Runs `baton serve` (1 worker, the bench/proxy.sh config: RS256 token from a
jwks_file, one policy, audit fsync "batch", identity "none") under valgrind's
callgrind twice per setting, with the caller assertion off and on, in front of
the loopback echoing upstream of the e2e tests, and sends N (default 2000) and
3N requests over one keep-alive connection. The difference of the two totals
divided by 2N is the instructions of one request in every baton thread
(worker, audit writer, background), start-up and shutdown cancelled out.
Needs valgrind and python3-jwt; loopback only; about a minute."""
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time
import http.client

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
from upstream import Upstream  # noqa: E402
from serve_env import free_port, _b64u_int  # noqa: E402

BATON = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "./baton").resolve()
N = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
EXEC = "arn:aws:states:us-east-1:123456789012:execution:bench:run-1"


def setup(d, up_port, assertion):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_numbers()
    (d / "jwks.json").write_text(json.dumps({"keys": [{"kty": "RSA", "kid": "bench", "alg": "RS256",
                                                       "n": _b64u_int(pub.n), "e": _b64u_int(pub.e)}]}))
    (d / "policies").mkdir(exist_ok=True)
    (d / "policies" / "bench.json").write_text(json.dumps({
        "step": "bench", "route": {"host": "*", "path_prefix": "/"}, "upstream": "up",
        "callers": [{"issuer": "bench", "claims": {"sub": "arn:aws:iam::123456789012:role/*"}}],
        "allow": [{"methods": ["GET"], "paths": ["/**"]}],
        "require_headers": {"X-Sfn-Execution": "arn:aws:states:*"}}))
    port, admin = free_port(), free_port()
    cfg = {"listen": "127.0.0.1:%d" % port, "admin_listen": "127.0.0.1:%d" % admin, "workers": 1,
           "issuers": [{"name": "bench", "issuer": "https://issuer.bench", "jwks_file": "jwks.json",
                        "audiences": ["https://gateway.bench"], "algorithms": ["RS256"]}],
           "upstreams": [{"name": "up", "url": "http://127.0.0.1:%d" % up_port, "identity": "none"}],
           "policies": "policies", "audit": {"path": "audit.jsonl", "fsync": "batch", "on_failure": "deny"}}
    if assertion:
        cfg["assertion"] = {"issuer": "https://gateway.bench"}
    (d / "baton.json").write_text(json.dumps(cfg))
    now = int(time.time())
    tok = jwt.encode({"iss": "https://issuer.bench", "sub": "arn:aws:iam::123456789012:role/bench",
                      "aud": "https://gateway.bench", "iat": now, "exp": now + 3600, "jti": "b-1"},
                     key, algorithm="RS256", headers={"kid": "bench"})
    return port, admin, tok


def instructions(d, up_port, assertion, n):
    port, admin, tok = setup(d, up_port, assertion)
    out = d / "callgrind.out"
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=%s" % out,
                          str(BATON), "serve", "-c", str(d / "baton.json")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", admin, timeout=2)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or p.poll() is not None:
                raise RuntimeError("baton under valgrind did not become ready")
            time.sleep(0.1)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        seen = None
        for _ in range(n):
            c.request("GET", "/x?resp_bytes=3", headers={"Authorization": "Bearer " + tok, "X-Sfn-Execution": EXEC})
            r = c.getresponse()
            r.read()
            assert r.status == 200, r.status
        c.close()
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(120)
    text = out.read_text(errors="replace")
    m = re.search(r"^totals:\s+(\d+)", text, re.M) or re.search(r"^summary:\s+(\d+)", text, re.M)
    return int(m.group(1))


def main():
    up = Upstream().start()
    res = {}
    try:
        for assertion in (False, True):
            for n in (N, 3 * N):
                with tempfile.TemporaryDirectory(prefix="baton-acost.") as d:
                    res[assertion, n] = instructions(pathlib.Path(d), up.port, assertion, n)
    finally:
        up.stop()
    off = (res[False, 3 * N] - res[False, N]) / (2 * N)
    on = (res[True, 3 * N] - res[True, N]) / (2 * N)
    print("instructions per request, every baton thread (callgrind, %d and %d requests):" % (N, 3 * N))
    print("  assertion off %.0f, on %.0f: on costs %+.0f (%+.1f%%); off / on = %.3f"
          % (off, on, on - off, 100.0 * (on - off) / off, off / on))


if __name__ == "__main__":
    main()

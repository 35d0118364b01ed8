"""Issue 10's hardening, against the real binary: trailing-dot hosts, headers a
`Connection` list would hide, the identity headers stripped, the host forwarded
behind a trusted proxy, redaction in the access log and the query, key sets
emptied by the issuer, baton's own request id, and out-of-range NumericDates."""
import json
import re
import time

import jwt
import pytest

from serve_env import ServeEnv, status_of, ISSUER, AUDIENCE, SUB
from upstream import Upstream


@pytest.fixture(scope="module")
def up():
    u = Upstream().start()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory, up):
    e = ServeEnv(tmp_path_factory.mktemp("harden"), up.port, extra={"access_log": True},
                 trusted_proxies=["10.9.9.0/24"])
    e.start()
    e.tok = e.token()
    yield e
    assert e.stop() == 0


def headers_of(rec):
    out = {}
    for n, v in rec["headers"]:
        out.setdefault(n.lower(), []).append(v)
    return out


def raw_request(env, method, path, headers, body=b""):
    head = "%s %s HTTP/1.1\r\n" % (method, path)
    for n, v in headers:
        head += "%s: %s\r\n" % (n, v)
    head += "Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    return env.raw(head.encode() + body)


def body_of(raw):
    return raw.split(b"\r\n\r\n", 1)[1]


def wait_record(env, pred, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recs = [r for r in env.audit_records() if pred(r)]
        if recs:
            return recs[-1]
        time.sleep(0.05)
    raise AssertionError("no matching audit record")


# ------------------------------------------------------- 4. Connection hiding

@pytest.mark.parametrize("path", ["/hdr/x", "/api/x"])
def test_connection_may_not_name_a_header_the_policy_or_record_reads(env, up, path):
    # /hdr/ requires X-Sfn-Execution; record_headers names it for every step
    up.clear()
    marker = "conn-hide-%d" % time.monotonic_ns()
    out = raw_request(env, "GET", path + "?m=" + marker,
                      [("Host", "gw.example"), ("Authorization", "Bearer " + env.tok),
                       ("X-Sfn-Execution", "arn:aws:states:us-east-1:1:execution:a:b"),
                       ("Connection", "x-sfn-execution")])
    assert status_of(out) == 400
    assert not [r for r in up.requests() if marker in r["target"]], "nothing forwarded"
    rec = wait_record(env, lambda r: r["request"]["query"] == "m=" + marker)
    assert rec["reason"] == "bad_header" and rec["status"] == 400 and rec["decision"] == "deny"


def test_connection_naming_another_header_still_passes(env):
    out = raw_request(env, "GET", "/hdr/x", [("Host", "gw.example"),
                                             ("Authorization", "Bearer " + env.tok),
                                             ("X-Sfn-Execution", "arn:aws:states:x"),
                                             ("Connection", "x-other")])
    assert status_of(out) == 200

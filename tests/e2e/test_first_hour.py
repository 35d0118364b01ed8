"""What a new user meets in the first hour (issue 13): counts in the audit
record and the access log that are true for baton's own responses, policy
diagnostics (did you mean, regex-looking globs, fractional rates, the value
explain received), `check` reading a jwks_file as serve would, and a refused
reload that /metrics and /readyz make visible."""
import json
import signal
import time

import pytest

from conftest import run_baton
from serve_env import ServeEnv, SUB, AUDIENCE, ISSUER
from upstream import Upstream


@pytest.fixture(scope="module")
def up():
    u = Upstream().start()
    yield u
    u.stop()


def access_lines(env):
    out = []
    for line in env.log_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if "httpRequest" in rec:
            out.append(rec)
    return out


def wait_for(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    return pred()


# ------------------------------------------------------------------ 1. counts

def test_counts_in_the_record_and_the_access_log_are_true(tmp_path, up):
    env = ServeEnv(tmp_path, up.port, extra={"access_log": True})
    env.start()
    try:
        tok = env.token()
        # baton's own 403 (no rule: the "getonly" step allows GET only)
        st, hd, body = env.request("POST", "/getonly/x", token=tok, body=b"0123456789",
                                   headers={"X-Request-Id": "count-403"})
        assert st == 403
        assert int(hd["content-length"]) == len(body) > 0
        denied_len = len(body)
        # baton's own 401
        st, hd, body401 = env.request("GET", "/api/x", headers={"X-Request-Id": "count-401"})
        assert st == 401 and int(hd["content-length"]) == len(body401)
        # an allowed request: the upstream's body, relayed
        st, hd, body_ok = env.request("POST", "/api/x?resp_bytes=1234", token=tok,
                                      body=b"x" * 300, headers={"X-Request-Id": "count-200"})
        assert st == 200 and len(body_ok) == 1234
        # a 502: nothing from the upstream, baton's own body
        st, hd, body502 = env.request("GET", "/dead/x", token=tok,
                                      headers={"X-Request-Id": "count-502"})
        assert st == 502
    finally:
        assert env.stop() == 0
    recs = {r["request_id"]: r for r in env.audit_records()}
    assert recs["count-403"]["bytes_out"] == denied_len
    assert recs["count-403"]["upstream"] is None
    assert recs["count-401"]["bytes_out"] == len(body401)
    assert recs["count-200"]["bytes_out"] == 1234
    assert recs["count-200"]["upstream"]["bytes"] == 1234
    assert recs["count-200"]["request"]["bytes_in"] == 300
    assert recs["count-502"]["bytes_out"] == len(body502)
    # the upstream sent nothing: baton's 502 body is not the upstream's
    assert recs["count-502"]["upstream"]["bytes"] == 0
    sizes = {}
    for a in access_lines(env):
        sizes[a["request_id"]] = int(a["httpRequest"]["responseSize"])
    assert sizes["count-403"] == denied_len
    assert sizes["count-401"] == len(body401)
    assert sizes["count-200"] == 1234
    assert sizes["count-502"] == len(body502)

"""Differential test of the one decision path (src/decide.c): random requests
(seeded, bounded) go through `baton serve` and through `baton explain --token
... --json` with the same method, target, Host, headers and token, and must
come out with the same status and reason.

The server's reason is read from its audit record (found by the client's
X-Request-Id); a request its guard refuses has no record, so there the status
is compared and explain must say stage "guard". An allowed request is
forwarded to the echoing upstream (200); a dry_run step's deny is forwarded
too, recorded as would_deny with the deny's reason, which is what explain
reports. Steps with rate or in-flight limits are left out: explain takes no
limit (README "Commands")."""
import json
import random
import socket

import pytest

from conftest import run_baton
from serve_env import SUB, ServeEnv, default_policies, eventually

SEED = 11
COUNT = 200


@pytest.fixture(scope="module")
def env(tmp_path_factory, up):
    pols = default_policies(None)
    for name in ("rate", "slow", "dead", "google", "base"):
        del pols[name]
    e = ServeEnv(tmp_path_factory.mktemp("decide_diff"), up.port, policies=pols)
    e.start()
    yield e
    e.stop()


def send(env, method, target, headers, body):
    """One request on its own connection; the response's status (0: none)."""
    head = "%s %s HTTP/1.1\r\n" % (method, target)
    for name, value in headers:
        head += "%s: %s\r\n" % (name, value)
    raw = head.encode("latin-1") + b"\r\n" + body
    s = socket.create_connection(("127.0.0.1", env.port), timeout=10)
    try:
        s.sendall(raw)
        out = b""
        while b"\r\n" not in out:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    finally:
        s.close()
    parts = out.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def generate(env, rng, i):
    tokens = [
        lambda: env.token(),
        lambda: env.token(),
        lambda: env.token(),
        lambda: env.token(),
        lambda: env.token(sub="someone-else"),
        lambda: env.token(exp_in=-600),
        lambda: env.token(aud="https://elsewhere.test"),
        lambda: env.token(kid="unknown-kid"),
        lambda: env.token(iss="https://other-issuer.test"),
        lambda: "not.a.jwt",
        lambda: "abc",
    ]
    method = rng.choice(["GET", "GET", "POST", "DELETE", "PUT", "HEAD", "get"])
    prefix = rng.choice(["/api/", "/getonly/", "/other/", "/hdr/", "/dry/", "/small/", "/nowhere/",
                         "/api"])
    rest = rng.choice(["x", "a/b", "", "x?q=1", "a/../b", "a//b", "%2e", "a%2fb", "x;y",
                       "x?baton_exp=1", "vhost", "%7e", "\xe9"])
    host = rng.choice(["127.0.0.1:%d" % env.port, "only.example", "only.example:8080",
                       "ONLY.example.", "bad host", "h:99999", "api.test"])
    headers = [("Host", host), ("X-Request-Id", "diff-%d" % i)]
    if rng.random() < 0.5:
        headers.append(("X-Sfn-Execution", rng.choice(["arn:aws:states:eu:1:execution:x", "nope"])))
    if rng.random() < 0.15:
        headers.append(("Connection", rng.choice(["X-Sfn-Execution", "keep-alive"])))
    body = b""
    if method in ("POST", "PUT") and rng.random() < 0.5:
        n = rng.choice([0, 10, 2000])
        headers.append(("Content-Length", str(n)))
        body = b"b" * n
    token = rng.choice(tokens)()
    return method, prefix + rest, host, headers, body, token


def fixed(env, i):
    """The first cases: one per part of the decision the draw must not miss."""
    good = env.token()
    h = "127.0.0.1:%d" % env.port
    cases = [
        ("POST", "/small/x", h, [("Content-Length", "2000")], b"b" * 2000, good),
        ("GET", "/hdr/x", h, [], b"", good),
        ("GET", "/hdr/x", h, [("X-Sfn-Execution", "nope")], b"", good),
        ("GET", "/hdr/x", h, [("X-Sfn-Execution", "arn:aws:states:x")], b"", good),
        ("GET", "/api/x", h, [("Connection", "X-Sfn-Execution")], b"", good),
        ("DELETE", "/getonly/x", h, [], b"", good),
        ("GET", "/api/vhost", "only.example:8080", [], b"", good),
        ("POST", "/api/vhost", "ONLY.example.", [], b"", good),
        ("GET", "/dry/x", h, [], b"", good),
        ("GET", "/api/x", "h:99999", [], b"", good),
        ("get", "/api/x", h, [], b"", good),
        ("GET", "/api/x?baton_exp=1", h, [], b"", good),
        ("GET", "/api/a/../b", h, [], b"", good),
    ]
    if i >= len(cases):
        return None
    method, target, host, extra, body, token = cases[i]
    return method, target, host, [("Host", host), ("X-Request-Id", "diff-%d" % i)] + extra, body, token


def explain(env, method, target, host, headers, token):
    args = ["explain", "-c", env.dir / "baton.json", "--method", method, "--path", target,
            "--host", host, "--token", token, "--json"]
    for name, value in headers:
        if name != "Host":
            args += ["--header", "%s: %s" % (name, value)]
    r = run_baton(*args)
    assert r.returncode in (0, 1), (args, r.stdout, r.stderr)
    return json.loads(r.stdout)


def test_serve_and_explain_decide_alike(env):
    rng = random.Random(SEED)
    cases = []
    for i in range(COUNT):
        method, target, host, headers, body, token = fixed(env, i) or generate(env, rng, i)
        headers = headers + [("Authorization", "Bearer " + token)]
        status = send(env, method, target, headers, body)
        ex = explain(env, method, target, host, [h for h in headers if h[0] != "Authorization"],
                     token)
        cases.append((i, method, target, host, headers, status, ex))

    want = {"diff-%d" % i for i, *_, ex in cases if ex["stage"] != "guard"}
    records = {}

    def all_recorded():
        records.clear()
        for rec in env.audit_records():
            if rec.get("client_request_id") in want:
                records[rec["client_request_id"]] = rec
        return len(records) == len(want)

    assert eventually(all_recorded, timeout=20), "records missing: %s" % sorted(want - set(records))

    reasons = set()
    for i, method, target, host, headers, status, ex in cases:
        what = (i, method, target, host, [h for h in headers if h[0] != "Authorization"], ex)
        reasons.add(ex["reason"])
        if ex["stage"] == "guard":
            assert status == ex["status"], what
            assert "diff-%d" % i not in records, what
            continue
        rec = records["diff-%d" % i]
        if ex["decision"] in ("allow", "would_deny"):
            assert status == 200, what
        else:
            assert status == ex["status"], (status, what)
        assert rec["reason"] == ex["reason"], (rec["reason"], what)
        assert rec["decision"] == ex["decision"], (rec["decision"], what)
    # the draw reaches every part of the decision, not only a few reasons
    for r in ("allowed", "no_route", "bad_host", "bad_header", "no_caller_match", "no_rule_match",
              "header_mismatch", "expired", "audience_mismatch", "unknown_kid", "unknown_issuer",
              "token_bad_encoding", "path_dot_segment", "body_too_large", "bad_request",
              "method_not_implemented"):
        assert r in reasons, (r, sorted(reasons))
    assert len(cases) == COUNT

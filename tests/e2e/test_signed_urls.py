"""Signed URLs end to end (README "Signed URLs"): links minted by `baton
sign-url` and by the sign endpoint are accepted by the real binary exactly as
many times as they allow (per instance), refused with their precise reason
when replayed, expired, moved to another method, path or host, extended with
a parameter, or signed by an unknown key; a caller the policy does not grant
cannot mint; the upstream never sees baton_*; every mint and every use has its
audit record, and no record or log holds a signature."""
import json
import os
import subprocess
import time
import urllib.parse

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from conftest import BATON
from serve_env import ServeEnv, SUB, free_port

MINTER = "arn:aws:iam::123456789012:role/approval-lambda"


def write_key(path):
    key = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(path, 0o600)


def policies():
    caller = [{"issuer": "test", "claims": {"sub": SUB}}]
    minter = {"issuer": "test", "claims": {"sub": MINTER}}
    return {
        "approvals": {
            "route": {"host": "*", "path_prefix": "/approvals/"}, "upstream": "echo",
            "callers": [{"signed_url": {"minted_by": minter}}],
            "allow": [{"methods": ["GET"], "paths": ["/approvals/*/approve", "/approvals/*/reject"]}],
            "sign": [{"callers": [minter], "methods": ["GET"], "paths": ["/approvals/**"],
                      "max_ttl_s": 900}],
        },
        "links": {
            "route": {"host": "*", "path_prefix": "/links/"}, "upstream": "echo",
            "callers": [{"signed_url": True}] + caller,
            "allow": [{"methods": ["GET", "POST"], "paths": ["/links/**"]}],
        },
        "api": {"route": {"host": "*", "path_prefix": "/api/"}, "upstream": "echo",
                "callers": caller, "allow": [{"methods": ["GET"], "paths": ["/api/**"]}]},
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory, up):
    tmp = tmp_path_factory.mktemp("signurl")
    write_key(tmp / "k1.pem")
    write_key(tmp / "k9.pem")
    e = ServeEnv(tmp, up.port, policies=policies(), workers=2,
                 extra={"url_signing": {"keys": [{"id": "k1", "file": "k1.pem"}],
                                        "max_ttl_s": 3600}})
    # the same steps under a key this baton does not know
    other = dict(e.config)
    other["url_signing"] = {"keys": [{"id": "k9", "file": "k9.pem"}]}
    (tmp / "other.json").write_text(json.dumps(other))
    e.start()
    yield e
    assert e.stop() == 0
    text = "".join(p.read_text() for p in e.dir.glob("audit.jsonl*")) + e.log_text()
    for sig in getattr(e, "sigs", []):
        assert sig not in text, "no signature in the audit log or the logs"


def sign_url(env, method, url, ttl="5m", uses=None, config="baton.json"):
    args = [str(BATON), "sign-url", "-c", str(env.dir / config), "--method", method,
            "--url", url, "--ttl", ttl]
    if uses is not None:
        args += ["--uses", str(uses)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=20)
    return p.returncode, p.stdout.strip(), p.stderr


def target_of(url):
    u = urllib.parse.urlsplit(url)
    return u.path + ("?" + u.query if u.query else "")


def remember_sig(env, url):
    q = urllib.parse.urlsplit(url).query
    sig = q.rsplit("baton_sig=", 1)[1]
    env.__dict__.setdefault("sigs", []).append(sig)


def get(env, method, target, headers=None, token=None):
    h = {"X-Request-Id": "su-%d" % time.monotonic_ns()}
    h.update(headers or {})
    st, hd, body = env.request(method, target, headers=h, token=token)
    return st, hd, body, h["X-Request-Id"]


def record(env, request_id):
    for _ in range(100):
        for r in env.audit_records():
            if r.get("client_request_id") == request_id:
                return r
        time.sleep(0.02)
    raise AssertionError("no audit record for " + request_id)


def mint(env, body, sub=MINTER, host=None):
    h = {"Content-Type": "application/json", "X-Request-Id": "mint-%d" % time.monotonic_ns()}
    if host:
        h["Host"] = host
    st, hd, out = env.request("POST", "/.well-known/baton/sign", token=env.token(sub=sub),
                              headers=h, body=json.dumps(body))
    return st, (json.loads(out) if st == 200 else out), h["X-Request-Id"]


def test_check_validates_and_warns(env):
    p = subprocess.run([str(BATON), "check", "-c", str(env.dir / "baton.json")],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    assert "single-use links are counted per instance" in p.stderr
    # a step that takes links without url_signing
    bare = dict(env.config)
    del bare["url_signing"]
    (env.dir / "bare.json").write_text(json.dumps(bare))
    p = subprocess.run([str(BATON), "check", "-c", str(env.dir / "bare.json")],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 1 and "has no url_signing section" in p.stderr, p.stderr


def test_serve_refuses_a_key_others_can_read(env, tmp_path):
    os.chmod(env.dir / "k9.pem", 0o644)
    try:
        p = subprocess.run([str(BATON), "serve", "-c", str(env.dir / "other.json")],
                           capture_output=True, text=True, timeout=20,
                           env=dict(os.environ, PORT=str(free_port())))
    finally:
        os.chmod(env.dir / "k9.pem", 0o600)
    assert p.returncode == 1 and "k9" in p.stderr and "other.json" in p.stderr, p.stderr
    rc, _, err = sign_url(env, "GET", "http://127.0.0.1:%d/links/x" % env.port, config="other.json")
    assert rc == 0, err


def test_cli_link_single_use(env, up):
    up.clear()
    rc, url, err = sign_url(env, "GET", "http://127.0.0.1:%d/links/a?x=1&y=" % env.port, uses=1)
    assert rc == 0, err
    remember_sig(env, url)
    assert "&baton_exp=" in url and url.endswith(url.rsplit("&baton_sig=", 1)[1])
    st, _, body, rid = get(env, "GET", target_of(url))
    assert st == 200, body
    assert [r["target"] for r in up.requests()] == ["/links/a?x=1&y="], "baton_* never forwarded"
    rec = record(env, rid)
    assert rec["decision"] == "allow" and rec["reason"] == "allowed"
    assert rec["caller"]["iss"] == "baton:signed_url" and rec["caller"]["sub"] == "cli"
    assert rec["caller"]["audience"] == "k1" and rec["link"]["op"] == "use"
    assert "baton_sig=[redacted]" in rec["request"]["query"]
    st, hd, body, rid2 = get(env, "GET", target_of(url))
    assert st == 401 and b"url_used" not in body and json.loads(body)["error"] == "unauthorized"
    r2 = record(env, rid2)
    assert r2["reason"] == "url_used" and r2["link"]["id"] == rec["link"]["id"]
    assert len(up.requests()) == 1, "the replay never reached the upstream"


def test_cli_link_n_uses_and_unlimited(env):
    rc, url, _ = sign_url(env, "GET", "http://127.0.0.1:%d/links/n" % env.port, uses=2)
    assert rc == 0
    remember_sig(env, url)
    got = [get(env, "GET", target_of(url))[0] for _ in range(3)]
    assert got == [200, 200, 401]
    rc, url, _ = sign_url(env, "GET", "http://127.0.0.1:%d/links/any" % env.port, uses=0)
    remember_sig(env, url)
    assert [get(env, "GET", target_of(url))[0] for _ in range(3)] == [200, 200, 200]


def test_one_use_under_concurrency(env, up):
    """Two workers, 16 connections at once: the store gives the one use to one."""
    import concurrent.futures
    rc, url, _ = sign_url(env, "GET", "http://127.0.0.1:%d/links/race" % env.port, uses=1)
    assert rc == 0
    remember_sig(env, url)
    up.clear()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda _: get(env, "GET", target_of(url))[0], range(16)))
    assert sorted(got) == [200] + [401] * 15
    assert len(up.requests()) == 1


@pytest.mark.parametrize("change,reason", [
    ("method", "url_scope_mismatch"),
    ("path", "url_scope_mismatch"),
    ("host", "url_scope_mismatch"),
    ("param_after", "url_bad_signature"),
    ("param_before", "url_bad_signature"),
    ("uses", "url_bad_signature"),
])
def test_altered_links_refused(env, up, change, reason):
    # one path per case: the same link minted twice in one second is the same link
    rc, url, _ = sign_url(env, "GET", "http://127.0.0.1:%d/links/scope-%s?x=1" % (env.port, change))
    assert rc == 0
    remember_sig(env, url)
    t, method, headers = target_of(url), "GET", {}
    if change == "method":
        method = "POST"
    elif change == "path":
        t = t.replace("/links/scope-path", "/links/other")
    elif change == "host":
        headers["Host"] = "evil.example"
    elif change == "param_after":
        t += "&z=1"
    elif change == "param_before":
        t = t.replace("?x=1", "?x=1&z=1")
    elif change == "uses":
        t = t.replace("baton_uses=1", "baton_uses=9")
    up.clear()
    st, _, _, rid = get(env, method, t, headers=headers)
    assert st == 401
    assert record(env, rid)["reason"] == reason
    assert up.requests() == []
    st, _, _, _ = get(env, "GET", target_of(url))
    assert st == 200, "a refused attempt spends no use"


def test_unknown_key_and_expired(env):
    rc, url, err = sign_url(env, "GET", "http://127.0.0.1:%d/links/k" % env.port, config="other.json")
    assert rc == 0, err
    remember_sig(env, url)
    st, _, _, rid = get(env, "GET", target_of(url))
    assert st == 401 and record(env, rid)["reason"] == "url_unknown_key"
    rc, url, _ = sign_url(env, "GET", "http://127.0.0.1:%d/links/e" % env.port, ttl="1s")
    remember_sig(env, url)
    time.sleep(1.5)
    st, _, _, rid = get(env, "GET", target_of(url))
    assert st == 401 and record(env, rid)["reason"] == "url_expired"


def test_malformed_and_ambiguous(env):
    rc, url, _ = sign_url(env, "GET", "http://127.0.0.1:%d/links/m" % env.port)
    remember_sig(env, url)
    t = target_of(url)
    st, _, _, rid = get(env, "GET", t.replace("baton_kid", "baton_kid=k1&baton_kid", 1))
    assert st == 401 and record(env, rid)["reason"] == "url_bad_signature"
    st, _, _, rid = get(env, "GET", t + "&baton_extra=1")
    assert st == 401 and record(env, rid)["reason"] == "url_bad_signature"
    st, _, _, rid = get(env, "GET", "/links/m?baton_exp=1")
    assert st == 401 and record(env, rid)["reason"] == "url_bad_signature"
    st, _, _, rid = get(env, "GET", t, token=env.token())
    assert st == 400 and record(env, rid)["reason"] == "bad_request", "token and link: ambiguous"
    st, _, _, _ = get(env, "GET", t)
    assert st == 200


def test_cli_refuses_links_the_step_would_refuse(env):
    rc, _, err = sign_url(env, "GET", "http://127.0.0.1:%d/approvals/1/approve" % env.port)
    assert rc == 1 and "would refuse" in err
    rc, _, err = sign_url(env, "GET", "http://127.0.0.1:%d/nowhere" % env.port)
    assert rc == 1 and "no step routes" in err
    rc, _, err = sign_url(env, "GET", "http://127.0.0.1:%d/links/x" % env.port, ttl="2h")
    assert rc == 1 and "max_ttl_s" in err


def test_endpoint_mints_single_use_link(env, up):
    st, out, mint_id = mint(env, {"method": "GET", "path": "/approvals/7/approve?task=T0k",
                                  "ttl_s": 600, "uses": 1})
    assert st == 200, out
    url = out["url"]
    remember_sig(env, url)
    assert url.startswith("http://127.0.0.1:%d/approvals/7/approve?task=T0k&baton_exp=" % env.port)
    m = record(env, mint_id)
    assert m["decision"] == "allow" and m["request"]["path"] == "/.well-known/baton/sign"
    assert m["step"] == "approvals" and m["caller"]["sub"] == MINTER and m["caller"]["verified"]
    assert m["link"]["op"] == "mint" and m["link"]["method"] == "GET"
    assert m["link"]["path"] == "/approvals/7/approve?task=T0k"
    assert m["link"]["exp"] == out["expires_at"] and m["link"]["id"] == out["link_id"]
    assert m["link"]["minter"].startswith("test.")
    up.clear()
    st, _, body, rid = get(env, "GET", target_of(url))
    assert st == 200, body
    assert [r["target"] for r in up.requests()] == ["/approvals/7/approve?task=T0k"]
    u = record(env, rid)
    assert u["link"]["id"] == out["link_id"] and u["caller"]["sub"] == m["link"]["minter"]
    st, _, _, rid = get(env, "GET", target_of(url))
    assert st == 401 and record(env, rid)["reason"] == "url_used"
    # the reject link: another path, another link
    st, out2, _ = mint(env, {"method": "GET", "path": "/approvals/7/reject?task=T0k", "ttl_s": 600})
    assert st == 200 and out2["link_id"] != out["link_id"]
    remember_sig(env, out2["url"])
    assert get(env, "GET", target_of(out2["url"]))[0] == 200


@pytest.mark.parametrize("sub,body,status,reason", [
    (SUB, {"method": "GET", "path": "/approvals/1/approve", "ttl_s": 60}, 403, "no_caller_match"),
    (MINTER, {"method": "POST", "path": "/approvals/1/approve", "ttl_s": 60}, 403, "no_rule_match"),
    (MINTER, {"method": "GET", "path": "/approvals/1/approve", "ttl_s": 901}, 400, "bad_request"),
    (MINTER, {"method": "GET", "path": "/links/1", "ttl_s": 60}, 403, "no_caller_match"),
    (MINTER, {"method": "GET", "path": "/nowhere", "ttl_s": 60}, 404, "no_route"),
    (MINTER, {"method": "GET", "path": "/approvals/1/approve", "ttl_s": 60, "x": 1}, 400, "bad_request"),
    (MINTER, {"method": "GET", "path": "/approvals/../x", "ttl_s": 60}, 400, "bad_request"),
    (MINTER, {"method": "GET", "path": "/approvals/1/approve?baton_exp=1", "ttl_s": 60}, 400,
     "bad_request"),
])
def test_endpoint_refusals(env, sub, body, status, reason):
    st, _, rid = mint(env, body, sub=sub)
    assert st == status
    r = record(env, rid)
    assert r["reason"] == reason and r["decision"] == "deny"
    assert r["link"]["op"] == "mint" and r["link"]["id"] is None


def test_endpoint_needs_a_token(env):
    h = {"X-Request-Id": "mint-anon-%d" % time.monotonic_ns()}
    st, _, _ = env.request("POST", "/.well-known/baton/sign", headers=h,
                           body=json.dumps({"method": "GET", "path": "/approvals/1/approve",
                                            "ttl_s": 60}))
    assert st == 401 and record(env, h["X-Request-Id"])["reason"] == "token_missing"


@pytest.mark.parametrize("expect", [False, True])
def test_endpoint_body_split_across_packets(env, expect):
    """The sign endpoint waits for a Content-Length body that arrives late, and
    answers Expect: 100-continue before it."""
    body = json.dumps({"method": "GET", "path": "/approvals/9/%s" % ("reject" if expect else "approve"),
                       "ttl_s": 60}).encode()
    head = ("POST /.well-known/baton/sign HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            "Authorization: Bearer %s\r\nContent-Length: %d\r\nConnection: close\r\n%s\r\n"
            % (env.port, env.token(sub=MINTER), len(body),
               "Expect: 100-continue\r\n" if expect else "")).encode()
    import socket
    s = socket.create_connection(("127.0.0.1", env.port), timeout=5)
    try:
        if expect:
            s.sendall(head)
            assert s.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
            s.sendall(body)
        else:
            s.sendall(head + body[:10])
            time.sleep(0.3)
            s.sendall(body[10:])
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    finally:
        s.close()
    assert out.startswith(b"HTTP/1.1 200 OK\r\n"), out[:200]
    link = json.loads(out.split(b"\r\n\r\n", 1)[1])
    remember_sig(env, link["url"])


def test_aws_approval_example():
    """docker/examples/aws/approvals: the config and policies check, the state
    machine waits for the task token, and the Lambda mints through the sign
    endpoint exactly the links the policy grants it."""
    from conftest import SRCDIR
    ex = SRCDIR / "docker" / "examples" / "aws" / "approvals"
    p = subprocess.run([str(BATON), "check", "-c", str(ex / "conf" / "baton.json")],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    asl = json.loads((ex / "approval.asl.json").read_text())
    task = asl["States"][asl["StartAt"]]
    assert task["Resource"] == "arn:aws:states:::lambda:invoke.waitForTaskToken"
    assert task["Parameters"]["Payload"]["task_token.$"] == "$$.Task.Token"
    assert any("Rejected" in c["ErrorEquals"] for c in task["Catch"])
    pol = json.loads((ex / "policies" / "approvals.json").read_text())
    minter = pol["callers"][0]["signed_url"]["minted_by"]
    grant, = pol["sign"]
    assert grant["callers"][0]["claims"]["sub"] == minter["claims"]["sub"]
    assert grant["max_ttl_s"] == task["TimeoutSeconds"]
    src = (ex / "approval_mailer.py").read_text()
    assert '"/.well-known/baton/sign"' in src and '"uses": 1' in src
    assert "LINK_TTL_S = %d" % task["TimeoutSeconds"] in src
    assert "/approvals/%s/%s" in src and set(grant["paths"]) == {"/approvals/*/approve",
                                                                  "/approvals/*/reject"}


def test_rotation_and_reload_keep_uses(tmp_path, up):
    """Key rotation by SIGHUP: k2 first (signs), k1 kept (verifies); a link
    used before the reload stays used after it (the store outlives the
    config); then k1 removed: its links are url_unknown_key."""
    import signal
    write_key(tmp_path / "k1.pem")
    write_key(tmp_path / "k2.pem")
    e = ServeEnv(tmp_path, up.port, policies=policies(),
                 extra={"url_signing": {"keys": [{"id": "k1", "file": "k1.pem"}]}})
    e.start()
    try:
        def reload_to(keys, probe):
            e.config["url_signing"] = {"keys": keys}
            e.write_config()
            e.signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while not probe():
                assert time.monotonic() < deadline, "the reload took effect"
                time.sleep(0.05)

        rc, used, _ = sign_url(e, "GET", "http://127.0.0.1:%d/links/r1" % e.port, uses=1)
        rc2, old, _ = sign_url(e, "GET", "http://127.0.0.1:%d/links/r2" % e.port, uses=0)
        assert rc == 0 and rc2 == 0 and "baton_kid=k1" in old
        assert get(e, "GET", target_of(used))[0] == 200
        reload_to([{"id": "k2", "file": "k2.pem"}, {"id": "k1", "file": "k1.pem"}],
                  lambda: "baton_kid=k2" in sign_url(e, "GET", "http://127.0.0.1:%d/links/p" % e.port,
                                                    uses=0)[1]
                  and get(e, "GET", target_of(sign_url(e, "GET", "http://127.0.0.1:%d/links/p2" % e.port,
                                                       uses=0)[1]))[0] == 200)
        assert get(e, "GET", target_of(old))[0] == 200, "a k1 link verifies after the rotation"
        st, _, _, rid = get(e, "GET", target_of(used))
        assert st == 401 and record(e, rid)["reason"] == "url_used", "uses survive the reload"
        reload_to([{"id": "k2", "file": "k2.pem"}],
                  lambda: get(e, "GET", target_of(old))[0] == 401)
        st, _, _, rid = get(e, "GET", target_of(old))
        assert st == 401 and record(e, rid)["reason"] == "url_unknown_key"
    finally:
        assert e.stop() == 0

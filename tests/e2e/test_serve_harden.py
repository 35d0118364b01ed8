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


# ------------------------------------------------------------ 6. trailing dot

def test_trailing_dot_host_gets_the_exact_host_policy(env, up):
    # "vhost" (host only.example) allows only GET /api/vhost; "*" allows all of /api/
    for host in ["only.example.", "ONLY.example.:8080"]:
        out = raw_request(env, "GET", "/api/other", [("Host", host),
                                                     ("Authorization", "Bearer " + env.tok)])
        assert status_of(out) == 403, (host, out[:200])
    up.clear()
    out = raw_request(env, "GET", "/api/vhost", [("Host", "only.example.:8080"),
                                                 ("Authorization", "Bearer " + env.tok)])
    assert status_of(out) == 200
    rec = json.loads(body_of(out))
    assert headers_of(rec)["x-forwarded-host"] == ["only.example:8080"], "forwarded without the dot"


@pytest.mark.parametrize("host", [".", "only.example..", "a..:80"])
def test_empty_label_host_is_refused(env, host):
    out = raw_request(env, "GET", "/api/x", [("Host", host), ("Authorization", "Bearer " + env.tok)])
    assert status_of(out) == 400


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


# ------------------------------------------------------------ 7. strip list

STRIPPED = ["X-Endpoint-API-UserInfo", "X-Apigateway-Api-Userinfo", "X-Appengine-User-Email",
            "X-AppEngine-Cron", "X-CloudScheduler", "X-CloudScheduler-JobName",
            "X-Remote-User", "X-Forwarded-User", "X-Forwarded-Email", "X-Auth-Request-User",
            "X-Auth-Request-Email", "X-Auth-Request-Access-Token", "X-Middleware-Subrequest"]


def test_identity_headers_are_stripped_with_their_underscore_spellings(env):
    hdrs = [("Host", "gw.example"), ("Authorization", "Bearer " + env.tok)]
    for name in STRIPPED:
        hdrs.append((name, "forged"))
        hdrs.append((name.replace("-", "_"), "forged"))
    hdrs.append(("X-Kept", "yes"))
    out = raw_request(env, "GET", "/api/strip", hdrs)
    assert status_of(out) == 200
    got = headers_of(json.loads(body_of(out)))
    assert got["x-kept"] == ["yes"]
    leaked = [n for n in got if n.replace("_", "-") in {s.lower() for s in STRIPPED}]
    assert not leaked, leaked
    assert "forged" not in body_of(out).decode()


# -------------------------------------------- 10. host behind a trusted proxy

def test_trusted_proxy_cannot_choose_the_forwarded_host(tmp_path, up):
    e = ServeEnv(tmp_path, up.port, trusted_proxies=["127.0.0.1/32"])
    e.start()
    try:
        out = raw_request(e, "GET", "/api/fwd",
                          [("Host", "gw.example"), ("Authorization", "Bearer " + e.token()),
                           ("X-Forwarded-Host", "only.example"),
                           ("X-Forwarded-Proto", "https"),
                           ("X-Forwarded-For", "203.0.113.7"),
                           ("X-Forwarded-User", "admin"),
                           ("Forwarded", 'for=203.0.113.7;host=only.example;proto=https, '
                                         'host="x.example";for="[2001:db8::1]"')])
        assert status_of(out) == 200
        got = headers_of(json.loads(body_of(out)))
        assert got["x-forwarded-host"] == ["gw.example"], "the host baton routed on"
        assert got["x-forwarded-proto"] == ["https"], "the trusted proxy's proto is kept"
        assert got["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
        assert got["forwarded"] == ['for=203.0.113.7;proto=https, for="[2001:db8::1]"']
        assert "x-forwarded-user" not in got
    finally:
        assert e.stop() == 0


# ------------------------------------------------------------------ 8. leaks

def test_access_log_redacts_a_jwt_user_agent(env):
    ua_tok = env.token(sub="ua-secret")
    st, _, _ = env.request("GET", "/api/ua", token=env.tok, headers={"User-Agent": ua_tok})
    assert st == 200
    deadline = time.monotonic() + 3
    while "/api/ua" not in env.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [l for l in env.log_text().splitlines() if "/api/ua" in l]
    assert lines, "an access log line"
    assert ua_tok not in env.log_text()
    assert '"userAgent":"[redacted]"' in lines[-1]


CREDS = {
    "a": "ya29.a0AfH6SMBx3kYq-example_token_value_123",
    "b": "ghp_" + "A1b2C3d4E5" * 4,
    "c": "gho_" + "Z9y8X7w6V5" * 4,
    "d": "github_pat_11ABCDEFG0" + "x_Y1" * 10,
    "e": "AKIAIOSFODNN7EXAMPLE",
    "f": "ASIAY34FZKBOKMUTVV7A",
}


def test_query_redaction_catches_credential_shaped_values(env):
    jwt_like = env.token(sub="in-query")
    q = "&".join("%s=%s" % kv for kv in CREDS.items()) + "&g=" + jwt_like + "&plain=ghp_short&n=1"
    st, _, _ = env.request("GET", "/api/q?" + q, token=env.tok)
    assert st == 200
    rec = wait_record(env, lambda r: r["request"]["path"] == "/api/q")
    assert rec["request"]["query"] == ("a=[redacted]&b=[redacted]&c=[redacted]&d=[redacted]"
                                       "&e=[redacted]&f=[redacted]&g=[redacted]"
                                       "&plain=ghp_short&n=1")
    text = env.audit_path.read_text() + env.log_text()
    for v in list(CREDS.values()) + [jwt_like]:
        assert v not in text


# ------------------------------------------------- request id, NumericDates

def test_clients_do_not_choose_the_audit_request_id(env, up):
    st, hd, body = env.request("GET", "/api/rid-own", token=env.tok,
                               headers={"X-Request-Id": "chosen-by-client"})
    assert st == 200
    assert hd["x-request-id"] == "chosen-by-client", "the client's id still correlates"
    rec = wait_record(env, lambda r: r["request"]["path"] == "/api/rid-own")
    assert re.fullmatch(r"[0-9a-f]{32}", rec["request_id"]), rec["request_id"]
    assert rec["client_request_id"] == "chosen-by-client"
    st, hd, body = env.request("GET", "/nowhere", headers={"X-Request-Id": "chosen-2"})
    assert st == 404
    rec = wait_record(env, lambda r: r.get("client_request_id") == "chosen-2")
    assert json.loads(body)["request_id"] == rec["request_id"] != "chosen-2"
    st, hd, _ = env.request("GET", "/api/rid-none", token=env.tok)
    rec = wait_record(env, lambda r: r["request"]["path"] == "/api/rid-none")
    assert rec["client_request_id"] is None and rec["request_id"] == hd["x-request-id"]


@pytest.mark.parametrize("claim,value", [("exp", 1e300), ("exp", 1e12), ("nbf", -1e300),
                                         ("iat", -5), ("exp", 253402300800)])
def test_numeric_dates_out_of_range_are_refused(env, claim, value):
    now = int(time.time())
    body = {"iss": ISSUER, "sub": SUB, "aud": AUDIENCE, "iat": now, "exp": now + 300,
            "jti": "nd-%s-%r" % (claim, value)}
    body[claim] = value
    tok = jwt.encode(body, env.key_pem, algorithm="RS256", headers={"kid": env.kid})
    st, _, _ = env.request("GET", "/api/nd-%s" % claim, token=tok)
    assert st == 401
    rec = wait_record(env, lambda r: r["caller"] and r["caller"]["jti"] == body["jti"])
    assert rec["reason"] == "bad_claim_type"


def test_numeric_date_at_the_top_of_the_range_is_accepted(env):
    tok = env.token(exp_in=0, exp=253402300799)
    st, _, _ = env.request("GET", "/api/nd-max", token=tok)
    assert st == 200


# ------------------------------------------------- 2. emptied key sets revoke

def metric(env, name, labels):
    _, _, body = env.admin("/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + "{" + labels + "}"):
            return float(line.split()[-1])
    return None


@pytest.mark.parametrize("doc", [
    {"keys": []},
    {"keys": [{"kty": "oct", "kid": "test-key-1", "k": "c2VjcmV0c2VjcmV0c2VjcmV0"}]},
    "enc",
])
def test_an_emptied_key_set_revokes_a_failed_fetch_does_not(tmp_path, up, doc):
    e = ServeEnv(tmp_path, up.port)
    e.config["issuers"][0]["refresh_min_s"] = 1
    e.config["issuers"][0]["refresh_max_s"] = 1
    e.write_config()
    e.start()
    try:
        tok = e.token()
        assert e.request("GET", "/api/k", token=tok)[0] == 200
        good = (e.dir / "jwks.json").read_text()
        # a failed fetch (malformed JSON) keeps the last good set
        (e.dir / "jwks.json").write_text('{"keys": [ broken')
        deadline = time.monotonic() + 6
        while (metric(e, "baton_keyset_refreshes_total", 'issuer="test",result="failed"') or 0) < 1:
            assert time.monotonic() < deadline, "the broken file was read"
            time.sleep(0.1)
        assert e.request("GET", "/api/k", token=tok)[0] == 200, "last good set kept"
        # a well-formed set without a usable key is the issuer's word: it revokes
        if doc == "enc":
            k = json.loads(good)["keys"][0]
            k["use"] = "enc"
            doc = {"keys": [k]}
        (e.dir / "jwks.json").write_text(json.dumps(doc))
        deadline = time.monotonic() + 6
        while e.request("GET", "/api/k", token=tok)[0] != 401:
            assert time.monotonic() < deadline, "the old key was revoked"
            time.sleep(0.1)
        assert metric(e, "baton_keyset_empty_total", 'issuer="test"') >= 1
        assert metric(e, "baton_keyset_keys", 'issuer="test"') == 0
        assert "has no usable key" in e.log_text() and "every token of this issuer is refused" in e.log_text()
        # and the issuer publishing a key again restores service
        (e.dir / "jwks.json").write_text(good)
        deadline = time.monotonic() + 6
        while e.request("GET", "/api/k", token=tok)[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        assert e.stop() == 0


# ------------------------------------------- 9. fsync "always", disk full

def _mount_tmpfs(path, size):
    import subprocess
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs for the full-disk test (%s): needs root"
                    % r.stderr.strip())


def test_fsync_always_with_a_full_disk_answers_503(tmp_path, up):
    import os
    import subprocess
    fs = tmp_path / "fs"
    _mount_tmpfs(fs, "256k")
    try:
        e = ServeEnv(tmp_path, up.port, audit_fsync="always")
        e.audit_path = fs / "audit.jsonl"
        e.config["audit"]["path"] = str(e.audit_path)
        e.write_config()
        e.start()
        tok = e.token()
        try:
            assert e.request("GET", "/api/before", token=tok)[0] == 200
            try:
                with open(fs / "fill", "wb") as f:
                    while True:
                        f.write(b"x" * 4096)
                        f.flush()
            except OSError:
                pass  # ENOSPC: the disk is full
            statuses = []
            for i in range(6):
                req = ("GET /api/full%d HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
                       "Connection: close\r\n\r\n" % (i, tok)).encode()
                out = e.raw(req)
                assert out, "request %d: an empty reply" % i
                statuses.append(status_of(out))
                if status_of(out) == 503:
                    assert re.search(rb"\r\nRetry-After: [1-9][0-9]*\r\n", out), out
                    assert json.loads(body_of(out))["error"] == "unavailable"
            assert statuses[-3:] == [503, 503, 503], statuses
            assert set(statuses) <= {200, 503}, statuses
            os.unlink(fs / "fill")  # space again: the writer recovers
            deadline = time.monotonic() + 10
            while e.request("GET", "/api/after", token=tok)[0] != 200:
                assert time.monotonic() < deadline, "recovered once the disk has room"
                time.sleep(0.2)
        finally:
            assert e.stop() == 0
        kinds = [json.loads(l)["kind"] for l in e.audit_path.read_text().splitlines() if l]
        assert "lost" in kinds, "the loss is declared in the log"
    finally:
        subprocess.run(["umount", "-l", str(fs)])


# ---------------------------------------------------- 5. request body deadline

def _upload(env, path, tok, send, total=100, timeout=8):
    """Sends a POST head then calls send(sock) to deliver (part of) the body;
    returns (response bytes, seconds from the head to the response)."""
    import socket
    s = socket.create_connection(("127.0.0.1", env.port), timeout=timeout)
    try:
        s.sendall(("POST %s HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
                   "Content-Length: %d\r\n\r\n" % (path, tok, total)).encode())
        t0 = time.monotonic()
        send(s)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out, time.monotonic() - t0
    finally:
        s.close()


def test_a_trickled_body_meets_the_overall_deadline(tmp_path, up):
    e = ServeEnv(tmp_path, up.port, limits={"body_timeout_ms": 1500})
    e.start()
    try:
        def trickle(s):
            import socket
            for _ in range(40):  # one byte every 0.2 s: never silent for timeout_ms (5 s)
                try:
                    s.sendall(b"x")
                except OSError:
                    return
                s.settimeout(0.2)
                try:
                    if s.recv(1, socket.MSG_PEEK):
                        return  # answered
                except socket.timeout:
                    pass
            s.settimeout(8)
        out, took = _upload(e, "/api/trickle", e.token(), trickle)
        assert status_of(out) == 408, out[:200]
        assert 1.3 < took < 4, took
        rec = wait_record(e, lambda r: r["request"]["path"] == "/api/trickle")
        assert rec["reason"] == "body_timeout" and rec["status"] == 408
        assert rec["decision"] == "deny"
        assert e.request("POST", "/api/fast", token=e.token(), body=b"y" * 1000)[0] == 200
    finally:
        assert e.stop() == 0


def test_a_body_silent_for_the_step_timeout_gets_408_and_a_status(env):
    # the "slow" step's timeout_ms is 500
    out, took = _upload(env, "/slow/stall", env.tok, lambda s: s.sendall(b"z" * 10))
    assert status_of(out) == 408, out[:200]
    assert took < 3, took
    rec = wait_record(env, lambda r: r["request"]["path"] == "/slow/stall")
    assert rec["reason"] == "body_timeout" and rec["status"] == 408, rec

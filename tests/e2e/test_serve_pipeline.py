"""`baton serve` end to end: every status of the request pipeline, the header
hygiene of docs/spec.md step 6 as the echoing upstream saw it, and exactly one
audit record per request that reached routing (checked at module end against
the X-Request-Id of every response)."""
import json
import re
import socket
import time

import pytest

from serve_env import ServeEnv, status_of, free_port


@pytest.fixture(scope="module")
def env(tmp_path_factory, up):
    e = ServeEnv(tmp_path_factory.mktemp("pipeline"), up.port)
    e.expected_ids = set()
    e.start()
    yield e
    assert e.stop() == 0
    ids = [(r.get("client_request_id") or r["request_id"]) for r in e.audit_records()]
    assert len(ids) == len(set(ids)), "one record per request, never two"
    assert set(ids) == e.expected_ids, "audit records == requests that reached routing"
    secrets = [e.key_pem.decode()] + getattr(e, "tokens_used", [])
    text = "".join(p.read_text() for p in e.dir.glob("audit.jsonl*")) + e.log_text()
    for s in secrets:
        assert s not in text, "no token or key in the audit log or the logs"


_n = [0]


def rid():
    _n[0] += 1
    return "pipe-%d-%d" % (int(time.time()), _n[0])


def call(env, method, path, token=None, headers=None, body=None, audited=True, timeout=10):
    h = dict(headers or {})
    h.setdefault("X-Request-Id", rid())
    if token:
        env.tokens_used = getattr(env, "tokens_used", []) + [token]
    st, hd, b = env.request(method, path, token=token, headers=h, body=body, timeout=timeout)
    assert hd.get("x-request-id") == h["X-Request-Id"], "a valid client X-Request-Id is kept"
    if audited:
        env.expected_ids.add(h["X-Request-Id"])
    return st, hd, b


def upstream_saw(up, request_id):
    for r in reversed(up.requests()):
        for n, v in r["headers"]:
            if n.lower() == "x-request-id" and v == request_id:
                return r
    return None


def headers_of(rec):
    out = {}
    for n, v in rec["headers"]:
        out.setdefault(n.lower(), []).append(v)
    return out


def test_allowed_request_is_forwarded_with_query_unchanged(env, up):
    st, hd, body = call(env, "GET", "/api/items/7?b=2&a=1&x=%2F", token=env.token())
    assert st == 200
    rec = json.loads(body)
    assert rec["target"] == "/api/items/7?b=2&a=1&x=%2F"
    assert hd.get("x-upstream") == "echo"
    assert "keep-alive" not in hd and "connection" not in hd, "upstream hop-by-hop stripped"


def test_base_path_prefixes_the_canonical_path_and_host_is_the_upstream(env, up):
    st, _, body = call(env, "GET", "/based/x", token=env.token())
    assert st == 200
    rec = json.loads(body)
    assert rec["target"] == "/base/based/x"
    assert headers_of(rec)["host"] == ["127.0.0.1:%d" % up.port]


def test_header_hygiene_at_the_upstream(env, up):
    spoof = [
        ("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "7.7.7.7"),
        ("X_Forwarded_For", "8.8.8.8"), ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"), ("Forwarded", "for=1.1.1.1"),
        ("X-Serverless-Authorization", "Bearer forged"),
        ("X_Serverless_Authorization", "Bearer forged2"),
        ("X-Goog-Authenticated-User-Email", "ceo@example.com"),
        ("X-Goog-Iap-Jwt-Assertion", "x"), ("X-Baton-Step", "admin"),
        ("X_Baton_Step", "admin"), ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"), ("X-Method-Override", "DELETE"),
        ("X_HTTP_Method_Override", "DELETE"), ("Proxy-Authorization", "Basic eA=="),
        ("X-Original-URL", "/admin"), ("X-Rewrite-URL", "/admin"), ("X-Real-IP", "6.6.6.6"),
        ("True-Client-IP", "6.6.6.6"), ("X_Client_IP", "6.6.6.6"), ("CF-Connecting-IP", "6.6.6.6"),
        ("Keep-Alive", "timeout=5"), ("TE", "trailers"), ("Upgrade", "h2c"),
        ("Connection", "X-Secret-Hop, Upgrade"), ("X-Secret-Hop", "1"),
        ("Trailer", "X-Foo"), ("Proxy-Connection", "keep-alive"),
        ("X-Custom", "kept"), ("Accept", "application/json"),
    ]
    request_id = rid()
    tok = env.token()
    lines = "".join("%s: %s\r\n" % kv for kv in spoof)
    raw = ("GET /api/hygiene HTTP/1.1\r\nHost: gw.example\r\nAuthorization: Bearer %s\r\n"
           "X-Request-Id: %s\r\n%s\r\n" % (tok, request_id, lines)).encode()
    resp = env.raw(raw, read_all=False)
    env.expected_ids.add(request_id)
    assert status_of(resp) == 200
    rec = upstream_saw(up, request_id)
    assert rec is not None
    h = headers_of(rec)
    assert "authorization" not in h, "the client's Authorization never reaches the upstream"
    for name in ["x_forwarded_for", "forwarded", "x-serverless-authorization",
                 "x_serverless_authorization", "x-goog-authenticated-user-email",
                 "x-goog-iap-jwt-assertion", "x-baton-step", "x_baton_step",
                 "x-http-method-override", "x-http-method", "x-method-override",
                 "x_http_method_override", "proxy-authorization", "keep-alive", "te",
                 "upgrade", "connection", "x-secret-hop", "trailer", "proxy-connection",
                 "x-original-url", "x-rewrite-url", "x-real-ip", "true-client-ip", "x_client_ip",
                 "cf-connecting-ip"]:
        assert name not in h, name + " stripped"
    assert h["x-forwarded-for"] == ["127.0.0.1"], "every spoofed copy replaced by the peer"
    assert h["x-forwarded-proto"] == ["http"]
    assert h["x-forwarded-host"] == ["gw.example"]
    assert h["x-custom"] == ["kept"] and h["accept"] == ["application/json"]
    assert h["x-request-id"] == [request_id]
    assert rec["method"] == "GET"


def test_request_id_generated_when_missing_or_invalid(env, up):
    tok = env.token()
    for bad in [None, "has space", "x" * 200, "semi;colon"]:
        marker = "m%d" % time.monotonic_ns()
        h = {"X-Marker": marker}
        if bad is not None:
            h["X-Request-Id"] = bad
        # http.client refuses header values with spaces or ';'? it sends them as-is.
        st, hd, body = env.request("GET", "/api/rid", token=tok, headers=h)
        assert st == 200
        got = hd["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", got), "a generated id replaces %r" % bad
        env.expected_ids.add(got)
        rec = json.loads(body)
        assert headers_of(rec)["x-request-id"] == [got]


def test_traceparent_baton_is_a_hop(env, up):
    """W3C Trace Context: baton forwards its own span id as the parent, keeping
    the trace id and sampled flag; an invalid traceparent is dropped with its
    tracestate and a new trace begins."""
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    state = "congo=t61rcWkgMzE"
    st, _, body = call(env, "GET", "/api/t", token=env.token(),
                       headers={"traceparent": good, "tracestate": state})
    h = headers_of(json.loads(body))
    (tp,) = h["traceparent"]
    assert re.fullmatch(r"00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01", tp), tp
    assert tp.split("-")[2] not in ("00f067aa0ba902b7", "0" * 16), "baton's own span id"
    assert h["tracestate"] == [state], "a valid traceparent's tracestate goes on"
    st, _, body = call(env, "GET", "/api/t", token=env.token(),
                       headers={"traceparent": good.replace("-01", "-00")})
    assert headers_of(json.loads(body))["traceparent"][0].endswith("-00"), "not sampled stays so"
    seen = set()
    for bad in ["00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "garbage", None]:
        hdrs = {"tracestate": state}
        if bad:
            hdrs["traceparent"] = bad
        st, _, body = call(env, "GET", "/api/t", token=env.token(), headers=hdrs)
        h = headers_of(json.loads(body))
        (tp,) = h["traceparent"]
        assert st == 200 and re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", tp), tp
        trace_id = tp.split("-")[1]
        assert trace_id != "0" * 32 and trace_id != "4bf92f3577b34da6a3ce929d0e0e4736"
        assert trace_id not in seen, "a new trace id each time"
        seen.add(trace_id)
        assert "tracestate" not in h, "tracestate dropped with an invalid or absent traceparent"


def test_token_minted_into_the_upstream_token_header(env, up):
    st, _, body = call(env, "GET", "/google/x", token=env.token(),
                       headers={"X-Serverless-Authorization": "Bearer forged"})
    assert st == 200
    h = headers_of(json.loads(body))
    assert len(h["x-serverless-authorization"]) == 1
    minted = h["x-serverless-authorization"][0]
    assert minted.startswith("Bearer ey") and "forged" not in minted
    assert "authorization" not in h


def test_401_missing_token_says_bearer(env):
    st, hd, body = call(env, "GET", "/api/x")
    assert st == 401 and hd["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("kind", ["garbage", "expired", "wrong_aud", "wrong_key", "basic"])
def test_401_bad_token_is_generic(env, kind):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    if kind == "garbage":
        tok = "not.a.token"
    elif kind == "expired":
        tok = env.token(exp_in=-3600)
    elif kind == "wrong_aud":
        tok = env.token(aud="https://other.test")
    elif kind == "wrong_key":
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        tok = env.token(key=other.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    if kind == "basic":
        st, hd, body = call(env, "GET", "/api/x", headers={"Authorization": "Basic dTpw"})
        assert st == 401 and hd["www-authenticate"] == "Bearer"
        return
    st, hd, body = call(env, "GET", "/api/x", token=tok)
    assert st == 401
    assert hd["www-authenticate"] == 'Bearer error="invalid_token"'
    doc = json.loads(body)
    assert doc["error"] == "unauthorized", "generic body, the reason is only in the audit record"
    assert set(doc) == {"error", "request_id"}


def test_403_no_caller_match_and_no_rule(env):
    assert call(env, "GET", "/other/x", token=env.token())[0] == 403
    assert call(env, "POST", "/getonly/x", token=env.token(), body=b"")[0] == 403
    assert call(env, "GET", "/getonly/x", token=env.token())[0] == 200
    assert call(env, "GET", "/getonly/x/y", token=env.token())[0] == 403


def test_403_require_headers(env):
    assert call(env, "GET", "/hdr/x", token=env.token())[0] == 403
    ok = call(env, "GET", "/hdr/x", token=env.token(),
              headers={"X-Sfn-Execution": "arn:aws:states:us-east-1:1:execution:a"})
    assert ok[0] == 200


def test_404_no_route_and_vhost(env):
    assert call(env, "GET", "/nowhere", token=env.token())[0] == 404
    # the exact host policy only allows /api/vhost, and wins over "*" for that host
    st, _, _ = call(env, "GET", "/api/other", token=env.token(), headers={"Host": "only.example"})
    assert st == 403
    assert call(env, "GET", "/api/vhost", token=env.token(), headers={"Host": "only.example"})[0] == 200


@pytest.mark.parametrize("path,reason", [
    ("/api/a/../b", "path_dot_segment"), ("/api/a%2Fb", "path_encoded_slash"),
    ("/api/%2e%2e/x", "path_encoded_dot"), ("/api//x", "path_empty_segment"),
    ("/api/a;b=c", "path_semicolon"), ("/api/a\\b", "path_backslash"),
])
def test_400_noncanonical_paths_are_refused_and_audited(env, path, reason):
    request_id = rid()
    raw = ("GET %s HTTP/1.1\r\nHost: gw\r\nX-Request-Id: %s\r\nConnection: close\r\n\r\n"
           % (path, request_id)).encode()
    resp = env.raw(raw)
    assert status_of(resp) == 400
    env.expected_ids.add(request_id)
    env.stop_check = True
    recs = wait_records(env, request_id)
    assert recs[0]["reason"] == reason and recs[0]["decision"] == "deny"


def wait_records(env, request_id, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recs = [r for r in env.audit_records() if (r.get("client_request_id") or r["request_id"]) == request_id]
        if recs:
            return recs
        time.sleep(0.02)
    raise AssertionError("no audit record for " + request_id)


def test_413_declared_body_over_the_step_limit(env, up):
    n = len(up.requests())
    st, hd, _ = call(env, "POST", "/small/x", token=env.token(), body=b"x" * 1001)
    assert st == 413
    assert call(env, "POST", "/small/x", token=env.token(), body=b"x" * 1000)[0] == 200
    assert len(up.requests()) == n + 1, "the refused body never reached the upstream"


def test_413_chunked_body_over_the_step_limit_mid_stream(env, up):
    tok = env.token()
    request_id = rid()
    s = socket.create_connection(("127.0.0.1", env.port), timeout=10)
    s.sendall(("POST /small/chunked HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
               "X-Request-Id: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
               % (tok, request_id)).encode())
    s.sendall(b"200\r\n" + b"a" * 512 + b"\r\n")
    time.sleep(0.2)
    try:
        for _ in range(4):
            s.sendall(b"200\r\n" + b"b" * 512 + b"\r\n")
            time.sleep(0.05)
    except OSError:
        pass
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    s.close()
    env.expected_ids.add(request_id)
    assert status_of(data) == 413
    rec = wait_records(env, request_id)[0]
    assert rec["reason"] == "body_too_large"
    for r in up.requests():
        if ["X-Request-Id", request_id] in r["headers"]:
            assert r.get("body_len", 0) <= 1000


def test_429_rate_limit_with_retry_after(env):
    statuses = []
    for _ in range(6):
        st, hd, _ = call(env, "GET", "/rate/x", token=env.token())
        statuses.append(st)
        if st == 429:
            assert int(hd["retry-after"]) >= 1
    assert statuses[:3] == [200, 200, 200], "the burst passes"
    assert 429 in statuses


def test_dry_run_records_would_deny_and_forwards(env, up):
    request_id = rid()
    st, _, body = call(env, "GET", "/dry/x", token=env.token(), headers={"X-Request-Id": request_id})
    assert st == 200 and json.loads(body)["target"] == "/dry/x"
    rec = wait_records(env, request_id)[0]
    assert rec["decision"] == "would_deny" and rec["reason"] == "no_caller_match"
    assert rec["status"] == 200


def test_502_upstream_down(env):
    st, _, body = call(env, "GET", "/dead/x", token=env.token())
    assert st == 502 and json.loads(body)["error"] == "bad_gateway"


def test_502_upstream_closes_without_answer(env):
    st, _, _ = call(env, "GET", "/api/x?close=1", token=env.token())
    assert st == 502


def test_504_upstream_timeout(env):
    t = time.monotonic()
    st, _, _ = call(env, "GET", "/slow/x?delay_ms=3000", token=env.token())
    assert st == 504 and time.monotonic() - t < 2.5


def test_upstream_status_passes_through(env):
    for code in [201, 204, 404, 500, 503]:
        st, _, _ = call(env, "GET", "/api/s?status=%d" % code, token=env.token())
        assert st == code


def test_head_request_and_chunked_and_close_delimited_responses(env):
    st, hd, body = call(env, "HEAD", "/api/h", token=env.token())
    assert st == 200 and body == b""
    st, hd, body = call(env, "GET", "/api/c?chunked=1&resp_bytes=100000", token=env.token())
    assert st == 200 and len(body) == 100000 and hd.get("transfer-encoding") == "chunked"
    st, hd, body = call(env, "GET", "/api/n?nolength=1&resp_bytes=70000", token=env.token())
    assert st == 200 and len(body) == 70000


def test_guard_statuses_over_a_socket(env, up):
    """414, 431, 501, 505 and 408 come from the guard: no audit record."""
    long_uri = "/api/" + "a" * 3000
    assert status_of(env.raw(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % long_uri).encode())) == 414
    big = "X-Big: " + "b" * 9000 + "\r\n"
    assert status_of(env.raw(("GET /api/x HTTP/1.1\r\nHost: x\r\n%s\r\n" % big).encode())) == 431
    assert status_of(env.raw(b"TRACE /api/x HTTP/1.1\r\nHost: x\r\n\r\n")) == 501
    assert status_of(env.raw(b"GET /api/x HTTP/2.0\r\nHost: x\r\n\r\n")) == 505


def test_503_identity_unavailable(tmp_path, up):
    """google identity that cannot mint: 503, nothing forwarded, /readyz false."""
    dead = free_port()
    e = ServeEnv(tmp_path, up.port,
                 extra={"google": {"credentials": "metadata",
                                   "metadata_host": "127.0.0.1:%d" % dead},
                        "ready_timeout_ms": 0})  # serve at once: what callers get unready
    e.start(wait=False)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if e.admin("/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.05)
        st, _, body = e.admin("/readyz")
        assert st == 503 and json.loads(body)["identity"]["ready"] is False
        n = len(up.requests())
        st, hd, _ = e.request("GET", "/google/x", token=e.token())
        assert st == 503 and hd.get("retry-after") == "5", "our outage: the caller retries"
        assert len(up.requests()) == n, "nothing forwarded without the identity"
        assert e.request("GET", "/api/x", token=e.token())[0] == 200
    finally:
        assert e.stop() == 0
    recs = e.audit_records()
    assert [r["reason"] for r in recs] == ["identity_unavailable", "allowed"]


def test_admin_endpoints(env):
    st, _, body = env.admin("/healthz")
    assert st == 200
    st, _, body = env.admin("/readyz")
    doc = json.loads(body)
    assert st == 200 and doc["ready"] and doc["keys"]["ready"] and doc["audit"]["healthy"]
    st, hd, body = env.admin("/metrics")
    text = body.decode()
    assert st == 200
    assert re.search(r'baton_requests_total\{step="api",decision="allow",reason="allowed",status="200"\} \d+',
                     text)
    assert 'baton_request_duration_seconds_bucket{le="+Inf"}' in text
    assert "baton_upstream_duration_seconds_count" in text
    assert 'baton_token_verifications_total{cache="hit"}' in text
    assert "baton_audit_queue_depth" in text and "baton_open_connections" in text
    assert 'baton_keyset_refreshes_total{issuer="test",result="ok"}' in text
    st, _, body = env.admin("/.well-known/jwks.json")
    assert st == 200 and json.loads(body)["keys"][0]["kty"] == "RSA"
    assert env.admin("/nope")[0] == 404


def test_audit_record_names_caller_request_and_upstream(env, up):
    import hashlib
    tok = env.token()
    request_id = rid()
    st, _, _ = call(env, "POST", "/api/rec?k=v", token=tok, body=b"12345",
                    headers={"X-Request-Id": request_id, "User-Agent": "rec-test/1",
                             "X-Sfn-Execution": "arn:aws:states:us-east-1:1:execution:x"})
    assert st == 200
    rec = wait_records(env, request_id)[0]
    assert rec["decision"] == "allow" and rec["reason"] == "allowed" and rec["status"] == 200
    assert rec["step"] == "api" and rec["policy"]["file"].endswith("api.json")
    assert re.fullmatch(r"[0-9a-f]{64}", rec["policy"]["sha256"])
    c = rec["caller"]
    assert c["verified"] is True and c["iss"] == "https://issuer.test"
    assert c["sub"] == "arn:aws:iam::123456789012:role/caller"
    assert c["token_sha256"] == hashlib.sha256(tok.encode()).hexdigest()
    r = rec["request"]
    assert r["method"] == "POST" and r["path"] == "/api/rec" and r["query"] == "k=v"
    assert r["user_agent"] == "rec-test/1" and r["bytes_in"] == 5
    assert r["client"].startswith("127.0.0.1:")
    assert any(h["name"].lower() == "x-sfn-execution" if isinstance(h, dict) else
               h[0].lower() == "x-sfn-execution" for h in r["headers"])
    u = rec["upstream"]
    assert u["name"] == "echo" and u["status"] == 200 and u["identity"] == "none"
    assert rec["bytes_out"] == u["bytes"] > 0


def test_bad_token_record_has_the_precise_reason(env):
    request_id = rid()
    st, _, _ = call(env, "GET", "/api/x", token=env.token(exp_in=-3600),
                    headers={"X-Request-Id": request_id})
    assert st == 401
    rec = wait_records(env, request_id)[0]
    assert rec["reason"] == "expired" and rec["decision"] == "deny"
    assert rec["caller"]["verified"] is False


def test_trusted_proxy_forwarding_headers_are_kept(tmp_path, up):
    e = ServeEnv(tmp_path, up.port, trusted_proxies=["127.0.0.1/32"])
    e.start()
    try:
        st, _, body = e.request("GET", "/api/tp", token=e.token(), headers={
            "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https",
            "X_Forwarded_For": "6.6.6.6", "X-Goog-Foo": "x"})
        assert st == 200
        h = headers_of(json.loads(body))
        assert h["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"], "the chain kept, peer appended"
        assert h["x-forwarded-proto"] == ["https"]
        assert "x_forwarded_for" not in h and "x-goog-foo" not in h
    finally:
        assert e.stop() == 0

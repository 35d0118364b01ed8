"""The guard over a real socket: the request smuggling matrix (CL.TE, TE.CL,
TE.TE obfuscations, CL.CL, chunk extensions, trailers) and every leniency
docs/design.md lists for evhttp 2.1.12. Each case gets its status, the connection
is closed, and the echoing upstream receives nothing (no request, and for
the cases refused before routing, not even a connection)."""
import select
import socket
import time

import pytest

from serve_env import ServeEnv, read_response, status_of


@pytest.fixture(scope="module")
def env(tmp_path_factory, up):
    e = ServeEnv(tmp_path_factory.mktemp("guard"), up.port)
    e.start()
    e.tok = e.token()
    yield e
    assert e.stop() == 0


H = "Host: gw.example\r\n"

# (name, raw request (TOKEN replaced by a valid bearer token), expected status, routed)
# "routed" cases fail only in the body, after routing: they also get an audit record.
CASES = [
    ("cl_cl_different", "POST /api/x HTTP/1.1\r\n" + H + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, False),
    ("cl_cl_equal", "POST /api/x HTTP/1.1\r\n" + H + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400, False),
    ("cl_plus", "POST /api/x HTTP/1.1\r\n" + H + "Content-Length: +5\r\n\r\nhello", 400, False),
    ("cl_negative", "POST /api/x HTTP/1.1\r\n" + H + "Content-Length: -1\r\n\r\n", 400, False),
    ("cl_list", "POST /api/x HTTP/1.1\r\n" + H + "Content-Length: 5, 5\r\n\r\nhello", 400, False),
    ("cl_hex", "POST /api/x HTTP/1.1\r\n" + H + "Content-Length: 0x5\r\n\r\nhello", 400, False),
    ("cl_te", "POST /api/x HTTP/1.1\r\n" + H + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, False),
    ("te_cl", "POST /api/x HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", 400, False),
    ("te_xchunked", "POST /api/x HTTP/1.1\r\n" + H + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400, False),
    ("te_space_before_colon", "POST /api/x HTTP/1.1\r\n" + H + "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400, False),
    ("te_list", "POST /api/x HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400, False),
    ("te_identity", "POST /api/x HTTP/1.1\r\n" + H + "Transfer-Encoding: identity\r\n\r\n", 400, False),
    ("te_twice", "POST /api/x HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, False),
    ("te_obs_fold", "POST /api/x HTTP/1.1\r\n" + H + "Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400, False),
    ("te_http10", "POST /api/x HTTP/1.0\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, False),
    ("chunk_size_0x", "POST /api/x HTTP/1.1\r\n" + H + "Authorization: Bearer TOKEN\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", 400, True),
    ("chunk_size_junk", "POST /api/x HTTP/1.1\r\n" + H + "Authorization: Bearer TOKEN\r\nTransfer-Encoding: chunked\r\n\r\n5 junk\r\nhello\r\n0\r\n\r\n", 400, True),
    ("chunk_extension", "POST /api/x HTTP/1.1\r\n" + H + "Authorization: Bearer TOKEN\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n", 400, True),
    ("chunk_trailer", "POST /api/x HTTP/1.1\r\n" + H + "Authorization: Bearer TOKEN\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Smuggle: 1\r\n\r\n", 400, True),
    ("chunk_overflow", "POST /api/x HTTP/1.1\r\n" + H + "Authorization: Bearer TOKEN\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nhello\r\n", 400, True),
    ("chunk_bare_lf", "POST /api/x HTTP/1.1\r\n" + H + "Authorization: Bearer TOKEN\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400, True),
    ("empty_header_name", "GET /api/x HTTP/1.1\r\n" + H + ": empty\r\n\r\n", 400, False),
    ("space_in_header_name", "GET /api/x HTTP/1.1\r\n" + H + "X Bad: 1\r\n\r\n", 400, False),
    ("bare_lf", "GET /api/x HTTP/1.1\n" + H.replace("\r\n", "\n") + "\n", 400, False),
    ("lone_cr", "GET /api/x HTTP/1.1\r\n" + H + "X-A: a\rb\r\n\r\n", 400, False),
    ("obs_fold", "GET /api/x HTTP/1.1\r\n" + H + "X-A: a\r\n  folded\r\n\r\n", 400, False),
    ("nul_in_value", "GET /api/x HTTP/1.1\r\n" + H + "X-A: a\x00b\r\n\r\n", 400, False),
    ("missing_host", "GET /api/x HTTP/1.1\r\nX-A: a\r\n\r\n", 400, False),
    ("duplicate_host", "GET /api/x HTTP/1.1\r\n" + H + "Host: other\r\n\r\n", 400, False),
    ("absolute_form_host_mismatch", "GET http://evil.example/api/x HTTP/1.1\r\n" + H + "\r\n", 400, False),
    ("two_authorization", "GET /api/x HTTP/1.1\r\n" + H + "Authorization: Bearer TOKEN\r\nAuthorization: Bearer TOKEN\r\n\r\n", 400, False),
    ("control_in_target", "GET /api/\x01x HTTP/1.1\r\n" + H + "\r\n", 400, False),
    ("hash_in_target", "GET /api/x#frag HTTP/1.1\r\n" + H + "\r\n", 400, False),
    ("space_in_target", "GET /api/x y HTTP/1.1\r\n" + H + "\r\n", 400, False),
    ("connection_names_content_length", "GET /api/x HTTP/1.1\r\n" + H + "Connection: Content-Length\r\n\r\n", 400, False),
    ("expect_other", "GET /api/x HTTP/1.1\r\n" + H + "Expect: 200-ok\r\n\r\n", 400, False),
    ("headers_too_large", "GET /api/x HTTP/1.1\r\n" + H + "X-Big: " + "a" * 9000 + "\r\n\r\n", 431, False),
    ("too_many_headers", "GET /api/x HTTP/1.1\r\n" + H + "".join("X-H%d: v\r\n" % i for i in range(200)) + "\r\n", 431, False),
    ("uri_too_long", "GET /api/" + "a" * 3000 + " HTTP/1.1\r\n" + H + "\r\n", 414, False),
    ("connect_method", "CONNECT gw.example:443 HTTP/1.1\r\n" + H + "\r\n", 501, False),
    ("http2_version", "GET /api/x HTTP/2.0\r\n" + H + "\r\n", 505, False),
    ("global_body_cap", "POST /api/x HTTP/1.1\r\n" + H + "Content-Length: 1099511627777\r\n\r\n", 413, False),
]


def read_until_close(s, timeout=5):
    s.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    closed = False
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    return data, closed


@pytest.mark.parametrize("name,raw,status,routed", CASES, ids=[c[0] for c in CASES])
def test_guard_case(env, up, name, raw, status, routed):
    before_conns, before_reqs = up.connections, len(up.requests())
    before_audit = len(env.audit_records())
    s = socket.create_connection(("127.0.0.1", env.port), timeout=5)
    s.sendall(raw.replace("TOKEN", env.tok).encode("latin-1"))
    data, closed = read_until_close(s)
    s.close()
    assert status_of(data) == status, data[:200]
    assert closed, "the connection is closed after a guard refusal"
    assert data.count(b"HTTP/1.1 ") == 1, "one response, nothing smuggled behind it"
    time.sleep(0.05)
    assert len(up.requests()) == before_reqs, "the upstream received no request"
    assert up.connections == before_conns, "the upstream was not even connected to"
    deadline = time.monotonic() + 3
    want = before_audit + (1 if routed else 0)
    while len(env.audit_records()) < want and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.05)
    assert len(env.audit_records()) == want, "audit record only once routing was reached"


def test_smuggled_second_request_is_never_parsed(env, up):
    """A body that looks like a request stays a body: with Content-Length the
    upstream gets exactly the declared bytes, and the rest is the next request
    on the connection, parsed only after the first is answered."""
    body = "GET /api/smuggled HTTP/1.1\r\nHost: gw\r\n\r\n"
    raw = ("POST /api/first HTTP/1.1\r\n" + H + "Authorization: Bearer " + env.tok +
           "\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    s = socket.create_connection(("127.0.0.1", env.port), timeout=5)
    s.sendall(raw.encode())
    data, _ = read_until_close(s, timeout=2)
    s.close()
    assert status_of(data) == 200
    seen = [r["target"] for r in up.requests()]
    assert "/api/smuggled" not in seen
    assert seen[-1] == "/api/first" and up.requests()[-1]["body_len"] == len(body)


def _trickle_head(s, t0, lines):
    """Sends a header line every 100 ms, at most `lines` of them, reading what
    comes back. Returns (seconds from t0 to the close or the end of a response
    head, or None if neither came; the bytes read)."""
    data = b""
    for i in range(lines):
        try:
            s.sendall(b"X-Slow-%d: y\r\n" % i)
        except OSError:
            return time.monotonic() - t0, data
        r, _, _ = select.select([s], [], [], 0.1)
        if r:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                chunk = b""
            data += chunk
            if not chunk or b"\r\n\r\n" in data:
                return time.monotonic() - t0, data
    return None, data


def test_slowloris_closed_at_the_header_deadline(tmp_path, up):
    e = ServeEnv(tmp_path, up.port, limits={"header_timeout_ms": 1000, "idle_timeout_ms": 5000})
    e.start()
    try:
        s = socket.create_connection(("127.0.0.1", e.port), timeout=5)
        t0 = time.monotonic()
        s.sendall(b"GET /api/x HTTP/1.1\r\n")
        closed_at, data = _trickle_head(s, t0, 40)  # a header line every 100 ms would take 4 s
        closed = closed_at is not None
        if closed_at is None:
            closed_at = time.monotonic() - t0
        s.close()
        assert closed and closed_at < 2.5, "closed near the 1 s deadline, not after 4 s"
        assert status_of(data) in (408, None)
        # an idle keep-alive connection that sent nothing is not a slowloris
        s = socket.create_connection(("127.0.0.1", e.port), timeout=5)
        time.sleep(1.5)
        s.sendall(("GET /api/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n\r\n"
                   % e.token()).encode())
        data = s.recv(65536)
        s.close()
        assert status_of(data) == 200
    finally:
        assert e.stop() == 0
    assert len(e.audit_records()) == 1


def _one_response(s, timeout=5):
    """Reads one Content-Length response off a keep-alive socket: (status, head)."""
    head, _, complete = read_response(s, timeout)
    assert complete, "closed before the whole response, or more followed it unasked"
    return status_of(head), head


def _closed_after(s, t0, timeout):
    """Seconds from t0 until the server closed s (EOF or reset), reading what
    comes; None when it stayed open `timeout` seconds."""
    s.settimeout(0.05)
    end = time.monotonic() + timeout
    data = b""
    while time.monotonic() < end:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return time.monotonic() - t0, data
        if not chunk:
            return time.monotonic() - t0, data
        data += chunk
    return None, data


def test_keep_alive_deadlines_run_from_the_last_activity(tmp_path, up):
    """The connection's timer is re-armed lazily (it stays armed when it fires
    no later than the new deadline, and is armed again for the rest when it
    fires early): requests spaced within the idle time keep a connection open
    for longer than both timeouts; an idle connection closes at idle_timeout_ms
    from its last response, never before; a head started later has its whole
    header_timeout_ms from its first byte, whichever timeout is the shorter."""
    for header_ms, idle_ms in ((800, 1500), (1500, 700)):
        d = tmp_path / ("h%d-i%d" % (header_ms, idle_ms))
        d.mkdir()
        e = ServeEnv(d, up.port, limits={"header_timeout_ms": header_ms,
                                         "idle_timeout_ms": idle_ms})
        e.start()
        try:
            req = ("GET /api/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n\r\n"
                   % e.token()).encode()
            gap = min(header_ms, idle_ms) / 1000 * 0.6
            s = socket.create_connection(("127.0.0.1", e.port), timeout=5)
            # spaced requests: open for longer than both timeouts together
            t_end = time.monotonic() + (header_ms + idle_ms) / 1000 + 0.3
            n = 0
            while time.monotonic() < t_end:
                s.sendall(req)
                assert _one_response(s)[0] == 200, "request %d on the connection" % n
                n += 1
                time.sleep(gap)
            # idle after the last response: closed at idle_timeout_ms from it
            s.sendall(req)
            assert _one_response(s)[0] == 200
            t_last = time.monotonic()
            closed_at, _ = _closed_after(s, t_last, idle_ms / 1000 + 2)
            s.close()
            assert closed_at is not None, "the idle connection was never closed"
            assert closed_at >= idle_ms / 1000 - 0.05, "closed %.3f s after the last response" % closed_at
            assert closed_at < idle_ms / 1000 + 1.0, "closed %.3f s after the last response" % closed_at
            # a head that starts a while after a response: the header deadline
            # from its first byte (a trickle that never completes)
            s = socket.create_connection(("127.0.0.1", e.port), timeout=5)
            s.sendall(req)
            assert _one_response(s)[0] == 200
            time.sleep(min(header_ms, idle_ms) / 1000 * 0.4)
            t_first = time.monotonic()
            s.sendall(b"GET /api/x HTTP/1.1\r\n")
            closed_at, data = _trickle_head(s, t_first, int((header_ms / 1000 + 2) / 0.1))
            s.close()
            assert closed_at is not None, "the slow head was never refused"
            assert closed_at >= header_ms / 1000 - 0.05, "refused %.3f s after its first byte" % closed_at
            assert closed_at < header_ms / 1000 + 1.0, "refused %.3f s after its first byte" % closed_at
            assert status_of(data) in (408, None)
        finally:
            assert e.stop() == 0

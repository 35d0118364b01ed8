"""Timeouts re-armed by every request of a keep-alive connection (proxy.c
keeps an armed timer while the deadline only moves later, and a timer that
fires early re-arms for the rest): each still comes at its deadline measured
from the last activity, never from the first arm, never before. The first
request of each test arms the timer; the one that goes silent starts about
400 ms later, so a timer acting on its first expiry would cut it about
100 ms in. The "slow" step's timeout_ms is 500."""
import socket
import time

import pytest

from serve_env import ServeEnv, eventually, status_of


@pytest.fixture(scope="module")
def env(tmp_path_factory, up):
    e = ServeEnv(tmp_path_factory.mktemp("lazy"), up.port, limits={"idle_timeout_ms": 800})
    e.start()
    e.tok = e.token()
    yield e
    assert e.stop() == 0


def _read_response(s):
    """One whole response (Content-Length framed) from a keep-alive socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, "closed before a response head"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = s.recv(65536)
        assert chunk, "closed mid-body"
        rest += chunk
    assert len(rest) == length, "one response at a time"
    return status_of(head + b"\r\n\r\n")


def _read_until_close(s):
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return out


def _warm(s, tok, method, path, body=b""):
    """Requests on `s` every 100 ms for 400 ms: the timers are armed by the
    first and only moved later by the others."""
    t_first = time.monotonic()
    for i in range(4):
        s.sendall(("%s %s%d HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
                   "Content-Length: %d\r\n\r\n" % (method, path, i, tok, len(body))).encode() + body)
        assert _read_response(s) == 200
        time.sleep(max(0.0, t_first + 0.1 * (i + 1) - time.monotonic()))


def test_an_upstream_stalling_after_quick_requests_is_cut_at_its_own_deadline(env):
    s = socket.create_connection(("127.0.0.1", env.port), timeout=10)
    try:
        _warm(s, env.tok, "GET", "/slow/warm")  # one pooled upstream connection, reused
        s.sendall(("GET /slow/x?stall=1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
                   "X-Request-Id: lazy-stall\r\n\r\n" % env.tok).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk
            data += chunk
        t_head = time.monotonic()
        data += _read_until_close(s)
        took = time.monotonic() - t_head
    finally:
        s.close()
    assert status_of(data) == 200, "the head went out before the upstream stalled"
    assert 0.45 <= took < 3, "cut 500 ms after the upstream's last byte (%.3f s)" % took
    recs = eventually(lambda: [r for r in env.audit_records()
                               if (r.get("client_request_id") or r["request_id"]) == "lazy-stall"])
    assert len(recs) == 1
    rec = recs[0]
    assert rec["reason"] == "upstream_timeout" and rec["decision"] == "error"


def test_a_body_going_silent_after_quick_requests_gets_408_at_its_own_deadline(env):
    s = socket.create_connection(("127.0.0.1", env.port), timeout=10)
    try:
        _warm(s, env.tok, "POST", "/slow/body", b"x" * 40)
        s.sendall(("POST /slow/silent HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
                   "Content-Length: 100\r\n\r\n" % env.tok).encode() + b"z" * 10)
        t_last = time.monotonic()
        out = _read_until_close(s)
        took = time.monotonic() - t_last
    finally:
        s.close()
    assert status_of(out) == 408, out[:200]
    assert 0.45 <= took < 3, "408 500 ms after the last body byte (%.3f s)" % took


def test_a_keep_alive_client_going_silent_is_closed_at_the_idle_timeout(env):
    s = socket.create_connection(("127.0.0.1", env.port), timeout=10)
    try:
        _warm(s, env.tok, "GET", "/api/idle")
        t_last = time.monotonic()
        s.sendall(("GET /api/last HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n\r\n"
                   % env.tok).encode())
        assert _read_response(s) == 200
        out = _read_until_close(s)
        took = time.monotonic() - t_last
    finally:
        s.close()
    assert out == b""
    assert 0.75 <= took < 3.5, "closed 800 ms after the last response (%.3f s)" % took


def test_a_trickled_body_after_quick_requests_meets_its_own_overall_deadline(tmp_path, up):
    # limits.body_timeout_ms counts from each request's start, whatever the
    # body's pace; the timer armed by the first request is kept and re-armed
    e = ServeEnv(tmp_path, up.port, limits={"body_timeout_ms": 700})
    e.start()
    try:
        tok = e.token()
        s = socket.create_connection(("127.0.0.1", e.port), timeout=10)
        try:
            _warm(s, tok, "POST", "/api/quick", b"q" * 40)
            s.sendall(("POST /api/trickle HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
                       "Content-Length: 100\r\n\r\n" % tok).encode())
            t_start = time.monotonic()
            s.settimeout(0.1)
            out = b""
            for _ in range(40):  # a byte every 100 ms, until answered (4 s at most)
                try:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    out += chunk
                    if b"\r\n\r\n" in out:
                        break
                except socket.timeout:
                    s.sendall(b"t")
            took = time.monotonic() - t_start
            s.settimeout(5)
            out += _read_until_close(s)
        finally:
            s.close()
        assert status_of(out) == 408, out[:200]
        assert 0.65 <= took < 3, "408 700 ms after the request's start (%.3f s)" % took
    finally:
        assert e.stop() == 0

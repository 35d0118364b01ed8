"""A pooled upstream connection the upstream has already closed: baton sends
an idempotent request once more on a fresh connection, and never a POST or
PATCH (the upstream may have run it before closing; a workflow step must not
run twice under one audit record)."""
import socket
import threading
import time

import pytest

from serve_env import ServeEnv


class ClosingUpstream:
    """Answers the first request of each connection (keep-alive, 2-byte body),
    then closes the connection at the next request's head without answering:
    a keep-alive connection the upstream dropped while it sat in baton's pool."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.seen = []  # (connection number, request line)
        self.conns = 0
        self.lock = threading.Lock()
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns += 1
                n = self.conns
            threading.Thread(target=self._serve, args=(c, n), daemon=True).start()

    def _serve(self, c, n):
        buf, answered = b"", 0
        with c:
            c.settimeout(10)
            while True:
                try:
                    data = c.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    line = head.split(b"\r\n", 1)[0].decode()
                    with self.lock:
                        self.seen.append((n, line))
                    if answered:
                        return  # the dropped keep-alive connection
                    answered += 1
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def stop(self):
        self.stopped = True
        self.sock.close()


@pytest.fixture
def env(tmp_path):
    up = ClosingUpstream()
    e = ServeEnv(tmp_path, upstream_port=up.port)
    e.start()
    yield e, up
    e.stop()
    up.stop()


@pytest.mark.parametrize("method,retried", [("GET", True), ("HEAD", True), ("DELETE", True),
                                            ("POST", False), ("PATCH", False)])
def test_stale_pooled_connection_is_retried_only_for_idempotent_methods(env, method, retried):
    e, up = env
    tok = e.token()
    st, _, _ = e.request("GET", "/api/first", token=tok, headers={"X-Request-Id": "warm"})
    assert st == 200  # the connection now sits in baton's pool
    st, _, _ = e.request(method, "/api/second", token=tok, headers={"X-Request-Id": "second"})
    lines = [l for _, l in up.seen if "/api/second" in l]
    if retried:
        assert st == 200, "an idempotent request is sent again on a fresh connection"
        assert len(lines) == 2 and len({n for n, l in up.seen if "/api/second" in l}) == 2
    else:
        assert st == 502, "a non-idempotent request is not sent twice"
        assert len(lines) == 1
    deadline = time.monotonic() + 5  # fsync batch: the record lands within milliseconds
    while True:
        recs = [r for r in e.audit_records() if (r.get("client_request_id") or r["request_id"]) == "second"]
        if recs or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(recs) == 1, "one audit record whatever happened"
    assert recs[0]["status"] == st

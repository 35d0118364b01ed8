"""Streaming both ways with bounded memory: a 1 GiB request body, a large
response, chunked bodies re-framed exactly, and a client that stops reading.
baton's RSS is read from /proc/PID/status while the bytes flow."""
import hashlib
import json
import os
import socket
import threading
import time

import pytest

from serve_env import ServeEnv, read_response, status_of

GIB = 1 << 30


@pytest.fixture(scope="module")
def env(tmp_path_factory, up):
    # ASan's quarantine keeps freed buffers for a while; keep it small so RSS
    # shows what baton holds, not what the sanitizer delays freeing.
    asan = os.environ.get("ASAN_OPTIONS", "")
    asan = (asan + ":" if asan else "") + "quarantine_size_mb=4:thread_local_quarantine_size_kb=64"
    e = ServeEnv(tmp_path_factory.mktemp("stream"), up.port, env={"ASAN_OPTIONS": asan},
                 limits={"idle_timeout_ms": 20000})
    e.start()
    yield e
    assert e.stop() == 0
    recs = e.audit_records()
    assert len(recs) == e.expected, "one audit record per streamed request"


class RssSampler(threading.Thread):
    def __init__(self, env):
        super().__init__(daemon=True)
        self.env, self.peak, self.stop_flag = env, 0, False

    def run(self):
        while not self.stop_flag:
            try:
                self.peak = max(self.peak, self.env.rss_kb())
            except OSError:
                return
            time.sleep(0.05)


def recv_response(s, timeout=120):
    head, body, _ = read_response(s, timeout)
    return head, body


def test_one_gib_request_body_streams_with_bounded_rss(env, up):
    env.expected = getattr(env, "expected", 0) + 1
    base = env.rss_kb()
    sampler = RssSampler(env)
    sampler.start()
    s = socket.create_connection(("127.0.0.1", env.port), timeout=60)
    s.sendall(("PUT /api/big HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
               "Content-Length: %d\r\n\r\n" % (env.token(), GIB)).encode())
    block = b"\x5a" * (1 << 20)
    t0 = time.monotonic()
    for _ in range(GIB // len(block)):
        s.sendall(block)
        assert time.monotonic() - t0 < 120, "bounded in time"
    head, body = recv_response(s)
    s.close()
    sampler.stop_flag = True
    sampler.join()
    assert status_of(head + b"\r\n\r\n") == 200
    rec = json.loads(body)
    assert rec["body_len"] == GIB and rec["body_framing"] == "length"
    grew_mb = (sampler.peak - base) / 1024
    print("1 GiB upload: baton RSS %d kB -> peak %d kB (+%.1f MB), %.1f s"
          % (base, sampler.peak, grew_mb, time.monotonic() - t0))
    assert grew_mb < 64, "memory per request stays bounded whatever the body size"


def test_large_response_streams_with_bounded_rss(env):
    env.expected = getattr(env, "expected", 0) + 1
    n = 256 << 20
    base = env.rss_kb()
    sampler = RssSampler(env)
    sampler.start()
    s = socket.create_connection(("127.0.0.1", env.port), timeout=60)
    s.sendall(("GET /api/big?resp_bytes=%d HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
               "\r\n" % (n, env.token())).encode())
    head, body = recv_response(s)
    s.close()
    sampler.stop_flag = True
    sampler.join()
    assert len(body) == n
    assert body[:256] == bytes(range(256))
    assert (sampler.peak - base) / 1024 < 64


def test_client_that_stops_reading_does_not_grow_memory(env):
    env.expected = getattr(env, "expected", 0) + 1
    base = env.rss_kb()
    s = socket.create_connection(("127.0.0.1", env.port), timeout=60)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(("GET /api/big?resp_bytes=%d HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
               "\r\n" % (512 << 20, env.token())).encode())
    time.sleep(1.5)  # the upstream would send 512 MiB if nothing pushed back
    held = env.rss_kb()
    s.close()
    assert (held - base) / 1024 < 32, "flow control: baton stops reading the upstream"


def chunked(parts):
    out = b""
    for p in parts:
        out += b"%x\r\n" % len(p) + p + b"\r\n"
    return out + b"0\r\n\r\n"


def test_chunked_request_body_is_decoded_and_reframed(env, up):
    env.expected = getattr(env, "expected", 0) + 1
    parts = [os.urandom(n) for n in (1, 10, 4096, 70000, 3, 1 << 20)]
    whole = b"".join(parts)
    s = socket.create_connection(("127.0.0.1", env.port), timeout=30)
    s.sendall(("POST /api/chunked HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
               "Transfer-Encoding: chunked\r\n\r\n" % env.token()).encode())
    payload = chunked(parts)
    for i in range(0, len(payload), 9999):  # arbitrary split points
        s.sendall(payload[i:i + 9999])
    head, body = recv_response(s)
    s.close()
    rec = json.loads(body)
    assert rec["body_framing"] == "chunked"
    assert rec["body_len"] == len(whole)
    assert rec["body_sha256"] == hashlib.sha256(whole).hexdigest()


def test_expect_100_continue(env, up):
    env.expected = getattr(env, "expected", 0) + 1
    body = b"q" * 5000
    s = socket.create_connection(("127.0.0.1", env.port), timeout=10)
    s.sendall(("POST /api/e HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
               "Content-Length: %d\r\nExpect: 100-continue\r\n\r\n"
               % (env.token(), len(body))).encode())
    first = s.recv(100)
    assert first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    s.sendall(body)
    head, resp = recv_response(s)
    s.close()
    rec = json.loads(first[len(b"HTTP/1.1 100 Continue\r\n\r\n"):] and resp or resp)
    assert rec["body_len"] == len(body)
    assert not any(n.lower() == "expect" for n, _ in rec["headers"]), "Expect is baton's to answer"


def test_expect_100_refused_before_the_body_is_sent(env, up):
    env.expected = getattr(env, "expected", 0) + 1
    n = len(up.requests())
    s = socket.create_connection(("127.0.0.1", env.port), timeout=10)
    s.sendall(b"POST /api/e HTTP/1.1\r\nHost: gw\r\nContent-Length: 100000000\r\n"
              b"Expect: 100-continue\r\n\r\n")
    data = s.recv(4096)
    s.close()
    assert status_of(data) == 401 and b"100 Continue" not in data
    assert len(up.requests()) == n

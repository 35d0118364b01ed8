"""Operations of `baton serve`: keep-alive and pipelining, the upstream pool,
max_connections, reload under load (SIGHUP), audit reopen (SIGUSR1), drain
under load (SIGTERM), and the audit count across all of them."""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import BATON
from serve_env import ServeEnv, status_of, default_policies
from upstream import Upstream


@pytest.fixture
def up():
    u = Upstream().start()
    yield u
    u.stop()


def parse_responses(data):
    """Splits a byte stream of HTTP/1.1 responses with Content-Length bodies."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(b":")
            hdrs[k.strip().lower().decode()] = v.strip().decode()
        n = int(hdrs.get("content-length", "0"))
        out.append((int(lines[0][9:12]), hdrs, rest[:n]))
        data = rest[n:]
    return out


def read_for(s, seconds):
    s.settimeout(0.2)
    data = b""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        data += chunk
    return data


def test_keepalive_pipelining_in_order_and_upstream_pool(tmp_path, up):
    e = ServeEnv(tmp_path, up.port)
    e.start()
    try:
        tok = e.token()
        c = e.conn()
        for i in range(20):
            c.request("GET", "/api/ka/%d" % i, headers={"Authorization": "Bearer " + tok})
            r = c.getresponse()
            assert r.status == 200
            r.read()
        c.close()
        assert up.connections == 1, "20 requests, one pooled upstream connection"

        reqs = [("GET /api/p1", True), ("GET /nowhere", True), ("POST /api/p3", True),
                ("GET /other/p4", True), ("GET /api/p5", True)]
        raw = b""
        for i, (line, _) in enumerate(reqs):
            body = b"hello" if line.startswith("POST") else b""
            raw += ("%s HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\nX-Request-Id: pipe-%d\r\n"
                    "Content-Length: %d\r\n\r\n" % (line, tok, i, len(body))).encode() + body
        s = socket.create_connection(("127.0.0.1", e.port), timeout=5)
        s.sendall(raw)
        data = read_for(s, 2)
        s.close()
        got = parse_responses(data)
        assert [g[0] for g in got] == [200, 404, 200, 403, 200]
        assert [g[1]["x-request-id"] for g in got] == ["pipe-%d" % i for i in range(5)]
        assert json.loads(got[2][2])["body_len"] == 5
        assert [r["target"] for r in up.requests()[-3:]] == ["/api/p1", "/api/p3", "/api/p5"]

        # HTTP/1.0 without keep-alive: answered and closed
        s = socket.create_connection(("127.0.0.1", e.port), timeout=5)
        s.sendall(("GET /api/old HTTP/1.0\r\nAuthorization: Bearer %s\r\n\r\n" % tok).encode())
        data = read_for(s, 1)
        s.close()
        assert status_of(data) == 200 and b"Connection: close" in data
    finally:
        assert e.stop() == 0
    assert len(e.audit_records()) == 20 + 5 + 1


def test_max_connections(tmp_path, up):
    e = ServeEnv(tmp_path, up.port, limits={"max_connections": 4})
    e.start()
    try:
        held = [socket.create_connection(("127.0.0.1", e.port), timeout=5) for _ in range(4)]
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", e.port), timeout=5)
        data = read_for(extra, 1)
        extra.close()
        assert status_of(data) in (503, None) and (not data or b"503" in data[:12])
        assert not data or b"\r\nRetry-After: 1\r\n" in data, "the canned 503 says when to retry"
        st, _, body = e.admin("/metrics")
        assert re.search(rb"baton_connections_refused_total 1\b", body)
        assert re.search(rb"baton_open_connections 4\b", body)
        held.pop().close()
        time.sleep(0.3)
        st, _, _ = e.request("GET", "/api/x", token=e.token())
        assert st == 200, "a slot freed is usable again"
        for s in held:
            s.close()
    finally:
        assert e.stop() == 0


class Load(threading.Thread):
    """One keep-alive client sending requests until stopped; records results."""

    def __init__(self, env, path, tag, tok):
        super().__init__(daemon=True)
        self.env, self.path, self.tag, self.tok = env, path, tag, tok
        self.stop_flag = False
        self.results = []  # (request_id, status or exception name, t_start, t_end)

    def run(self):
        c = None
        i = 0
        while not self.stop_flag:
            i += 1
            rid = "%s-%d" % (self.tag, i)
            t0 = time.monotonic()
            try:
                if c is None:
                    c = http.client.HTTPConnection("127.0.0.1", self.env.port, timeout=10)
                c.request("GET", self.path, headers={"Authorization": "Bearer " + self.tok,
                                                    "X-Request-Id": rid})
                r = c.getresponse()
                r.read()
                self.results.append((rid, r.status, t0, time.monotonic()))
                if r.getheader("connection", "").lower() == "close":
                    c.close()
                    c = None
            except (OSError, http.client.HTTPException) as ex:
                self.results.append((rid, type(ex).__name__, t0, time.monotonic()))
                if c:
                    c.close()
                c = None
                time.sleep(0.01)
        if c:
            c.close()


def test_reload_under_load_without_a_failed_request(tmp_path, up):
    e = ServeEnv(tmp_path, up.port, workers=2)
    e.start()
    tok = e.token()
    loads = [Load(e, "/api/load", "L%d" % i, tok) for i in range(3)]
    try:
        for l in loads:
            l.start()
        time.sleep(0.5)
        assert e.request("GET", "/new/x", token=tok)[0] == 404
        pols = default_policies(None)
        pols["newstep"] = {"route": {"host": "*", "path_prefix": "/new/"}, "upstream": "echo",
                           "callers": [{"issuer": "test", "claims": {"sub": "*"}}],
                           "allow": [{"methods": ["GET"], "paths": ["/new/**"]}]}
        e.write_policies(pols)
        e.signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while e.request("GET", "/new/x", token=tok)[0] != 200:
            assert time.monotonic() < deadline, "the new policy set is served after SIGHUP"
            time.sleep(0.05)
        # an invalid set keeps the old one and logs every error
        bad = e.dir / "policies" / "broken.json"
        bad.write_text('{"step": "broken", "route": {"host": "*", "path_prefix": "/b/"}, '
                       '"upstream": "nosuch", "bogus_key": 1}')
        e.signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "reload refused" not in e.log_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        log = e.log_text()
        assert "broken.json" in log and "nosuch" in log and "bogus_key" in log
        assert e.request("GET", "/new/x", token=tok)[0] == 200, "old set still in use"
        for _ in range(3):
            e.signal(signal.SIGHUP)  # repeated reloads of an invalid set under load
            time.sleep(0.2)
        bad.unlink()
        e.signal(signal.SIGHUP)
        time.sleep(0.5)
        st, _, body = e.admin("/metrics")
        gen = int(re.search(rb"baton_config_generation (\d+)", body).group(1))
        assert gen >= 3
    finally:
        for l in loads:
            l.stop_flag = True
        for l in loads:
            l.join(10)
        assert e.stop() == 0
    results = [r for l in loads for r in l.results]
    assert len(results) > 50
    failed = [r for r in results if r[1] != 200]
    assert not failed, "no failed request during reloads: %r" % failed[:5]
    ids = {(r.get("client_request_id") or r["request_id"]) for r in e.audit_records()}
    assert {r[0] for r in results} <= ids


def test_drain_under_load(tmp_path, up):
    e = ServeEnv(tmp_path, up.port, workers=2, extra={"drain_timeout_ms": 5000})
    e.start()
    tok = e.token()
    loads = [Load(e, "/api/drain?delay_ms=700", "D%d" % i, tok) for i in range(6)]
    for l in loads:
        l.start()
    time.sleep(1.2)
    t_term = time.monotonic()
    e.signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", e.port), timeout=2).close()
    rc = e.proc.wait(10)
    t_exit = time.monotonic()
    for l in loads:
        l.stop_flag = True
    for l in loads:
        l.join(10)
    e.stop()
    assert rc == 0
    assert t_exit - t_term < 5, "drained within the bound"
    results = [r for l in loads for r in l.results]
    ok = [r for r in results if r[1] == 200]
    in_flight = [r for r in ok if r[2] < t_term < r[3]]
    assert in_flight, "some requests were in flight at SIGTERM and completed"
    bad_status = [r for r in results if isinstance(r[1], int) and r[1] != 200]
    assert not bad_status, bad_status[:5]
    ids = [(r.get("client_request_id") or r["request_id"]) for r in e.audit_records()]
    assert len(ids) == len(set(ids))
    assert set(ids) == {r[0] for r in ok}, "one record per answered request, none for the rest"


def test_sigusr1_reopens_the_audit_log(tmp_path, up):
    e = ServeEnv(tmp_path, up.port)
    e.start()
    try:
        tok = e.token()
        assert e.request("GET", "/api/before", token=tok)[0] == 200
        time.sleep(0.1)
        rotated = e.dir / "audit.jsonl.1"
        os.rename(e.audit_path, rotated)
        e.signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not e.audit_path.exists():
            assert time.monotonic() < deadline, "a new audit file after SIGUSR1"
            time.sleep(0.05)
        assert e.request("GET", "/api/after", token=tok)[0] == 200
    finally:
        assert e.stop() == 0
    new = [json.loads(l) for l in e.audit_path.read_text().splitlines()]
    old = [json.loads(l) for l in rotated.read_text().splitlines()]
    assert [r["request"]["path"] for r in old if r.get("kind") == "request"] == ["/api/before"]
    assert [r["request"]["path"] for r in new if r.get("kind") == "request"] == ["/api/after"]
    v = subprocess.run([str(BATON), "audit", "verify", str(rotated), str(e.audit_path)],
                       capture_output=True, text=True, timeout=30)
    assert v.returncode == 0, v.stdout + v.stderr


def access_log_supported(tmp_path, up):
    (tmp_path / "probe").mkdir()
    probe = ServeEnv(tmp_path / "probe", up.port, extra={"access_log": True})
    r = subprocess.run([str(BATON), "check", "-c", str(probe.dir / "baton.json")],
                       capture_output=True, text=True, timeout=30)
    return r.returncode == 0


def test_access_log_line_when_enabled(tmp_path, up):
    if not access_log_supported(tmp_path, up):
        pytest.skip("config does not parse access_log yet")
    e = ServeEnv(tmp_path, up.port, extra={"access_log": True})
    e.start()
    try:
        tok = e.token()
        st, _, _ = e.request("GET", "/api/logged?secret=1", token=tok, headers={
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "User-Agent": "probe/1"})
        assert st == 200
    finally:
        assert e.stop() == 0
    lines = [json.loads(l) for l in e.log_text().splitlines() if l.startswith("{")]
    acc = [l for l in lines if "httpRequest" in l]
    assert len(acc) == 1
    a = acc[0]
    assert a["severity"] == "INFO" and a["httpRequest"]["status"] == 200
    assert a["httpRequest"]["requestMethod"] == "GET" and a["httpRequest"]["userAgent"] == "probe/1"
    assert a["logging.googleapis.com/trace"].endswith("4bf92f3577b34da6a3ce929d0e0e4736")
    assert tok not in e.log_text()


def test_drain_deadline_aborts_and_still_records(tmp_path, up):
    e = ServeEnv(tmp_path, up.port, extra={"drain_timeout_ms": 1000})
    e.start()
    tok = e.token()
    result = {}

    def slow():
        try:
            result["r"] = e.request("GET", "/api/long?delay_ms=6000", token=tok,
                                    headers={"X-Request-Id": "long-1"}, timeout=10)
        except (OSError, http.client.HTTPException) as ex:
            result["r"] = type(ex).__name__

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    e.signal(signal.SIGTERM)
    rc = e.proc.wait(10)
    waited = time.monotonic() - t0
    t.join(10)
    e.stop()
    assert rc == 0
    assert 0.9 < waited < 4, "stopped at the 1 s drain bound, not after the 6 s request"
    assert not isinstance(result["r"], tuple) or result["r"][0] != 200
    recs = [r for r in e.audit_records() if (r.get("client_request_id") or r["request_id"]) == "long-1"]
    assert len(recs) == 1 and recs[0]["reason"] == "drain_aborted"


def test_reload_keeps_the_audit_mode_the_log_was_opened_with(tmp_path, up):
    """A SIGHUP that changes fsync (batch -> always) keeps the running log's
    mode, and says so: responses do not start waiting on fsync halfway."""
    e = ServeEnv(tmp_path, upstream_port=up.port, audit_fsync="batch")
    e.start()
    try:
        tok = e.token()
        assert e.request("GET", "/api/before", token=tok)[0] == 200
        e.config["audit"]["fsync"] = "always"
        e.write_config()
        e.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "take effect at the next restart" not in e.log_text():
            assert time.monotonic() < deadline, "the reload names the audit settings it keeps"
            time.sleep(0.05)
        assert e.request("GET", "/api/after", token=tok)[0] == 200
    finally:
        assert e.stop() == 0
    paths = [r["request"]["path"] for r in e.audit_records()]
    assert "/api/before" in paths and "/api/after" in paths


def test_port_env_colliding_with_admin_listen_is_refused_at_start(tmp_path, up):
    """`baton check` refuses admin_listen on listen's port; $PORT (Cloud Run)
    is only known at serve time, so serve applies the same rule to it."""
    e = ServeEnv(tmp_path, upstream_port=up.port)
    env = dict(os.environ, PORT=str(e.admin_port))
    r = subprocess.run([str(BATON), "serve", "-c", str(e.dir / "baton.json")], env=env,
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert "PORT=%d is admin_listen's port too" % e.admin_port in r.stderr

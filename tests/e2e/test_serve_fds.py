"""Descriptor exhaustion (issue 10, point 1), against the real binary with the
descriptor limit set on the child: the soft limit is raised to the hard one,
max_connections is capped by what the limit serves (one log line), and when
accept() fails with EMFILE the worker pauses accepting instead of spinning,
logs at most once a second, keeps serving the open connections, and answers
new requests once descriptors are free again."""
import os
import resource
import socket
import subprocess
import time

import pytest

from serve_env import ServeEnv, status_of
from conftest import BATON


def start_with_nofile(env, soft, hard):
    """env.start() with RLIMIT_NOFILE (soft, hard) set in the child before exec."""
    env.stderr = open(env.stderr_path, "ab")
    e = dict(os.environ)
    e.pop("BATON_CONFIG", None)
    e["PORT"] = str(env.port)
    env.t_exec = time.monotonic()
    env.proc = subprocess.Popen(
        [str(BATON), "serve", "-c", str(env.dir / "baton.json")], stdout=subprocess.DEVNULL,
        stderr=env.stderr, env=e,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))
    env.wait_ready()


def nofile_of(pid):
    return resource.prlimit(pid, resource.RLIMIT_NOFILE)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get(env, path, tok, sock=None, timeout=5):
    own = sock is None
    s = sock or socket.create_connection(("127.0.0.1", env.port), timeout=timeout)
    try:
        s.settimeout(timeout)
        s.sendall(("GET %s HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n\r\n"
                   % (path, tok)).encode())
        out = b""
        while b"\r\n\r\n" not in out:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        head, _, body = out.partition(b"\r\n\r\n")
        n = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                n = int(line.split(b":")[1])
        while len(body) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return status_of(out)
    finally:
        if own:
            s.close()


def test_soft_limit_raised_and_max_connections_capped(tmp_path, up):
    e = ServeEnv(tmp_path, up.port, limits={"max_connections": 100000})
    start_with_nofile(e, 200, 300)
    try:
        assert nofile_of(e.proc.pid) == (300, 300), "soft raised to the hard limit"
        lines = [l for l in e.log_text().splitlines() if "max_connections 100000 capped at" in l]
        assert len(lines) == 1, e.log_text()
        cap = int(lines[0].split("capped at ")[1].split(":")[0])
        assert 50 <= cap <= 120, cap
        tok = e.token()
        idle = []
        for _ in range(cap):
            idle.append(socket.create_connection(("127.0.0.1", e.port), timeout=5))
        time.sleep(0.3)
        # past the cap: the canned 503, at once, not a hang
        over = e.raw(b"GET /api/x HTTP/1.1\r\nHost: gw\r\n\r\n", timeout=5)
        assert status_of(over) == 503, over[:100]
        assert get(e, "/api/in", tok, sock=idle[0]) == 200, "open connections are served"
        for s in idle[1:]:
            s.close()
        deadline = time.monotonic() + 5
        while get(e, "/api/after", tok) != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        assert e.stop() == 0


def test_emfile_pauses_accepting_without_spinning(tmp_path, up):
    e = ServeEnv(tmp_path, up.port, workers=1, limits={"max_connections": 1000})
    start_with_nofile(e, 4096, 4096)
    pid = e.proc.pid
    tok = e.token()
    held = []
    try:
        warm = socket.create_connection(("127.0.0.1", e.port), timeout=5)
        assert get(e, "/api/warm", tok, sock=warm) == 200  # pools an upstream connection
        in_use = len(os.listdir("/proc/%d/fd" % pid))
        # the limit drops under baton's feet: the cap computed at start no longer holds
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 20, 4096))
        for _ in range(150):
            held.append(socket.create_connection(("127.0.0.1", e.port), timeout=5))
        time.sleep(0.5)
        err0 = os.path.getsize(e.stderr_path)
        cpu0 = cpu_seconds(pid)
        time.sleep(3)
        cpu = cpu_seconds(pid) - cpu0
        grew = os.path.getsize(e.stderr_path) - err0
        print("emfile: %.3f s CPU, %d bytes stderr in 3 s" % (cpu, grew))
        assert cpu < 0.6, "the loop does not spin on accept: %.2f s of CPU in 3 s" % cpu
        assert grew < 4000, "at most a line a second: %d bytes of stderr in 3 s" % grew
        assert "accept failed (Too many open files)" in e.log_text()
        assert get(e, "/api/open", tok, sock=warm) == 200, "an open connection is still served"
        for s in held:
            s.close()
        held = []
        deadline = time.monotonic() + 5
        while True:
            try:
                if get(e, "/api/new", tok, timeout=2) == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "a new request is answered once connections close"
            time.sleep(0.1)
        warm.close()
    finally:
        for s in held:
            s.close()
        assert e.stop() == 0

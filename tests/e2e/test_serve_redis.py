"""Shared step limits end to end (README "Shared limits on Redis"): a real
Debian `redis-server`, started by the tests on a free loopback port or a unix
socket in the test's temp dir and stopped by PID, with real baton processes.

- two batons sharing a global step admit, together, no more than
  rate_per_s * seconds + burst, while an instance step admits that much in
  each process;
- Redis stopped (or frozen) mid-run gives each on_failure behaviour, /readyz
  and the metrics say so, and a restarted Redis is picked up again;
- max_in_flight against a slow upstream, across workers and across a reload.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter

import pytest

from serve_env import ServeEnv, default_policies, free_port

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
pytestmark = pytest.mark.skipif(not os.path.exists(REDIS),
                                reason="redis-server not installed (scripts/deps.sh)")


class Redis:
    """A redis-server of our own: no persistence, loopback or unix socket only."""

    def __init__(self, tmp, unix=False, password=None):
        self.dir = tmp
        self.port = 0 if unix else free_port()
        self.sock = os.path.join(str(tmp), "redis.sock") if unix else None
        self.password = password
        self.proc = None

    def url(self):
        return "unix://" + self.sock if self.sock else "redis://127.0.0.1:%d/0" % self.port

    def start(self):
        args = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no",
                "--logfile", os.path.join(str(self.dir), "redis.log")]
        if self.sock:
            args += ["--unixsocket", self.sock, "--unixsocketperm", "700"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.command("PING") == b"+PONG":
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def command(self, *args):
        """One RESP command (after AUTH when the server has a password);
        returns the first line of its reply."""
        if self.sock:
            s = socket.socket(socket.AF_UNIX)
            s.connect(self.sock)
        else:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        cmds = ([("AUTH", self.password)] if self.password else []) + [args]
        try:
            s.settimeout(2)
            out = b""
            for cmd in cmds:
                out += b"*%d\r\n" % len(cmd)
                for a in cmd:
                    a = a.encode() if isinstance(a, str) else a
                    out += b"$%d\r\n%s\r\n" % (len(a), a)
            s.sendall(out)
            buf = b""
            while buf.count(b"\r\n") < len(cmds):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            return buf.split(b"\r\n")[len(cmds) - 1]
        finally:
            s.close()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def policies(limits_by_step):
    base = default_policies(None)
    caller, allow = base["api"]["callers"], base["api"]["allow"]
    out = {}
    for step, limits in limits_by_step.items():
        out[step] = {"route": {"host": "*", "path_prefix": "/%s/" % step}, "upstream": "echo",
                     "callers": caller, "allow": allow, "limits": limits}
    return out


def metric(env, name):
    """Sum of the samples of `name` (a full name with labels matches exactly)."""
    _, _, body = env.admin("/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("#"):
            continue
        key, _, val = line.rpartition(" ")
        if key == name or (("{" not in name) and key.split("{")[0] == name):
            total += float(val)
    return total


def readyz(env):
    st, _, body = env.admin("/readyz")
    return st, json.loads(body)


def wait_redis_up(env, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, doc = readyz(env)
        if not doc["redis"]["degraded"]:
            return True
        time.sleep(0.05)
    return False


def reasons_of(env, rids):
    by_id = {r.get("client_request_id"): r for r in env.audit_records()}
    return [by_id[i]["reason"] if i in by_id else None for i in rids]


def audit_settled(env, n, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(env.audit_records()) < n:
        time.sleep(0.05)


def hammer(env, path, token, stop_at, counts, lock, cap=20000):
    """Requests on one keep-alive connection until stop_at (bounded by cap)."""
    c = env.conn(timeout=10)
    n = 0
    try:
        while time.monotonic() < stop_at and n < cap:
            c.request("GET", path, headers={"Authorization": "Bearer " + token})
            r = c.getresponse()
            r.read()
            n += 1
            with lock:
                counts[r.status] += 1
            if r.getheader("Connection", "").lower() == "close":
                c.close()
                c = env.conn(timeout=10)
    finally:
        c.close()


def test_global_step_shared_by_two_instances(tmp_path, up):
    """Two batons on one Redis: the global step's admissions, summed over both,
    stay within rate*t + burst; the instance step's stay within it per process
    (so about twice as many in total)."""
    rate, burst, seconds = 20, 10, 3.0
    r = Redis(tmp_path, password="redis-auth-secret").start()
    pw = tmp_path / "redis-password"
    pw.write_text("redis-auth-secret\n")
    os.chmod(pw, 0o600)
    envs = []
    try:
        pols = policies({"glob": {"rate_per_s": rate, "burst": burst, "rate_scope": "global"},
                         "inst": {"rate_per_s": rate, "burst": burst}})
        for name in ("a", "b"):
            d = tmp_path / name
            d.mkdir()
            e = ServeEnv(d, up.port, workers=2, policies=pols,
                         extra={"redis": {"url": r.url(), "password_file": str(pw),
                                          "timeout_ms": 2000}})
            e.start()
            envs.append(e)
        for e in envs:
            assert wait_redis_up(e), "AUTH with password_file, then the script: connected"
        toks = [e.token(exp_in=120) for e in envs]  # each env has its own issuer key
        counts = {(i, step): Counter() for i in range(2) for step in ("glob", "inst")}
        lock = threading.Lock()
        t0 = time.monotonic()
        stop_at = t0 + seconds
        threads = [threading.Thread(target=hammer, args=(envs[i], "/%s/x" % step, toks[i], stop_at,
                                                         counts[(i, step)], lock))
                   for i in range(2) for step in ("glob", "inst")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        elapsed = time.monotonic() - t0
        bound = rate * elapsed + burst
        glob = [counts[(i, "glob")][200] for i in range(2)]
        inst = [counts[(i, "inst")][200] for i in range(2)]
        total_requests = sum(sum(c.values()) for c in counts.values())
        assert total_requests > 4 * bound, "the load is well over the limit: %r" % counts
        assert sum(glob) <= bound, "global: %r admitted in %.2fs, bound %.1f" % (glob, elapsed, bound)
        assert sum(glob) >= 0.8 * rate * seconds, "global: the shared bucket still admits %r" % glob
        assert min(glob) > 0, "both instances share the global bucket: %r" % counts
        for n in inst:
            assert 0.8 * rate * seconds <= n <= bound, "instance step, per process: %r" % inst
        assert sum(inst) > 1.5 * sum(glob), "instance buckets are per process: %r vs %r" % (inst, glob)
        for e in envs:
            assert metric(e, "baton_redis_fallbacks_total") == 0, "no decision fell back"
            assert metric(e, "baton_redis_round_trips_total") >= sum(
                counts[(envs.index(e), "glob")].values()), "one round trip per global request"
        # one key for the step (and its policy hash), with a TTL: idle keys vanish
        assert r.command("KEYS", "baton:rl:glob:*") == b"*1"
        assert r.command("KEYS", "baton:rl:inst:*") == b"*0", "an instance step never touches Redis"
        r.password = None
        assert r.command("KEYS", "*").startswith(b"-NOAUTH"), "the server requires AUTH"
    finally:
        for e in envs:
            assert e.stop() == 0
        r.stop()


def pipelined(env, path, token, stop_at, counts, lock, depth=16, cap=200000):
    """Requests pipelined `depth` at a time on one keep-alive connection until
    stop_at (bounded by cap): more load than one request per round trip."""
    req = ("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
           % (path, token)).encode() * depth
    s = socket.create_connection(("127.0.0.1", env.port), timeout=10)
    buf, n, local = b"", 0, Counter()
    try:
        while time.monotonic() < stop_at and n < cap:
            s.sendall(req)
            got = 0
            while got < depth:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed after %d responses" % n)
                    buf += chunk
                    continue
                head = buf[:end].decode("latin-1").split("\r\n")
                length = 0
                for line in head[1:]:
                    k, _, v = line.partition(":")
                    if k.strip().lower() == "content-length":
                        length = int(v)
                while len(buf) < end + 4 + length:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed in a body")
                    buf += chunk
                buf = buf[end + 4 + length:]
                local[int(head[0].split()[1])] += 1
                got += 1
                n += 1
    finally:
        s.close()
        with lock:
            counts.update(local)


def test_global_step_leased_at_high_rate(tmp_path, up):
    """A step at 1000/s, burst 200, leases (README "Leases"): two batons, one
    worker each, under more load than the rate for ~3 s. Together they admit
    no more than rate*t + burst (tokens are debited on Redis before they are
    spent, and the burst keeps a lease age of tokens back), not much less (the
    stranded tokens and a worker waiting for a batch to accrue cost little),
    and with far fewer Redis round trips than requests."""
    rate, burst, seconds = 1000, 200, 3.0  # batches of up to 25, a lease age of 25 ms
    r = Redis(tmp_path).start()
    envs = []
    try:
        pols = policies({"hot": {"rate_per_s": rate, "burst": burst, "rate_scope": "global"}})
        for name in ("a", "b"):
            d = tmp_path / name
            d.mkdir()
            e = ServeEnv(d, up.port, workers=1, policies=pols,
                         extra={"redis": {"url": r.url(), "timeout_ms": 2000}})
            e.start()
            envs.append(e)
        for e in envs:
            assert wait_redis_up(e)
        toks = [e.token(exp_in=120) for e in envs]
        counts = [Counter(), Counter()]
        lock = threading.Lock()
        t0 = time.monotonic()
        stop_at = t0 + seconds
        threads = [threading.Thread(target=pipelined, args=(envs[i], "/hot/x", toks[i], stop_at,
                                                            counts[i], lock))
                   for i in range(2) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        elapsed = time.monotonic() - t0
        bound = rate * elapsed + burst
        admitted = [c[200] for c in counts]
        requests = sum(sum(c.values()) for c in counts)
        trips = sum(metric(e, "baton_redis_round_trips_total") for e in envs)
        leased = sum(metric(e, "baton_redis_lease_tokens_total") for e in envs)
        local = sum(metric(e, "baton_redis_lease_decisions_total") for e in envs)
        expired = sum(metric(e, "baton_redis_lease_expired_tokens_total") for e in envs)
        report = ("admitted %r of %d requests in %.2fs (bound %.0f), %d round trips, %d tokens "
                  "leased, %d decisions from leases, %d expired: %r"
                  % (admitted, requests, elapsed, bound, trips, leased, local, expired, counts))
        assert set(counts[0]) | set(counts[1]) <= {200, 429}, report
        assert requests > 1.5 * bound, "the load is well over the rate: " + report
        assert sum(admitted) <= bound, "never over rate*t + burst: " + report
        assert sum(admitted) >= 0.75 * rate * seconds, "little under-admission: " + report
        assert min(admitted) > 0, "both instances share the bucket: " + report
        assert trips < 0.5 * requests, "fewer round trips than requests: " + report
        assert leased > 0 and local > 0.5 * requests, "most decisions from leases: " + report
        print(report)
        for e in envs:
            assert metric(e, "baton_redis_fallbacks_total") == 0, report
            assert metric(e, "baton_redis_failures_total") == 0, report
    finally:
        for e in envs:
            assert e.stop() == 0
        r.stop()


@pytest.mark.parametrize("on_failure,unix", [("local", False), ("deny", True), ("allow", False)])
def test_redis_down_and_back(tmp_path, up, on_failure, unix):
    r = Redis(tmp_path, unix=unix).start()
    env = ServeEnv(tmp_path, up.port, workers=1,
                   policies=policies({"glob": {"rate_per_s": 1, "burst": 2, "rate_scope": "global"}}),
                   extra={"redis": {"url": r.url(), "timeout_ms": 300, "on_failure": on_failure}})
    try:
        env.start()
        assert wait_redis_up(env)
        tok = env.token()
        rids, sts = [], []

        def go(n, tag):
            out = []
            for i in range(n):
                rid = "%s-%s-%d-%d" % (on_failure, tag, i, int(time.time() * 1000))
                st, hd, _ = env.request("GET", "/glob/x", token=tok, headers={"X-Request-Id": rid})
                rids.append(rid)
                out.append((st, hd.get("retry-after")))
            return out

        got = go(3, "up")
        assert [s for s, _ in got] == [200, 200, 429], "through Redis: burst 2, then 429"
        assert got[2][1] is not None and int(got[2][1]) >= 1, "429 with Retry-After"
        trips = metric(env, "baton_redis_round_trips_total")
        assert trips >= 3

        if on_failure == "local":
            # Redis frozen: each decision waits timeout_ms, no longer, then falls back.
            os.kill(r.proc.pid, signal.SIGSTOP)
            try:
                t = time.monotonic()
                frozen = go(1, "frozen")
                waited = time.monotonic() - t
            finally:
                os.kill(r.proc.pid, signal.SIGCONT)
            assert frozen[0][0] == 200, "the local bucket (untouched, full) admits"
            assert 0.25 <= waited < 2.0, "parked for timeout_ms (300 ms), not more: %.3f" % waited
            assert metric(env, "baton_redis_timeouts_total") >= 1

        r.stop()  # mid-run
        got = go(3, "down")
        st, doc = readyz(env)
        assert doc["redis"]["configured"] and doc["redis"]["degraded"], doc
        if on_failure == "local":
            # the per-instance bucket (rate 1, burst 2) decides; one token went to "frozen"
            assert [s for s, _ in got][-1] == 429 and [s for s, _ in got].count(200) >= 1, got
            assert metric(env, 'baton_redis_fallbacks_total{on_failure="local"}') >= 3
            assert st == 200, "degraded, not unready"
        elif on_failure == "deny":
            assert [s for s, _ in got] == [429, 429, 429], got
            assert all(ra is not None and int(ra) >= 1 for _, ra in got), "Retry-After on each"
            assert metric(env, 'baton_redis_fallbacks_total{on_failure="deny"}') >= 3
            assert st == 503 and not doc["ready"], "on_failure deny: unready while Redis is down"
        else:
            assert [s for s, _ in got] == [200, 200, 200], got
            assert metric(env, 'baton_redis_fallbacks_total{on_failure="allow"}') >= 3
            assert st == 200
        assert "global rate limit without redis" in env.log_text(), "the fallback is logged"

        r.start()  # same port or socket
        assert wait_redis_up(env, timeout=12), "a restarted Redis is picked up again"
        before = metric(env, "baton_redis_round_trips_total")
        fallbacks = metric(env, "baton_redis_fallbacks_total")
        got = go(3, "back")
        # the restarted Redis is empty: the global bucket starts full again
        assert [s for s, _ in got] == [200, 200, 429], got
        assert metric(env, "baton_redis_round_trips_total") >= before + 3
        assert metric(env, "baton_redis_fallbacks_total") == fallbacks, "no fallback once back"
        st, doc = readyz(env)
        assert st == 200 and not doc["redis"]["degraded"]

        audit_settled(env, len(rids))
        reasons = reasons_of(env, rids)
        down = [reasons[i] for i, rid in enumerate(rids) if "-down-" in rid]
        if on_failure == "deny":
            assert down == ["rate_unavailable"] * 3, reasons
        elif on_failure == "allow":
            assert down == ["allowed"] * 3, reasons
        else:
            assert set(down) <= {"allowed", "rate_limited"} and "rate_limited" in down, reasons
        assert reasons[2] == "rate_limited"
    finally:
        assert env.stop() == 0
        r.stop()


def test_max_in_flight_slow_upstream_and_reload(tmp_path, up):
    env = ServeEnv(tmp_path, up.port, workers=2,
                   policies=policies({"capped": {"max_in_flight": 2}}))
    env.start()
    tok = env.token()
    try:
        def slow(results, i, delay_ms=1500):
            rid = "inflight-%d-%d" % (i, int(time.time() * 1000))
            st, hd, _ = env.request("GET", "/capped/x?delay_ms=%d" % delay_ms, token=tok,
                                    headers={"X-Request-Id": rid}, timeout=10)
            results[i] = (st, hd.get("retry-after"), rid)

        # 5 at once on 5 connections (spread over both workers): 2 pass, 3 are refused
        results = {}
        threads = [threading.Thread(target=slow, args=(results, i)) for i in range(5)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join(20)
        sts = sorted(s for s, _, _ in results.values())
        assert sts == [200, 200, 429, 429, 429], results
        assert all(ra == "1" for s, ra, _ in results.values() if s == 429), "Retry-After: 1"
        audit_settled(env, 5)
        refused = [rid for s, _, rid in results.values() if s == 429]
        assert reasons_of(env, refused) == ["too_many_in_flight"] * 3

        # Counts survive a reload and are not leaked by it.
        results = {}
        threads = [threading.Thread(target=slow, args=(results, i, 2000)) for i in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.4)
        env.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while metric(env, "baton_config_generation") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(env, "baton_config_generation") == 2, "reloaded"
        extra = {}
        slow(extra, 9, 0)
        assert extra[9][0] == 429, "the new snapshot sees the 2 requests started on the old one"
        for t in threads:
            t.join(20)
        assert sorted(s for s, _, _ in results.values()) == [200, 200]
        results = {}
        threads = [threading.Thread(target=slow, args=(results, i, 300)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert sorted(s for s, _, _ in results.values()) == [200, 200], "nothing leaked: %r" % results
    finally:
        assert env.stop() == 0


def test_parked_requests_pipelined_and_abandoned(tmp_path, up):
    """A pipelined head behind a parked one waits for its turn; a client that
    leaves while its request is parked gets a client_closed record."""
    r = Redis(tmp_path).start()
    env = ServeEnv(tmp_path, up.port, workers=1,
                   policies=policies({"glob": {"rate_per_s": 1, "burst": 3, "rate_scope": "global"}}),
                   extra={"redis": {"url": r.url(), "timeout_ms": 1000, "on_failure": "deny"}})
    try:
        env.start()
        assert wait_redis_up(env)
        tok = env.token()
        req = ("GET /glob/%%d HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
               "X-Request-Id: pipe-%%d\r\n\r\n" % tok)
        raw = env.raw(((req % (1, 1)) + (req % (2, 2))).encode(), timeout=3)
        heads = [h for h in raw.split(b"HTTP/1.1 ")[1:]]
        assert [h[:3] for h in heads] == [b"200", b"200"], raw[:300]
        assert raw.index(b"pipe-1") < raw.index(b"pipe-2"), "answers in order"

        # A client that leaves while parked, its body still to come: client_closed.
        # One that half-closes after a whole request still gets its answer.
        posted = ("POST /glob/%%d HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
                  "X-Request-Id: pipe-%%d\r\nContent-Length: 10\r\n\r\n" % tok)
        os.kill(r.proc.pid, signal.SIGSTOP)
        try:
            s = socket.create_connection(("127.0.0.1", env.port), timeout=3)
            s.sendall((posted % (3, 3)).encode())
            time.sleep(0.2)  # parked: Redis is frozen, timeout_ms is 1000
            s.close()
            h = socket.create_connection(("127.0.0.1", env.port), timeout=5)
            h.sendall((req % (4, 4)).encode())
            h.shutdown(socket.SHUT_WR)
            time.sleep(0.3)
        finally:
            os.kill(r.proc.pid, signal.SIGCONT)
        got = b""
        while True:
            chunk = h.recv(65536)
            if not chunk:
                break
            got += chunk
        h.close()
        assert got.startswith(b"HTTP/1.1 200"), got[:200]
        audit_settled(env, 4)
        assert reasons_of(env, ["pipe-1", "pipe-2", "pipe-3", "pipe-4"]) == [
            "allowed", "allowed", "client_closed", "allowed"]
    finally:
        assert env.stop() == 0
        r.stop()


def test_check_validates_shared_limits(tmp_path, up):
    """`baton check`: a global step needs "redis"; the password file must be 0600."""
    from conftest import run_baton
    pols = policies({"glob": {"rate_per_s": 5, "rate_scope": "global", "max_in_flight": 4}})
    env = ServeEnv(tmp_path, up.port, policies=pols)
    cfg = str(tmp_path / "baton.json")
    r = run_baton("check", "-c", cfg)
    assert r.returncode == 1
    assert '"rate_scope": "global" needs "redis" in the main config' in r.stderr
    assert "glob.json:" in r.stderr, "the error names the policy file"

    pw = tmp_path / "redis-password"
    pw.write_text("secret\n")
    os.chmod(pw, 0o644)
    env.config["redis"] = {"url": "redis://127.0.0.1:6379/0", "password_file": str(pw)}
    env.write_config()
    r = run_baton("check", "-c", cfg)
    assert r.returncode == 1 and "chmod 600" in r.stderr, r.stderr
    assert "secret" not in r.stderr + r.stdout, "the password is never printed"

    os.chmod(pw, 0o600)
    r = run_baton("check", "-c", cfg)
    assert r.returncode == 0, r.stderr

    env.config["redis"] = {"url": "redis://redis.internal:6379", "on_failure": "maybe"}
    env.write_config()
    r = run_baton("check", "-c", cfg)
    assert r.returncode == 1
    assert "must be an IP address" in r.stderr and '"maybe" is not one of' in r.stderr, r.stderr


def test_script_flush_and_wrong_password(tmp_path, up):
    """SCRIPT FLUSH (as after a failover to a server without the script): the
    next decision gets NOSCRIPT and is retried with EVAL, answered, not failed.
    A wrong AUTH string: the connection is refused at setup, /readyz says why,
    and decisions go to on_failure without waiting."""
    r = Redis(tmp_path, password="right-one").start()
    pw = tmp_path / "redis-password"
    pw.write_text("right-one\n")
    os.chmod(pw, 0o600)
    env = ServeEnv(tmp_path, up.port, workers=1,
                   policies=policies({"glob": {"rate_per_s": 100, "burst": 100,
                                               "rate_scope": "global"}}),
                   extra={"redis": {"url": r.url(), "password_file": str(pw),
                                    "timeout_ms": 1000, "on_failure": "deny"}})
    try:
        env.start()
        assert wait_redis_up(env)
        tok = env.token()
        assert env.request("GET", "/glob/x", token=tok)[0] == 200
        loads = metric(env, "baton_redis_script_loads_total")
        assert r.command("SCRIPT", "FLUSH") == b"+OK"
        assert [env.request("GET", "/glob/x", token=tok)[0] for _ in range(3)] == [200] * 3
        assert metric(env, "baton_redis_script_loads_total") == loads + 1, "one EVAL reloads it"
        assert metric(env, "baton_redis_fallbacks_total") == 0
        assert metric(env, "baton_redis_failures_total") == 0

        pw.write_text("wrong-one\n")
        env.signal(signal.SIGHUP)  # a changed password reconnects with it
        deadline = time.monotonic() + 10
        doc = {}
        while time.monotonic() < deadline:
            st, doc = readyz(env)
            if doc["redis"]["degraded"] and "setup refused" in doc["redis"].get("last_error", ""):
                break
            time.sleep(0.05)
        assert doc["redis"]["degraded"] and "setup refused" in doc["redis"]["last_error"], doc
        assert "right-one" not in json.dumps(doc) and "wrong-one" not in env.log_text()
        # rate 100, burst 100 leases (README "Leases"): tokens debited before the
        # outage may be spent for one lease age (100 ms), then on_failure decides
        time.sleep(0.15)
        t = time.monotonic()
        st, hd, _ = env.request("GET", "/glob/x", token=tok)
        assert st == 429 and hd.get("retry-after"), ("on_failure deny", st, hd)
        assert time.monotonic() - t < 0.5, "no wait for a connection that is down"
    finally:
        assert env.stop() == 0
        r.stop()

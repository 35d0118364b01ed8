"""Signed URL uses across instances (README "Signed URLs"): with "redis" in
the main config, two real batons sharing a real Debian `redis-server` accept a
link exactly `uses` times between them, under concurrent attempts on both; a
use Redis cannot count (stopped, frozen) is a retryable 503 with Retry-After
whatever redis.on_failure says, and nothing is forwarded; `baton check` warns
that single use is per instance only without "redis"."""
import concurrent.futures
import os
import signal
import subprocess
import time

import pytest

from conftest import BATON
from serve_env import ServeEnv
from test_serve_redis import REDIS, Redis, metric, wait_redis_up
from test_signed_urls import policies, record, sign_url, target_of, write_key

pytestmark = pytest.mark.skipif(not os.path.exists(REDIS),
                                reason="redis-server not installed (scripts/deps.sh)")


def batons(tmp_path, up, redis, n=2, **redis_cfg):
    """`n` batons with the same signing key, sharing `redis`."""
    key = tmp_path / "k1.pem"
    if not key.exists():
        write_key(key)
    envs = []
    for i in range(n):
        d = tmp_path / ("b%d" % i)
        d.mkdir()
        cfg = {"url": redis.url(), "timeout_ms": 500}
        cfg.update(redis_cfg)
        e = ServeEnv(d, up.port, policies=policies(), workers=2,
                     extra={"url_signing": {"keys": [{"id": "k1", "file": str(key)}],
                                            "max_ttl_s": 3600},
                            "redis": cfg})
        e.start()
        envs.append(e)
    for e in envs:
        assert wait_redis_up(e), "connected, scripts loaded"
    return envs


def attempt(env, target, tag):
    rid = "%s-%d" % (tag, time.monotonic_ns())
    st, hd, _ = env.request("GET", target, headers={"X-Request-Id": rid})
    return st, hd.get("retry-after"), rid, env


def race(envs, target, n):
    """`n` attempts at once, alternating between the instances."""
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda i: attempt(envs[i % len(envs)], target, "race%d" % i),
                             range(n)))


@pytest.mark.parametrize("uses", [1, 3])
def test_uses_counted_across_two_instances(tmp_path, up, uses):
    r = Redis(tmp_path).start()
    envs = []
    try:
        envs = batons(tmp_path, up, r)
        a, b = envs
        rc, url, err = sign_url(a, "GET", "http://127.0.0.1:%d/links/shared" % a.port, uses=uses)
        assert rc == 0, err
        t = target_of(url)
        up.clear()
        got = race(envs, t, 16)
        ok = [g for g in got if g[0] == 200]
        assert len(ok) == uses, "exactly %d uses across both: %r" % (uses, [g[0] for g in got])
        assert sorted(g[0] for g in got) == [200] * uses + [401] * (16 - uses)
        assert len(up.requests()) == uses, "only the admitted uses reached the upstream"
        # both instances answered (the race alternated), and a replay on either is refused
        for e in envs:
            st, _, rid, _ = attempt(e, t, "replay")
            assert st == 401 and record(e, rid)["reason"] == "url_used"
        refused = [g for g in got if g[0] == 401]
        assert {record(g[3], g[2])["reason"] for g in refused} == {"url_used"}
        link_id = record(ok[0][3], ok[0][2])["link"]["id"]
        key = "baton:link:" + link_id
        assert r.command("INCRBY", key, "0") == b":18", "one INCR per attempt (16 + 2 replays)"
        ttl = int(r.command("TTL", key)[1:])
        # the key outlives the link (5 min) by leeway and the grace hour, no more
        assert 300 + 3600 - 30 < ttl <= 300 + 3600 + 10, ttl
        for e in envs:
            assert metric(e, "baton_redis_link_uses_total") >= 1
            assert metric(e, "baton_redis_link_failures_total") == 0
            assert metric(e, "baton_redis_fallbacks_total") == 0
    finally:
        for e in envs:
            assert e.stop() == 0
        r.stop()


@pytest.mark.parametrize("on_failure", ["local", "allow", "deny"])
def test_redis_down_is_503_never_forwarded(tmp_path, up, on_failure):
    r = Redis(tmp_path).start()
    envs = []
    try:
        envs = batons(tmp_path, up, r, n=1, on_failure=on_failure)
        e = envs[0]
        rc, url, err = sign_url(e, "GET", "http://127.0.0.1:%d/links/down" % e.port, uses=1)
        assert rc == 0, err
        rc, url3, err = sign_url(e, "GET", "http://127.0.0.1:%d/links/down3" % e.port, uses=3)
        assert rc == 0, err
        r.stop()
        up.clear()
        for t in (target_of(url), target_of(url3)):
            for _ in range(3):
                st, retry, rid, _ = attempt(e, t, "down")
                assert st == 503 and retry == "1", (st, retry)
                rec = record(e, rid)
                assert rec["reason"] == "overloaded" and rec["decision"] == "error"
        assert up.requests() == [], "no use Redis could not count was forwarded"
        assert metric(e, "baton_redis_link_failures_total") >= 6
        assert "signed URL uses refused (503)" in e.log_text()
        # a link with no use limit never touches Redis: still accepted
        rc, any_url, _ = sign_url(e, "GET", "http://127.0.0.1:%d/links/any" % e.port, uses=0)
        assert attempt(e, target_of(any_url), "any")[0] == 200
        # Redis back: the unspent link is accepted once
        r.start()
        assert wait_redis_up(e)
        assert [attempt(e, target_of(url), "back")[0] for _ in range(2)] == [200, 401]
    finally:
        for e in envs:
            assert e.stop() == 0
        r.stop()


def test_script_flushed_is_loaded_again(tmp_path, up):
    """A Redis that lost the script (SCRIPT FLUSH, a failover): NOSCRIPT, then
    EVAL, and the use is still counted once."""
    r = Redis(tmp_path).start()
    envs = []
    try:
        envs = batons(tmp_path, up, r, n=1)
        e = envs[0]
        rc, url, _ = sign_url(e, "GET", "http://127.0.0.1:%d/links/flush" % e.port, uses=1)
        loads = metric(e, "baton_redis_script_loads_total")
        assert r.command("SCRIPT", "FLUSH") == b"+OK"
        assert [attempt(e, target_of(url), "flush")[0] for _ in range(2)] == [200, 401]
        assert metric(e, "baton_redis_script_loads_total") > loads, "EVAL after NOSCRIPT"
    finally:
        for e in envs:
            assert e.stop() == 0
        r.stop()


def test_redis_frozen_times_out_to_503(tmp_path, up):
    """A Redis that does not answer: the parked use ends at timeout_ms."""
    r = Redis(tmp_path).start()
    envs = []
    try:
        envs = batons(tmp_path, up, r, n=1, timeout_ms=300)
        e = envs[0]
        rc, url, _ = sign_url(e, "GET", "http://127.0.0.1:%d/links/frozen" % e.port, uses=1)
        up.clear()
        r.proc.send_signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            st, retry, _, _ = attempt(e, target_of(url), "frozen")
            took = time.monotonic() - t0
        finally:
            r.proc.send_signal(signal.SIGCONT)
        assert st == 503 and retry == "1"
        assert 0.25 <= took < 1.5, took
        assert up.requests() == []
    finally:
        for e in envs:
            assert e.stop() == 0
        r.stop()


def test_check_warns_per_instance_only_without_redis(tmp_path):
    write_key(tmp_path / "k1.pem")
    e = ServeEnv(tmp_path, 1, policies=policies(),
                 extra={"url_signing": {"keys": [{"id": "k1", "file": "k1.pem"}]}})

    def check():
        p = subprocess.run([str(BATON), "check", "-c", str(e.dir / "baton.json")],
                           capture_output=True, text=True, timeout=20)
        assert p.returncode == 0, p.stderr
        return p.stderr

    assert "single-use links are counted per instance" in check()
    e.config["redis"] = {"url": "redis://127.0.0.1:6379/0"}
    e.write_config()
    assert "single-use links are counted per instance" not in check()

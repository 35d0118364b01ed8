"""Fresh upstream addresses (issue 12 point 4), against the real binary.

An upstream's host name is resolved with getaddrinfo on the background thread
every upstreams[].resolve_interval_s; every address is kept, connections go
round robin and fail over on connect errors, and a name that does not resolve
makes that upstream answer 502 upstream_unresolved instead of stopping serve.

The name is test-controlled through /etc/hosts, which glibc's getaddrinfo
reads on every call: each test appends lines for a unique
baton-dns-test-<random>.invalid name and removes exactly those lines in a
`finally` (the file is compared with its original bytes). Upstreams listen on
127.0.0.2 and 127.0.0.3 (the whole of 127/8 is loopback on Linux)."""
import json
import os
import secrets
import signal
import time

import pytest

from serve_env import ServeEnv, SUB, free_port
from upstream import Upstream

HOSTS = "/etc/hosts"


def _hosts_writable():
    try:
        return os.access(HOSTS, os.W_OK)
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _hosts_writable(), reason="/etc/hosts is not writable (not root)")


class Hosts:
    """Lines for one unique name in /etc/hosts; `set(*ips)` replaces them."""

    def __init__(self):
        self.name = "baton-dns-test-%s.invalid" % secrets.token_hex(6)
        with open(HOSTS, "rb") as f:
            self.original = f.read()

    def _write(self, ips):
        with open(HOSTS, "rb") as f:
            lines = f.read().splitlines(True)
        keep = [l for l in lines if self.name.encode() not in l]
        if keep and not keep[-1].endswith(b"\n"):
            keep[-1] += b"\n"
        add = [("%s %s\n" % (ip, self.name)).encode() for ip in ips]
        # in place (the file may be a bind mount: no rename)
        with open(HOSTS, "r+b") as f:
            f.seek(0)
            f.write(b"".join(keep + add))
            f.truncate()

    def set(self, *ips):
        self._write(ips)

    def restore(self):
        with open(HOSTS, "rb") as f:
            lines = f.read().splitlines(True)
        if any(self.name.encode() in l for l in lines):
            with open(HOSTS, "r+b") as f:
                f.seek(0)
                f.write(self.original)
                f.truncate()


@pytest.fixture
def hosts():
    h = Hosts()
    try:
        yield h
    finally:
        h.restore()
        with open(HOSTS, "rb") as f:
            assert f.read() == h.original, "/etc/hosts restored exactly"


def eventually(fn, timeout=8.0, step=0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(step)
    return last


def make_env(tmp_path, name, port, interval=1):
    env = ServeEnv(tmp_path, free_port())
    env.config["upstreams"].append({"name": "named", "url": "http://%s:%d" % (name, port),
                                    "identity": "none", "timeout_ms": 3000,
                                    "resolve_interval_s": interval})
    env.write_config()
    pols = {
        "named": {"route": {"host": "*", "path_prefix": "/named/"}, "upstream": "named",
                  "callers": [{"issuer": "test", "claims": {"sub": SUB}}],
                  "allow": [{"methods": ["GET", "POST"], "paths": ["/**"]}]},
    }
    env.write_policies(pols)
    return env


def served_by(env, path="/named/x", method="GET", body=None):
    st, _, b = env.request(method, path, token=env.token(), body=body)
    return st, b


def test_address_change_is_followed_within_the_interval(tmp_path, hosts):
    port = free_port()
    a = Upstream(host="127.0.0.2", port=port).start()
    b = Upstream(host="127.0.0.3", port=port).start()
    hosts.set("127.0.0.2")
    env = make_env(tmp_path, hosts.name, port, interval=1)
    env.start()
    try:
        for _ in range(3):
            assert served_by(env)[0] == 200
        assert len(a.log) == 3 and len(b.log) == 0
        hosts.set("127.0.0.3")
        t0 = time.monotonic()

        def moved():
            st, _ = served_by(env)
            return st == 200 and len(b.log) > 0
        assert eventually(moved, timeout=6), "the new address is used"
        took = time.monotonic() - t0
        # the interval (1 s) plus a margin for a loaded machine; without the
        # refresh the old address would be used forever
        assert took < 1 + 3, "followed within the interval: %.2f s" % took
        n_a = len(a.log)
        for _ in range(5):
            assert served_by(env)[0] == 200
        assert len(a.log) == n_a, "the old address gets no new request"
        assert "resolves to 1 address: 127.0.0.3:%d" % port in env.log_text()
    finally:
        assert env.stop() == 0
        a.stop()
        b.stop()


def test_every_address_used_and_dead_first_fails_over(tmp_path, hosts):
    port = free_port()
    live = Upstream(host="127.0.0.3", port=port).start()
    # 127.0.0.2:port has no listener: connect() is refused there
    hosts.set("127.0.0.2", "127.0.0.3")
    env = make_env(tmp_path, hosts.name, port, interval=30)
    env.start()
    try:
        for i in range(10):
            st, _ = served_by(env, path="/named/get%d" % i)
            assert st == 200
        for i in range(10):
            st, _ = served_by(env, path="/named/post%d" % i, method="POST", body=b"x" * 1000)
            assert st == 200, "a POST fails over too: nothing was sent before the refusal"
        assert len(live.log) == 20
        assert all(r["body_len"] == 1000 for r in live.log if r["method"] == "POST"), live.log[-1]
    finally:
        assert env.stop() == 0
        live.stop()
    recs = [r for r in env.audit_records() if r.get("step") == "named"]
    assert len(recs) == 20 and all(r["status"] == 200 for r in recs)


def test_round_robin_spreads_over_every_address(tmp_path, hosts):
    port = free_port()
    a = Upstream(host="127.0.0.2", port=port).start()
    b = Upstream(host="127.0.0.3", port=port).start()
    hosts.set("127.0.0.2", "127.0.0.3")
    env = make_env(tmp_path, hosts.name, port, interval=30)
    env.start()
    try:
        for i in range(20):
            assert served_by(env)[0] == 200
        assert len(a.log) == 10 and len(b.log) == 10, (len(a.log), len(b.log))
    finally:
        assert env.stop() == 0
        a.stop()
        b.stop()


def test_unresolved_at_start_serves_502_then_follows(tmp_path, hosts):
    port = free_port()
    up = Upstream(host="127.0.0.2", port=port).start()
    env = make_env(tmp_path, hosts.name, port, interval=1)
    env.start()  # waits for /readyz 200 and the port: one bad name keeps neither closed
    try:
        st, _, body = env.admin("/readyz")
        doc = json.loads(body)
        assert st == 200 and doc["ready"] is True
        bad = doc["upstreams"]["unresolved"]
        assert doc["upstreams"]["degraded"] is True
        assert [u["name"] for u in bad] == ["named"] and bad[0]["host"] == hosts.name
        assert hosts.name in bad[0]["error"]

        st, hdrs, body = env.request("GET", "/named/x", token=env.token())
        assert st == 502 and json.loads(body)["error"] == "bad_gateway"
        assert "retry-after" not in hdrs

        def audited():
            recs = [r for r in env.audit_records() if r.get("step") == "named"]
            return recs and recs[-1]
        rec = eventually(audited, timeout=3)
        assert rec["reason"] == "upstream_unresolved" and rec["status"] == 502
        line = [json.loads(l) for l in env.log_text().splitlines()
                if '"reason":"upstream_unresolved"' in l][0]
        assert line["upstream"] == "named" and hosts.name in line["error"]

        hosts.set("127.0.0.2")
        assert eventually(lambda: served_by(env)[0] == 200, timeout=6), env.log_text()
        doc = json.loads(env.admin("/readyz")[2])
        assert doc["upstreams"]["unresolved"] == [] and doc["upstreams"]["degraded"] is False
        assert len(up.log) >= 1
    finally:
        assert env.stop() == 0
        up.stop()


def test_failed_refresh_keeps_the_last_good_addresses(tmp_path, hosts):
    port = free_port()
    up = Upstream(host="127.0.0.2", port=port).start()
    hosts.set("127.0.0.2")
    env = make_env(tmp_path, hosts.name, port, interval=1)
    env.start()
    try:
        assert served_by(env)[0] == 200
        hosts.set()  # the name stops resolving
        time.sleep(2.5)  # two refreshes fail
        for _ in range(3):
            assert served_by(env)[0] == 200, "the last good addresses are kept"
        assert "cannot resolve %s" % hosts.name in env.log_text()
        assert "keeping the last good addresses" in env.log_text()
        doc = json.loads(env.admin("/readyz")[2])
        assert doc["upstreams"]["unresolved"] == []
    finally:
        assert env.stop() == 0
        up.stop()


def test_reload_keeps_the_good_addresses_of_a_name_that_stopped_resolving(tmp_path, hosts):
    port = free_port()
    up = Upstream(host="127.0.0.2", port=port).start()
    hosts.set("127.0.0.2")
    env = make_env(tmp_path, hosts.name, port, interval=30)
    env.start()
    try:
        assert served_by(env)[0] == 200
        hosts.set()  # the name stops resolving, then the config reloads
        env.signal(signal.SIGHUP)

        def reloaded():
            doc = json.loads(env.admin("/readyz")[2])
            return doc["config"]["generation"] == 2
        assert eventually(reloaded, timeout=5), env.log_text()
        assert served_by(env)[0] == 200, "the new snapshot kept the last good addresses"
        doc = json.loads(env.admin("/readyz")[2])
        assert doc["upstreams"]["unresolved"] == []
        assert "keeping the last good addresses" in env.log_text()
        assert len(up.log) == 2
    finally:
        assert env.stop() == 0
        up.stop()

"""Cloud Run-native serving (issue 12), end to end against the real binary.

Cloud Run's default startup probe is a TCP connect to the serving port, after
which the instance gets traffic. So: the serving port refuses connections until
baton is ready (or ready_timeout_ms passed), health_path answers the /readyz
verdict on the serving port, reloads never close the port, and baton's own
failures are retryable 503s."""
import errno
import re
import json
import signal
import socket
import time

import pytest

from idp import AwsIssuer
from serve_env import ServeEnv, eventually

ROLE = "arn:aws:iam::123456789012:role/sfn-billing"
AUD = "https://gateway.example.com"


@pytest.fixture
def aws():
    a = AwsIssuer().start()
    yield a
    a.stop()


def issuer_cfg(idp, name="aws"):
    return {"name": name, "issuer": idp.issuer, "discovery": True, "audiences": [AUD],
            "algorithms": ["RS256", "ES384"], "allow_http": True, "refresh_min_s": 1,
            "fetch_timeout_ms": 1000, "leeway_s": 5}


def step(prefix, issuer="aws"):
    return {"route": {"host": "*", "path_prefix": prefix}, "upstream": "echo",
            "callers": [{"issuer": issuer, "claims": {"sub": ROLE}}],
            "allow": [{"methods": ["GET", "POST"], "paths": ["/**"]}]}


def make_env(tmp_path, up, issuers, pols, **extra):
    extra = dict(extra)
    extra["issuers"] = issuers
    return ServeEnv(tmp_path, up.port, extra=extra, policies=pols)


def connect_errno(port):
    """0 when a TCP connect succeeds, else its errno (ECONNREFUSED: not listening)."""
    s = socket.socket()
    s.settimeout(1)
    try:
        return s.connect_ex(("127.0.0.1", port))
    finally:
        s.close()


def get(env, path, token=None, method="GET"):
    return env.request(method, path, token=token)


def test_port_closed_until_issuer_keys_load(tmp_path, up, aws):
    aws.down("error")
    env = make_env(tmp_path, up, [issuer_cfg(aws)], {"aws": step("/aws/")},
                   health_path="/healthz")
    env.start(wait=False)
    try:
        assert eventually(lambda: aws.count() >= 1, 10), "the first fetch was attempted"
        # a TCP connect (Cloud Run's default startup probe) is refused: no traffic yet
        for _ in range(10):
            assert connect_errno(env.port) == errno.ECONNREFUSED
            time.sleep(0.1)
        st, _, body = env.admin("/readyz")
        assert st == 503 and json.loads(body)["keys"]["ready"] is False
        assert eventually(lambda: "not ready after" in env.log_text(), 3), \
            "while waiting, the log says so"
        line = [json.loads(l) for l in env.log_text().splitlines()
                if "not ready after" in l][0]
        assert "issuer aws keys" in line["missing"] and "503" in line["missing"], \
            "it names what it waits for and why: " + line["missing"]
        aws.up()
        t_up = time.monotonic()
        assert eventually(env.listening, 15), "the port opens once the keys load"
        opened_s = time.monotonic() - t_up
        st, hd, body = get(env, "/aws/run", aws.mint(role_arn=ROLE, audience=AUD))
        assert st == 200, "served as soon as it accepts"
        st, hd, body = get(env, "/healthz")
        assert st == 200 and hd["content-type"] == "application/json"
        assert json.loads(body)["ready"] is True
        assert "ready after" in env.log_text()
    finally:
        assert env.stop() == 0
    print("port opened %.2f s after the issuer came back (fetch retry backoff)" % opened_s)
    assert not [r for r in env.audit_records() if r["request"]["path"] == "/healthz"], \
        "a probe is not an audited request"


def test_ready_timeout_opens_and_callers_get_retryable_503(tmp_path, up, aws):
    never = AwsIssuer().start()
    never.down("error")
    env = make_env(tmp_path, up, [issuer_cfg(aws), issuer_cfg(never, "never")],
                   {"aws": step("/aws/"), "never": step("/never/", "never")},
                   health_path="/ready", ready_timeout_ms=1000)
    try:
        env.start(wait=False)
        t0 = env.t_exec
        assert eventually(env.listening, 10)
        waited = time.monotonic() - t0
        assert waited >= 0.9, "closed for ready_timeout_ms (%.2f s)" % waited
        tok = never.mint(role_arn=ROLE, audience=AUD)
        st, hd, _ = get(env, "/never/run", tok)
        assert st == 503 and hd.get("retry-after") == "5" and "www-authenticate" not in hd, \
            "what is missing fails closed with a retryable status"
        assert get(env, "/aws/run", aws.mint(role_arn=ROLE, audience=AUD))[0] == 200, \
            "the issuers that did load serve"
        # health_path: the /readyz verdict and body on the serving port
        st, hd, body = get(env, "/ready?probe=1")
        doc = json.loads(body)
        st2, _, body2 = env.admin("/readyz")
        assert st == 503 and st2 == 503 and doc["ready"] is False
        assert doc.keys() == json.loads(body2).keys(), "the same document as /readyz"
        assert [i["name"] for i in doc["keys"]["issuers"] if not i["loaded"]] == ["never"]
        st, hd, body = get(env, "/ready", method="HEAD")
        assert st == 503 and body == b"" and int(hd["content-length"]) > 0
        assert get(env, "/ready", method="POST")[0] == 404, "only GET and HEAD are probes"
        # a probe and a request on one keep-alive connection
        c = env.conn()
        c.request("GET", "/ready")
        r = c.getresponse()
        r.read()
        c.request("GET", "/aws/run", headers={
            "Authorization": "Bearer " + aws.mint(role_arn=ROLE, audience=AUD)})
        r2 = c.getresponse()
        r2.read()
        c.close()
        assert r.status == 503 and r2.status == 200
        never.up()
        assert eventually(lambda: get(env, "/ready")[0] == 200, 10), "200 once ready"
        assert get(env, "/never/run", tok)[0] == 200
    finally:
        assert env.stop() == 0
        never.stop()
    log = env.log_text()
    assert "ready_timeout_ms (1000) passed" in log and "issuer never keys" in log


def test_reload_never_closes_the_port(tmp_path, up, aws):
    env = make_env(tmp_path, up, [issuer_cfg(aws)], {"aws": step("/aws/")})
    env.start()
    newcomer = AwsIssuer().start()
    newcomer.down("error")
    try:
        # a reload that adds an issuer whose keys cannot load
        env.config["issuers"] = [issuer_cfg(aws), issuer_cfg(newcomer, "newcomer")]
        env.write_config()
        env.write_policies({"aws": step("/aws/"), "newcomer": step("/new/", "newcomer")})
        refused = 0
        t_end = time.monotonic() + 1.5
        env.signal(signal.SIGHUP)
        while time.monotonic() < t_end:
            refused += connect_errno(env.port) != 0
            time.sleep(0.005)
        assert refused == 0, "no connect refused during and after the reload"
        assert eventually(lambda: "generation 2" in env.log_text(), 5)
        st, hd, _ = get(env, "/new/run", newcomer.mint(role_arn=ROLE, audience=AUD))
        assert st == 503 and hd.get("retry-after"), "the new issuer's callers: retryable 503"
        assert get(env, "/aws/run", aws.mint(role_arn=ROLE, audience=AUD))[0] == 200
    finally:
        assert env.stop() == 0
        newcomer.stop()


def test_start_to_accept_when_the_issuer_answers(tmp_path, up, aws):
    """A healthy start is not slowed by the gate: the port opens as soon as the
    key set's first fetch lands (the gate looks every 5 ms). The gate logs the
    time from its start (after config, audit log and identity set-up) to ready;
    exec to accept, which under ASan is dominated by the sanitizer's start and
    the local identity's RSA key generation, is printed for information."""
    env = make_env(tmp_path, up, [issuer_cfg(aws)], {"aws": step("/aws/")})
    env.start(wait=False)
    try:
        assert eventually(lambda: connect_errno(env.port) == 0, 10, step=0.001)
        t = time.monotonic() - env.t_exec
    finally:
        assert env.stop() == 0
    line = [json.loads(l) for l in env.log_text().splitlines() if "ready after" in l]
    assert len(line) == 1, "one line when the gate opens"
    ms = int(line[0]["message"].split("ready after ")[1].split(" ms")[0])
    assert ms < 1000, "discovery + JWKS over loopback, then open: %d ms" % ms
    print("gate start to ready: %d ms; exec to first accepted connection: %.1f ms" % (ms, t * 1000))


def second_serve(env, timeout=15):
    """Runs another `baton serve` with env's config and PORT; returns (rc, stderr)."""
    import os
    import subprocess
    from conftest import BATON
    e = dict(os.environ, PORT=str(env.port))
    e.pop("BATON_CONFIG", None)
    # its own admin port: only the serving address is shared
    cfg = dict(env.config)
    cfg["admin_listen"] = ""
    path = env.dir / "second.json"
    path.write_text(json.dumps(cfg))
    try:
        p = subprocess.run([str(BATON), "serve", "-c", str(path)], capture_output=True,
                           text=True, env=e, timeout=timeout)
    except subprocess.TimeoutExpired as ex:
        return None, (ex.stderr or b"").decode(errors="replace")
    return p.returncode, p.stderr


def test_second_process_on_the_address_exits_1(tmp_path, up, aws):
    env = make_env(tmp_path, up, [issuer_cfg(aws)], {"aws": step("/aws/")})
    env.start()
    try:
        rc, err = second_serve(env)
        assert rc == 1 and "address already in use" in err, (rc, err)
        assert get(env, "/aws/run", aws.mint(role_arn=ROLE, audience=AUD))[0] == 200, \
            "the first keeps serving, alone"
    finally:
        assert env.stop() == 0
    # the lock dies with its process: the address is free again at once
    (tmp_path / "again").mkdir()
    env2 = make_env(tmp_path / "again", up, [issuer_cfg(aws)], {"aws": step("/aws/")})
    env2.port = env.port
    env2.start()
    assert env2.stop() == 0


def test_second_process_while_the_first_is_not_ready(tmp_path, up, aws):
    """The first baton keeps its port closed (issuer down): its sockets are bound
    but not listening, which SO_REUSEADDR alone would not see; the lock does."""
    aws.down("error")
    env = make_env(tmp_path, up, [issuer_cfg(aws)], {"aws": step("/aws/")})
    env.start(wait=False)
    try:
        assert eventually(lambda: aws.count() >= 1, 10)
        assert connect_errno(env.port) == errno.ECONNREFUSED
        rc, err = second_serve(env)
        assert rc == 1 and "address already in use" in err, (rc, err)
    finally:
        assert env.stop() == 0


def test_foreign_reuseport_listener_makes_serve_exit_1(tmp_path, up, aws):
    """Another program listening with SO_REUSEPORT under our user: baton's own
    SO_REUSEPORT bind would succeed and share the port; the probe refuses."""
    env = make_env(tmp_path, up, [issuer_cfg(aws)], {"aws": step("/aws/")})
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", env.port))
    s.listen(8)
    try:
        rc, err = second_serve(env)
        assert rc == 1 and "address already in use" in err, (rc, err)
    finally:
        s.close()


def test_rotated_key_is_served_on_its_first_token(tmp_path, up, aws):
    """A key the issuer publishes after baton started: its first token waits for
    the refresh it triggers and is decided on the new key set (200, not 401)."""
    env = make_env(tmp_path, up, [issuer_cfg(aws)], {"aws": step("/aws/")})
    env.start()
    try:
        assert get(env, "/aws/run", aws.mint(role_arn=ROLE, audience=AUD))[0] == 200
        before = aws.count("jwks")
        new = aws.rotate("ES384")
        st, _, _ = get(env, "/aws/run", aws.mint(role_arn=ROLE, audience=AUD, kid=new.kid))
        assert st == 200, "the first token of a rotated-in key is served"
        assert aws.count("jwks") == before + 1, "one refresh"
        new2 = aws.rotate("RS256")
        st, _, _ = get(env, "/aws/run", aws.mint(role_arn=ROLE, audience=AUD, kid=new2.kid))
        assert st == 200, "a second rotation right after the first: that refresh changed the set"
    finally:
        assert env.stop() == 0
    assert [r["reason"] for r in env.audit_records()] == ["allowed"] * 3


def test_parked_requests_share_one_fetch_and_the_worker_never_blocks(tmp_path, up, aws):
    import threading
    cfg = issuer_cfg(aws)
    cfg["fetch_timeout_ms"] = 5000
    env = make_env(tmp_path, up, [cfg], {"aws": step("/aws/")})  # one worker
    env.start()
    try:
        known = aws.mint(role_arn=ROLE, audience=AUD)
        assert get(env, "/aws/run", known)[0] == 200
        new = aws.rotate("ES384")
        aws.hang_s = 0.5  # discovery and JWKS each answer after 0.5 s
        aws.down("hang")
        before_jwks, before_disc = aws.count("jwks"), aws.count("discovery")
        results = []
        t0 = time.monotonic()

        def one():
            results.append(get(env, "/aws/run", aws.mint(role_arn=ROLE, audience=AUD, kid=new.kid))[0])
        threads = [threading.Thread(target=one) for _ in range(16)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        t1 = time.monotonic()
        st = get(env, "/aws/run", known)[0]
        known_s = time.monotonic() - t1
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        aws.up()
        assert st == 200 and known_s < 0.5, \
            "while 16 requests are parked, the worker serves others (%.3f s)" % known_s
        assert results == [200] * 16, results
        assert aws.count("jwks") == before_jwks + 1 and aws.count("discovery") == before_disc + 1, \
            "the parked requests shared one refresh"
        assert elapsed < 4, "decided when the refresh landed (%.2f s)" % elapsed
    finally:
        assert env.stop() == 0


def test_park_is_bounded_by_fetch_timeout(tmp_path, up, aws):
    env = make_env(tmp_path, up, [issuer_cfg(aws)], {"aws": step("/aws/")})  # fetch_timeout 1 s
    env.start()
    try:
        new = aws.rotate("ES384")
        aws.hang_s = 4
        aws.down("hang")
        t0 = time.monotonic()
        st, hd, _ = get(env, "/aws/run", aws.mint(role_arn=ROLE, audience=AUD, kid=new.kid))
        waited = time.monotonic() - t0
        aws.up()
        assert st == 503 and hd.get("retry-after") == "5", \
            "a refresh that outlives fetch_timeout_ms: our failure, retryable"
        assert 0.8 < waited < 3, "parked for fetch_timeout_ms (%.2f s)" % waited
    finally:
        assert env.stop() == 0
    recs = env.audit_records()
    assert [(r["reason"], r["decision"]) for r in recs] == [("keys_unavailable", "error")]


def upstream_lines(env):
    return [json.loads(l) for l in env.log_text().splitlines()
            if '"reason":"upstream_' in l]


def test_502_and_504_log_lines_name_upstream_address_and_error(tmp_path, up):
    env = ServeEnv(tmp_path, up.port)
    env.start()
    try:
        dead = [u for u in env.config["upstreams"] if u["name"] == "dead"][0]
        dead_port = int(dead["url"].rsplit(":", 1)[1])
        assert env.request("GET", "/dead/x", token=env.token())[0] == 502
        assert env.request("GET", "/slow/x?delay_ms=2000", token=env.token())[0] == 504
        import threading
        tok = env.token()
        t0 = time.monotonic()

        def burst():
            for _ in range(15):
                env.request("GET", "/dead/x", token=tok)
        threads = [threading.Thread(target=burst) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
    finally:
        assert env.stop() == 0
    lines = upstream_lines(env)
    refused = lines[0]
    assert refused["upstream"] == "dead" and refused["address"] == "127.0.0.1:%d" % dead_port
    assert refused["error"] == "connect: Connection refused", refused
    assert refused["reason"] == "upstream_error" and refused["request_id"]
    assert "upstream dead (127.0.0.1:%d) failed: connect: Connection refused" % dead_port \
        in refused["message"]
    timeout = lines[1]
    assert timeout["reason"] == "upstream_timeout" and timeout["upstream"] == "echo"
    assert timeout["address"] == "127.0.0.1:%d" % up.port
    assert timeout["error"] == "timeout: no response head after 500 ms without progress", timeout
    bound = 2 + 20 * (int(elapsed) + 2)  # at most 20 such lines a second per worker
    assert len(lines) < 122 and len(lines) <= bound, \
        "still rate-limited: %d lines for 122 failures in %.1f s" % (len(lines), elapsed)


def trace_env(tmp_path, up, google, env_vars=None):
    from serve_env import default_policies
    return ServeEnv(tmp_path, up.port, policies=default_policies(None), env=env_vars,
                    extra={"access_log": True,
                           "google": {"credentials": "metadata", "metadata_host": google.host,
                                      "iamcredentials_url": google.url, "timeout_ms": 1000}})


@pytest.mark.parametrize("from_env", [False, True], ids=["metadata_project", "env_project"])
def test_trace_fields_in_log_lines(tmp_path, up, from_env):
    from google_standins import GoogleStandins
    google = GoogleStandins().start()
    google.project_id = "billing-prod"
    env = trace_env(tmp_path, up, google,
                    {"GOOGLE_CLOUD_PROJECT": "from-env-proj"} if from_env else None)
    project = "from-env-proj" if from_env else "billing-prod"
    try:
        env.start()
        assert eventually(lambda: from_env or google.calls("project") == 1, 5)
        tp_in = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        st, _, body = env.request("GET", "/google/t", token=env.token(),
                                  headers={"traceparent": tp_in, "X-Request-Id": "tr-1"})
        assert st == 200
        fwd = [v for n, v in json.loads(body)["headers"] if n.lower() == "traceparent"][0]
        st, _, _ = env.request("GET", "/dead/t", token=env.token(), headers={"X-Request-Id": "tr-2"})
        assert st == 502
    finally:
        assert env.stop() == 0
        google.stop()
    lines = [json.loads(l) for l in env.log_text().splitlines() if l.startswith("{")]
    acc = [l for l in lines if l.get("client_request_id") == "tr-1" and "httpRequest" in l][0]
    assert acc["logging.googleapis.com/trace"] == \
        "projects/%s/traces/4bf92f3577b34da6a3ce929d0e0e4736" % project
    assert acc["logging.googleapis.com/spanId"] == fwd.split("-")[2], \
        "the log's span is the parent the upstream saw"
    assert acc["logging.googleapis.com/trace_sampled"] is True
    warn = [l for l in lines if l.get("client_request_id") == "tr-2" and l.get("reason") == "upstream_error"][0]
    assert re.fullmatch(r"projects/%s/traces/[0-9a-f]{32}" % project,
                        warn["logging.googleapis.com/trace"]), "a new trace, on the 502 line too"
    assert warn["logging.googleapis.com/trace_sampled"] is False
    assert google.calls("project") == (0 if from_env else 1), "fetched once, at start"
    assert google.problems() == []


def test_metrics_pass_promtool(tmp_path, up):
    """A real scrape after requests of every kind passes `promtool check metrics`
    (Debian's prometheus package), with the reason and step labels, the process
    metrics, build info and the audit counters."""
    import shutil
    import subprocess
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (apt-get install prometheus; scripts/deps.sh)")
    env = ServeEnv(tmp_path, up.port)
    env.start()
    try:
        tok = env.token()
        assert env.request("GET", "/api/x", token=tok)[0] == 200
        assert env.request("GET", "/other/x", token=tok)[0] == 403
        assert env.request("GET", "/api/x")[0] == 401
        assert env.request("GET", "/nowhere", token=tok)[0] == 404
        assert env.request("GET", "/dead/x", token=tok)[0] == 502
        st, _, body = env.admin("/metrics")
        assert st == 200
    finally:
        assert env.stop() == 0
    text = body.decode()
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    for want in [
            'baton_requests_total{step="api",decision="allow",reason="allowed",status="200"} 1',
            'baton_requests_total{step="other",decision="deny",reason="no_caller_match",status="403"} 1',
            'baton_requests_total{step="api",decision="deny",reason="token_missing",status="401"} 1',
            'baton_requests_total{step="_none",decision="deny",reason="no_route",status="404"} 1',
            'baton_requests_total{step="dead",decision="error",reason="upstream_error",status="502"} 1',
            'baton_upstream_duration_seconds_count{step="api"} 1']:
        assert want in text, want
    for family in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                   "process_max_fds", "process_start_time_seconds", "baton_audit_checkpoints_total",
                   "baton_audit_bytes_total", "baton_audit_fsyncs_total",
                   "baton_audit_rotations_total"]:
        assert re.search(r"^%s [0-9.e+]+$" % family, text, re.M), family
    assert re.search(r'^baton_build_info\{version="[^"]+",openssl="[^"]+",libevent="[^"]+"\} 1$',
                     text, re.M)
    start = float(re.search(r"^process_start_time_seconds (\S+)$", text, re.M).group(1))
    assert abs(start - time.time()) < 120, "the start time is this process's"

"""Span export (issue 12 point 7): with tracing.otlp_endpoint set, baton's
request span and its upstream child arrive at a loopback OTLP/HTTP JSON
receiver (otlp_receiver.py, written from the spec), only for sampled traces,
and a receiver that fails or is gone never touches a response."""
import json
import re
import signal
import time

import pytest

from conftest import run_baton
from otlp_receiver import OtlpReceiver
from serve_env import ServeEnv, free_port, eventually

TP_IN = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def rx():
    r = OtlpReceiver().start()
    yield r
    r.stop()


def env_with(tmp_path, up, endpoint, **tracing):
    t = {"otlp_endpoint": endpoint, "schedule_delay_ms": 100}
    t.update(tracing)
    return ServeEnv(tmp_path, up.port, extra={"tracing": t})


def metric(env, name):
    _, _, body = env.admin("/metrics")
    m = re.search(r"^%s (\S+)$" % re.escape(name), body.decode(), re.M)
    return float(m.group(1)) if m else None


def forwarded_tp(body):
    return [v for n, v in json.loads(body)["headers"] if n.lower() == "traceparent"][0]


def test_spans_of_an_allowed_and_a_denied_request(tmp_path, up, rx):
    env = env_with(tmp_path, up, rx.url).start()
    try:
        tok = env.token()
        t0 = time.time_ns()
        st, _, body = env.request("POST", "/api/orders?x=1", token=tok, body=b"hi",
                                  headers={"traceparent": TP_IN})
        assert st == 200
        fwd = forwarded_tp(body)
        st, _, _ = env.request("GET", "/other/x", token=tok,
                               headers={"traceparent": "00-%s-00f067aa0ba902b7-01" % ("ab" * 16)})
        assert st == 403
        t1 = time.time_ns()
        assert eventually(lambda: len(rx.received()) >= 3), rx.received()
        assert eventually(lambda: metric(env, "baton_trace_spans_exported_total") == 3)
    finally:
        assert env.stop() == 0
    assert rx.problems() == []
    spans = rx.received()
    assert len(spans) == 3, spans
    for s in spans:
        assert s["resource"]["service.name"] == "baton"
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                            s["resource"]["service.instance.id"])
        assert s["scope"] == "baton"
        assert t0 <= s["start"] <= s["end"] <= t1
    allowed = [s for s in spans if s["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"]
    server = [s for s in allowed if s["kind"] == 2][0]
    client = [s for s in allowed if s["kind"] == 3][0]
    assert server["parentSpanId"] == "00f067aa0ba902b7", "the caller's span is the parent"
    assert server["spanId"] == fwd.split("-")[2], "the span the upstream saw as its parent"
    assert fwd.endswith("-01")
    assert server["attributes"] == {
        "baton.step": "api", "baton.decision": "allow", "baton.reason": "allowed",
        "http.request.method": "POST", "url.path": "/api/orders", "http.response.status_code": 200}
    assert server["name"] == "POST api" and server["status"] == 0
    assert client["parentSpanId"] == server["spanId"], "the upstream exchange is a child"
    assert client["spanId"] != server["spanId"]
    assert client["attributes"] == {
        "baton.upstream": "echo", "server.address": "127.0.0.1", "server.port": up.port,
        "http.request.method": "POST", "http.response.status_code": 200}
    assert server["start"] <= client["start"] <= client["end"] <= server["end"]
    denied = [s for s in spans if s["traceId"] == "ab" * 16]
    assert len(denied) == 1, "a denied request has no upstream span"
    assert denied[0]["kind"] == 2 and denied[0]["attributes"] == {
        "baton.step": "other", "baton.decision": "deny", "baton.reason": "no_caller_match",
        "http.request.method": "GET", "url.path": "/other/x", "http.response.status_code": 403}


def test_sampling_new_traces_and_unsampled_callers(tmp_path, up, rx):
    env = env_with(tmp_path, up, rx.url).start()
    try:
        tok = env.token()
        st, _, body = env.request("GET", "/api/new", token=tok)
        assert st == 200
        new_tp = forwarded_tp(body)
        assert new_tp.endswith("-01"), "exporting: a new trace is sampled"
        unsampled = "00-%s-00f067aa0ba902b7-00" % ("cd" * 16)
        st, _, body = env.request("GET", "/api/quiet", token=tok,
                                  headers={"traceparent": unsampled})
        assert st == 200
        assert forwarded_tp(body).endswith("-00"), "the caller's decision is kept"
        # a sampled request after it, so "nothing for the unsampled one" is not just "not yet"
        st, _, _ = env.request("GET", "/api/last", token=tok, headers={"traceparent": TP_IN})
        assert eventually(lambda: any(s["traceId"] == TP_IN[3:35] for s in rx.received()))
        time.sleep(0.3)
    finally:
        assert env.stop() == 0
    assert rx.problems() == []
    spans = rx.received()
    assert not [s for s in spans if s["traceId"] == "cd" * 16], "an unsampled trace exports nothing"
    new = [s for s in spans if s["traceId"] == new_tp.split("-")[1]]
    assert len(new) == 2
    server = [s for s in new if s["kind"] == 2][0]
    assert server["parentSpanId"] == "" and server["spanId"] == new_tp.split("-")[2]


@pytest.mark.parametrize("mode", ["fail", "closed"])
def test_a_failing_receiver_never_touches_responses(tmp_path, up, rx, mode):
    if mode == "closed":
        endpoint = "http://127.0.0.1:%d" % free_port()
    else:
        rx.mode = "fail"
        endpoint = rx.url
    env = env_with(tmp_path, up, endpoint).start()
    try:
        tok = env.token()
        for i in range(5):
            t = time.monotonic()
            st, _, _ = env.request("GET", "/api/x%d" % i, token=tok, headers={"traceparent": TP_IN})
            assert st == 200 and time.monotonic() - t < 1.0
            time.sleep(0.15)
        # 500 is not retryable: dropped at once; a closed port is retried 3 times (3.5 s)
        assert eventually(lambda: metric(env, 'baton_trace_spans_dropped_total{cause="export_failed"}')
                          == 10, 10), env.admin("/metrics")[2].decode()
        assert metric(env, "baton_trace_export_failures_total") >= 1
        assert metric(env, "baton_trace_spans_exported_total") == 0
    finally:
        assert env.stop() == 0
    assert rx.problems() == []
    if mode == "fail":
        assert rx.posts >= 1, "the receiver was asked"
    assert "trace export to" in env.log_text()


def test_full_queue_drops_and_counts(tmp_path, up, rx):
    rx.mode = "hang"
    rx.hang_s = 4.0
    env = env_with(tmp_path, up, rx.url, max_queue_size=16, max_export_batch_size=16,
                   export_timeout_ms=8000).start()
    try:
        tok = env.token()
        worst = 0.0
        for i in range(60):
            t = time.monotonic()
            st, _, _ = env.request("GET", "/other/x%d" % i, token=tok,
                                   headers={"traceparent": TP_IN})
            worst = max(worst, time.monotonic() - t)
            assert st == 403
        assert worst < 1.0, "a hung collector never slows a request (%.3f s)" % worst
        dropped = metric(env, 'baton_trace_spans_dropped_total{cause="queue_full"}')
        assert dropped >= 60 - 32, dropped  # one batch in flight, one queue full
    finally:
        rx.hang_s = 0
        env.stop()


def test_shutdown_flushes_what_is_queued(tmp_path, up, rx):
    env = env_with(tmp_path, up, rx.url, schedule_delay_ms=60000).start()
    tok = env.token()
    for i in range(3):
        assert env.request("GET", "/api/f%d" % i, token=tok, headers={"traceparent": TP_IN})[0] == 200
    time.sleep(0.5)
    assert rx.received() == [], "a long schedule_delay_ms holds the batch"
    t = time.monotonic()
    assert env.stop() == 0
    assert time.monotonic() - t < 5
    assert rx.problems() == []
    assert len(rx.received()) == 6, "SIGTERM sends what was queued"


def test_check_validates_the_tracing_key(tmp_path, up):
    env = ServeEnv(tmp_path, up.port)
    cfg = tmp_path / "baton.json"
    cases = [
        ({"otlp_endpoint": "http://127.0.0.1:4318"}, 0, None),
        ({"otlp_endpoint": "https://otel.example.com/otlp", "max_queue_size": 4096,
          "max_export_batch_size": 1024, "schedule_delay_ms": 1000, "export_timeout_ms": 5000},
         0, None),
        ({"otlp_endpoint": "http://collector.example.com:4318"}, 1, "loopback"),
        ({"otlp_endpoint": "ftp://127.0.0.1/"}, 1, "otlp_endpoint"),
        ({}, 1, "otlp_endpoint"),
        ({"otlp_endpoint": "http://127.0.0.1:4318", "max_queue_size": 16,
          "max_export_batch_size": 32}, 1, "max_export_batch_size"),
        ({"otlp_endpoint": "http://127.0.0.1:4318", "schedule_delay_ms": 0}, 1, "schedule_delay_ms"),
        ({"otlp_endpoint": "http://127.0.0.1:4318", "sample_rate": 1}, 1, "sample_rate"),
    ]
    for tracing, rc, word in cases:
        env.config["tracing"] = tracing
        env.write_config()
        r = run_baton("check", "-c", cfg)
        assert r.returncode == rc, (tracing, r.stdout, r.stderr)
        if word:
            assert word in r.stdout + r.stderr, (tracing, r.stdout + r.stderr)


def test_reload_keeps_the_tracing_it_started_with(tmp_path, up, rx):
    env = env_with(tmp_path, up, rx.url).start()
    try:
        env.config["tracing"]["otlp_endpoint"] = "http://127.0.0.1:%d" % free_port()
        env.write_config()
        env.signal(signal.SIGHUP)
        assert eventually(lambda: "tracing section takes effect at the next restart"
                          in env.log_text()), env.log_text()
        assert env.request("GET", "/api/r", token=env.token(),
                           headers={"traceparent": TP_IN})[0] == 200
        assert eventually(lambda: len(rx.received()) == 2), "still exported where it started"
    finally:
        assert env.stop() == 0

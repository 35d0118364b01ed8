"""The deployment examples under docker/ stay true: their configs and policies
pass `baton check` in place (same layout as the image), the Cloud Run YAML
wires what docs/deploy.md says, the Dockerfile builds with the project's own
commands and ships only runtime libraries, and the AWS side sends what the
policies require."""
import json

import pytest

from conftest import SRCDIR, run_baton

EX = SRCDIR / "docker" / "examples"


@pytest.mark.parametrize("shape", ["gateway", "sidecar"])
def test_example_config_passes_check(shape):
    r = run_baton("check", "-c", EX / shape / "conf" / "baton.json")
    assert r.returncode == 0, r.stdout + r.stderr


def test_gateway_uses_serverless_header_and_impersonation():
    cfg = json.loads((EX / "gateway" / "conf" / "baton.json").read_text())
    for up in cfg["upstreams"]:
        assert up["identity"] == "google" and up["token_header"] == "x-serverless-authorization"
    pol = json.loads((EX / "gateway" / "policies" / "billing-reconcile.json").read_text())
    assert pol["service_account"].endswith(".iam.gserviceaccount.com")
    assert "X-Sfn-Execution" in pol["require_headers"]


def test_sidecar_upstream_is_localhost_without_identity():
    cfg = json.loads((EX / "sidecar" / "conf" / "baton.json").read_text())
    up, = cfg["upstreams"]
    assert up["identity"] == "none" and up["url"].startswith("http://127.0.0.1:")


def test_cloud_run_yaml():
    yaml = pytest.importorskip("yaml")
    side = yaml.safe_load((EX / "cloudrun-sidecar.yaml").read_text())
    spec = side["spec"]["template"]["spec"]
    names = [c["name"] for c in spec["containers"]]
    assert names == ["baton", "app", "collector"], "baton is the ingress (first) container"
    assert [c for c in spec["containers"] if c.get("ports")] == [spec["containers"][0]], \
        "only baton has a port"
    deps = json.loads(side["spec"]["template"]["metadata"]["annotations"]
                      ["run.googleapis.com/container-dependencies"])
    assert deps == {"baton": ["app"], "collector": ["baton"]}
    gw = yaml.safe_load((EX / "cloudrun-gateway.yaml").read_text())
    assert gw["spec"]["template"]["spec"]["serviceAccountName"].startswith("baton-gateway@")


def test_dockerfile_stages():
    text = (SRCDIR / "docker" / "Dockerfile").read_text()
    assert "FROM debian:12 AS build" in text and "sh scripts/deps.sh" in text
    assert "autoreconf -fi" in text and "./configure" in text
    runtime = text.split("FROM debian:12-slim", 1)[1]
    for lib in ("libevent-2.1-7", "libevent-pthreads-2.1-7", "libevent-openssl-2.1-7", "libssl3",
                "libcurl4", "libjansson4", "libjwt0", "ca-certificates"):
        assert lib in runtime
    assert "-dev" not in runtime, "no build packages in the runtime stage"
    assert "USER 10001" in runtime and "PORT=8080" in runtime


def test_step_functions_sends_execution_header():
    asl = json.loads((EX / "aws" / "state-machine.asl.json").read_text())
    task = asl["States"][asl["StartAt"]]
    assert task["Resource"] == "arn:aws:states:::http:invoke"
    p = task["Parameters"]
    assert p["Authentication"]["ConnectionArn"].startswith("arn:aws:events:")
    assert p["Headers"]["X-Sfn-Execution.$"] == "$$.Execution.Id"


def test_iam_bindings_script_grants_both_roles():
    text = (EX / "iam-bindings.sh").read_text()
    assert "roles/iam.serviceAccountOpenIdTokenCreator" in text and "roles/run.invoker" in text


def test_step_functions_retries_what_baton_says_is_retryable():
    """Every status baton answers with Retry-After (its own outages: 503, and the rate
    limit: 429) and the upstream's 502/504 are retried; the caller's own failures
    (401/403/404) never are, and the 503 backoff outlasts a cold instance's wait
    for its keys (ready_timeout_ms) by a margin."""
    import re
    statuses = {int(m) for m in re.findall(r'X\([A-Z_0-9]+, "[a-z_0-9]+", (\d+)\)',
                                           (SRCDIR / "src" / "reason.h").read_text())}
    assert 503 in statuses and 429 in statuses
    asl = json.loads((EX / "aws" / "state-machine.asl.json").read_text())
    retriers = asl["States"][asl["StartAt"]]["Retry"]
    retried = {}
    for r in retriers:
        for e in r["ErrorEquals"]:
            retried[e] = r
    for code in (429, 502, 503, 504):
        assert "States.Http.StatusCode.%d" % code in retried, code
    for code in (400, 401, 403, 404):
        assert "States.Http.StatusCode.%d" % code not in retried, code
    assert "States.ALL" not in retried
    r = retried["States.Http.StatusCode.503"]
    waits, wait = 0, r["IntervalSeconds"]
    for _ in range(r["MaxAttempts"]):
        waits += min(wait, r.get("MaxDelaySeconds", wait))
        wait *= r["BackoffRate"]
    assert waits >= 60, "503 retries span %d s: a cold start (30 s) plus an issuer blip" % waits


def test_startup_probes_outlast_ready_timeout():
    """baton's port opens at ready_timeout_ms at the latest; a startup probe that
    gives up earlier would stop an instance that is about to serve, and one over
    Cloud Run's 240 s cap is refused by Cloud Run."""
    yaml = pytest.importorskip("yaml")
    for shape in ("gateway", "sidecar"):
        cfg = json.loads((EX / shape / "conf" / "baton.json").read_text())
        ready_ms = cfg.get("ready_timeout_ms", 30000)
        doc = yaml.safe_load((EX / ("cloudrun-%s.yaml" % shape)).read_text())
        baton = doc["spec"]["template"]["spec"]["containers"][0]
        probe = baton["startupProbe"]
        total_s = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
        assert ready_ms / 1000 < total_s <= 240, (shape, total_s)


def _instructions(dockerfile):
    """(keyword, args) of a Dockerfile's instructions, continuation lines joined."""
    out, cur = [], ""
    for line in dockerfile.read_text().splitlines():
        if line.strip().startswith("#") and not cur:
            continue
        cur += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if line.endswith("\\"):
            continue
        if cur:
            kw, _, args = cur.partition(" ")
            out.append((kw.upper(), args.strip()))
        cur = ""
    return out


def _apply_stage(instructions, context, root):
    """Reproduces, under `root`, what the final stage's COPY steps and RUN mkdir -p
    put on the file system (COPY --from: other stages, the binary, skipped)."""
    import re
    import shutil
    for kw, args in instructions:
        if kw == "RUN" and "mkdir -p" in args:
            for path in re.findall(r"mkdir -p ((?:/\S+\s*)+)", args)[0].split():
                (root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
        elif kw == "COPY" and not args.startswith("--from"):
            src, dest = args.split()
            s, d = context / src, root / dest.lstrip("/")
            if s.is_dir():
                shutil.copytree(s, d, dirs_exist_ok=True)
            elif dest.endswith("/"):
                d.mkdir(parents=True, exist_ok=True)
                shutil.copy(s, d / s.name)
            else:
                d.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(s, d)


def test_gateway_image_layout_passes_check(tmp_path):
    """The derived gateway image, built without Docker: docker/Dockerfile's
    runtime stage (context: the repository) then docker/examples/gateway/
    Dockerfile (context: its directory) into one root, then `baton check` on it
    as the Dockerfile's RUN does. A base image that left sample policies would
    merge them with the gateway's and fail here."""
    base = _instructions(SRCDIR / "docker" / "Dockerfile")
    last_from = max(i for i, (kw, _) in enumerate(base) if kw == "FROM")
    _apply_stage(base[last_from:], SRCDIR, tmp_path)
    derived = _instructions(EX / "gateway" / "Dockerfile")
    _apply_stage(derived, EX / "gateway", tmp_path)
    run = [json.loads(args) for kw, args in derived if kw == "RUN"]
    assert run == [["/usr/local/bin/baton", "check", "-c", "/etc/baton/conf/baton.json"]]
    cfg = tmp_path / run[0][3].lstrip("/")
    pols = sorted(p.name for p in (tmp_path / "etc/baton/policies").iterdir())
    assert pols == sorted(p.name for p in (EX / "gateway" / "policies").iterdir()), \
        "exactly the gateway's own policies: %s" % pols
    r = run_baton("check", "-c", cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "usr/share/baton/examples/policies/billing-reconcile.json").exists(), \
        "the samples stay available to copy from"


def test_cloud_run_yamls_run_a_metrics_collector():
    """Nothing on Cloud Run scrapes a loopback admin port by itself: each YAML runs
    the Managed Service for Prometheus sidecar, whose RunMonitoring document
    (mounted where the sidecar reads it) scrapes baton's admin_listen /metrics."""
    yaml = pytest.importorskip("yaml")
    mon = yaml.safe_load((EX / "runmonitoring.yaml").read_text())
    assert mon["kind"] == "RunMonitoring"
    (ep,) = mon["spec"]["endpoints"]
    for shape in ("gateway", "sidecar"):
        cfg = json.loads((EX / shape / "conf" / "baton.json").read_text())
        host, port = cfg["admin_listen"].rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) == ep["port"] and ep["path"] == "/metrics"
        doc = yaml.safe_load((EX / ("cloudrun-%s.yaml" % shape)).read_text())
        tmpl = doc["spec"]["template"]
        coll = [c for c in tmpl["spec"]["containers"] if c["name"] == "collector"]
        assert len(coll) == 1 and "cloud-run-gmp-sidecar" in coll[0]["image"]
        (mount,) = coll[0]["volumeMounts"]
        assert mount["mountPath"] == "/etc/rungmp", "the sidecar reads /etc/rungmp/config.yaml"
        vol = [v for v in tmpl["spec"]["volumes"] if v["name"] == mount["name"]][0]
        assert vol["secret"]["items"][0]["path"] == "config.yaml"
        deps = json.loads(tmpl["metadata"]["annotations"]["run.googleapis.com/container-dependencies"])
        assert deps["collector"] == ["baton"]
    assert "roles/monitoring.metricWriter" in (EX / "iam-bindings.sh").read_text()

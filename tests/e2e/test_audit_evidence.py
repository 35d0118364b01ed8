"""The writer side of audit evidence (issue 14 points 2, 3, 4 and issue 10
points 3 and 11), against the real binary:

- the open record names the instance (Cloud Run variables, the metadata
  server's instance id, host, pid, start);
- heartbeat checkpoints when nothing is written, and a final checkpoint at
  SIGTERM inside the drain window;
- an unclean stop (SIGKILL under load) declared by the next open record;
  fsync "group": every response a client received has its record on disk;
- a crash between logrotate's rename and SIGUSR1: the chain continues from
  the renamed file, or the gap is declared when the file is gone;
- the witness, in a directory and in a Cloud Storage bucket (the loopback
  stand-in of tests/e2e/gcs_standin.py): create-only, outages retried,
  an existing equal object accepted, a different one left alone and counted;
- `baton check` on the witness settings.
"""
import json
import os
import signal
import subprocess
import threading
import time
import urllib.parse

import pytest

from conftest import BUILDDIR, run_baton
from gcs_standin import GcsStandin
from google_standins import GoogleStandins
from serve_env import ServeEnv, free_port
from upstream import Upstream

WRITER = BUILDDIR / "tests" / "unit" / "test_audit_writer"


@pytest.fixture
def up():
    u = Upstream().start()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    key = d / "audit.pem"
    r = run_baton("audit", "keygen", "--out", key)
    assert r.returncode == 0, r.stderr
    pub = d / "audit.pub.pem"
    pub.write_text(r.stdout.split("key_id:")[0])
    return {"key": key, "pub": pub}


def lines_of(*paths):
    out = []
    for p in paths:
        out += [json.loads(l) for l in p.read_bytes().splitlines() if l.strip()]
    return out


def raw_lines(path):
    return path.read_bytes().splitlines()


def verify(*files, pubkey=None):
    args = ["audit", "verify", *files]
    if pubkey:
        args += ["--pubkey", pubkey]
    return run_baton(*args)


def metric(env, name):
    st, _, body = env.admin("/metrics")
    assert st == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("no metric " + name)


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def load(env, stop, ids, errors, prefix):
    """Sends authorized requests on keep-alive connections until stop is set;
    adds the X-Request-Id of every 200 the client received to ids."""
    tok = env.token()
    n = 0
    while not stop.is_set():
        c = env.conn(timeout=5)
        try:
            for _ in range(50):
                if stop.is_set():
                    break
                rid = "%s%d-%d" % (prefix, threading.get_ident() % 100000, n)
                n += 1
                c.request("GET", "/api/x", headers={"Authorization": "Bearer " + tok,
                                                     "X-Request-Id": rid})
                r = c.getresponse()
                r.read()
                if r.status == 200:
                    ids.add(rid)
        except (OSError, Exception) as e:  # the SIGKILL cuts connections
            errors.append(e)
            time.sleep(0.01)
        finally:
            c.close()


# ------------------------------------------------------------ open record, heartbeat

def test_open_record_names_the_instance_and_heartbeats_sign_an_idle_log(tmp_path, up, keys):
    g = GoogleStandins().start()
    try:
        e = ServeEnv(tmp_path, upstream_port=up.port, audit_fsync="batch",
                     env={"K_SERVICE": "baton-gw", "K_REVISION": "baton-gw-00042-xyz",
                          "K_CONFIGURATION": "baton-gw"})
        e.config["google"] = {"credentials": "metadata", "metadata_host": g.host}
        e.config["audit"].update({"signing_key": str(keys["key"]), "checkpoint_interval_s": 1})
        e.config["drain_timeout_ms"] = 1000
        e.write_config()
        e.start()
        time.sleep(3.6)  # no request at all
        t0 = time.monotonic()
        assert e.stop() == 0
        stop_s = time.monotonic() - t0
    finally:
        g.stop()
    recs = lines_of(e.audit_path)
    op = recs[0]
    assert op["kind"] == "open"
    assert op["instance"] == {"service": "baton-gw", "revision": "baton-gw-00042-xyz",
                              "configuration": "baton-gw", "id": g.instance_id,
                              "host": os.uname().nodename, "pid": e.proc.pid,
                              "started": op["instance"]["started"]}
    assert op["unclean_stop"] is None
    assert g.calls("instance_id") == 1 and not g.problems()
    # no member Cloud Logging lifts out of a payload, and integers only
    for r in recs:
        assert not {"severity", "time", "timestamp", "httpRequest", "message"} & set(r)
        assert not any(k.startswith("logging.googleapis.com/") for k in r)
    assert all(not isinstance(v, float) for r in recs for v in r.values())
    ckpts = [r for r in recs if r["kind"] == "checkpoint"]
    assert len(ckpts) >= 4, "three heartbeats in 3.6 idle seconds, then the final one"
    assert [r["kind"] for r in recs[1:]] == ["checkpoint"] * (len(recs) - 1), "nothing but checkpoints"
    assert recs[-1]["kind"] == "checkpoint", "the last line of a clean stop is a checkpoint"
    assert stop_s < 1.0 + 1.5, "the final checkpoint lands inside the drain window"
    r = verify(e.audit_path, pubkey=keys["pub"])
    assert r.returncode == 0, r.stdout
    assert not (tmp_path / ".audit.jsonl.baton-run").exists(), "a clean stop removes the run marker"


# ------------------------------------------------------------ unclean stops, fsync group

@pytest.mark.parametrize("mode", ["batch", "group"])
def test_sigkill_under_load_is_declared_by_the_next_open_record(tmp_path, up, keys, mode):
    e = ServeEnv(tmp_path, upstream_port=up.port, audit_fsync=mode, workers=2)
    e.config["audit"]["signing_key"] = str(keys["key"])
    e.write_config()
    e.start()
    killed_pid = e.proc.pid
    assert (tmp_path / ".audit.jsonl.baton-run").exists(), "a running log has its run marker"
    stop, ids, errors = threading.Event(), set(), []
    threads = [threading.Thread(target=load, args=(e, stop, ids, errors, "k-")) for _ in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(ids) > 300, 30, "load")
    e.proc.send_signal(signal.SIGKILL)
    e.proc.wait()
    stop.set()
    for t in threads:
        t.join(10)
    before = raw_lines(e.audit_path)
    last = json.loads(before[-1])
    on_disk = {r["client_request_id"] for r in lines_of(e.audit_path) if r["kind"] == "request"}
    if mode == "group":
        # the response waited for its record's group fsync: nothing acknowledged is missing
        assert ids <= on_disk, "acknowledged but not recorded: %s" % sorted(ids - on_disk)[:5]
    e.stderr.close()
    e.start()
    assert e.stop() == 0
    recs = lines_of(e.audit_path)
    op = recs[len(before)]
    assert op["kind"] == "open" and op["start"] == "restart"
    u = op["unclean_stop"]
    assert u["log"] == last["log"] == op["log"]
    assert u["pid"] == killed_pid and u["fsync"] == mode
    assert u["last_seq"] == last["seq"] and u["last_ts"] == last["ts"]
    assert u["missing_from_seq"] is None
    assert u["window_from"] == last["ts"] and u["window_to"] == op["ts"]
    assert u["started"] == recs[0]["instance"]["started"]
    r = verify(e.audit_path, pubkey=keys["pub"])
    assert r.returncode == 0, r.stdout


def test_a_clean_restart_declares_nothing(tmp_path, up):
    e = ServeEnv(tmp_path, upstream_port=up.port)
    e.start()
    assert e.stop() == 0
    e.stderr.close()
    e.start()
    assert e.stop() == 0
    opens = [r for r in lines_of(e.audit_path) if r["kind"] == "open"]
    assert [o["start"] for o in opens] == ["genesis", "restart"]
    assert opens[1]["unclean_stop"] is None


# ------------------------------------------------------------ logrotate crash (10.11)

def start_writer(path, key, count=1000000):
    return subprocess.Popen([str(WRITER), "write", str(path), "--key", str(key), "--count", str(count),
                             "--threads", "1", "--sleep-us", "500", "--fsync", "batch"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def wait_lines(path, n, timeout=20):
    wait_for(lambda: path.exists() and len(path.read_bytes().splitlines()) >= n, timeout,
             "%d lines in %s" % (n, path))


@pytest.mark.skipif(not WRITER.exists(), reason="test_audit_writer not built (make check builds it)")
def test_a_crash_between_logrotate_rename_and_sigusr1_continues_the_chain(tmp_path, keys):
    path, moved = tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1"
    p = start_writer(path, keys["key"])
    wait_lines(path, 50)
    os.rename(path, moved)  # logrotate renamed it ...
    time.sleep(0.2)          # ... the writer goes on writing into the renamed file ...
    p.send_signal(signal.SIGKILL)  # ... and dies before postrotate's SIGUSR1
    p.communicate(timeout=30)
    assert not path.exists()
    last = json.loads(raw_lines(moved)[-1])
    out = subprocess.run([str(WRITER), "write", str(path), "--key", str(keys["key"]), "--count", "20",
                          "--fsync", "batch"], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    op = json.loads(raw_lines(path)[0])
    assert op["kind"] == "open" and op["start"] == "restart" and op["prev_file"] == "audit.jsonl.1"
    assert op["seq"] == last["seq"] + 1 and op["log"] == last["log"]
    assert op["unclean_stop"]["last_seq"] == last["seq"]
    r = verify(moved, path, pubkey=keys["pub"])
    assert r.returncode == 0 and "1 chain(s)" in r.stdout, r.stdout


@pytest.mark.skipif(not WRITER.exists(), reason="test_audit_writer not built (make check builds it)")
def test_a_crash_after_logrotate_compressed_the_file_declares_the_gap(tmp_path, keys):
    import gzip
    path, moved = tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1.gz"
    p = start_writer(path, keys["key"])
    wait_lines(path, 50)
    data = path.read_bytes()
    first = json.loads(data.splitlines()[0])
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=30)
    moved.write_bytes(gzip.compress(path.read_bytes()))  # rename + compress, no SIGUSR1
    path.unlink()
    out = subprocess.run([str(WRITER), "write", str(path), "--key", str(keys["key"]), "--count", "5",
                          "--fsync", "batch"], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    op = json.loads(raw_lines(path)[0])
    assert op["kind"] == "open" and op["start"] == "genesis", "an older file must not be continued"
    assert op["log"] != first["log"]
    u = op["unclean_stop"]
    assert u["log"] == first["log"] and u["missing_from_seq"] == 0 and u["last_seq"] is None
    assert u["window_from"] == u["started"]
    assert verify(path, pubkey=keys["pub"]).returncode == 0


# ------------------------------------------------------------ witness: directory

def test_witness_dir_holds_the_open_record_and_every_checkpoint_create_only(tmp_path, up, keys):
    wdir = tmp_path / "witness"
    wdir.mkdir()
    e = ServeEnv(tmp_path, upstream_port=up.port, audit_fsync="batch")
    e.config["audit"].update({"signing_key": str(keys["key"]), "checkpoint_records": 5,
                              "witness": {"dir": str(wdir)}})
    e.write_config()
    e.start()
    for i in range(12):
        assert e.request("GET", "/api/w%d" % i, token=e.token())[0] == 200
    assert e.stop() == 0
    raw = raw_lines(e.audit_path)
    recs = [json.loads(l) for l in raw]
    log = recs[0]["log"]
    want = {r["seq"]: raw[i] for i, r in enumerate(recs) if r["kind"] in ("open", "checkpoint")}
    files = sorted(wdir.glob(log + "/*.json"))
    assert [f.name for f in files] == ["%020d.json" % s for s in sorted(want)]
    for f in files:
        assert f.read_bytes() == want[int(f.stem)] + b"\n", "the exact line, newline included"
        assert oct(f.stat().st_mode & 0o777) == "0o440"
    # a restart continues the chain: its open record and checkpoints are new names;
    # a name that exists with other content is left alone and counted
    nxt = len(raw)
    (wdir / log / ("%020d.json" % nxt)).write_bytes(b'{"forged":true}\n')
    e.stderr.close()
    e.start()
    assert e.request("GET", "/api/again", token=e.token())[0] == 200
    wait_for(lambda: metric(e, "baton_audit_witness_conflicts_total") == 1, 10, "the conflict")
    assert e.stop() == 0
    assert (wdir / log / ("%020d.json" % nxt)).read_bytes() == b'{"forged":true}\n', "never overwritten"
    assert "already exists and holds another record" in e.log_text()
    raw = raw_lines(e.audit_path)
    last = json.loads(raw[-1])
    assert (wdir / log / ("%020d.json" % last["seq"])).read_bytes() == raw[-1] + b"\n", \
        "the final checkpoint is witnessed before exit"


@pytest.mark.skipif(not WRITER.exists(), reason="test_audit_writer not built (make check builds it)")
def test_witness_holds_only_lines_that_stayed_in_the_log(tmp_path, keys):
    """Writes that fail (a file size limit) are cut back and their seqs
    reused: the witness must never hold a line the log does not."""
    path, wdir = tmp_path / "full.jsonl", tmp_path / "witness"
    wdir.mkdir()
    r = subprocess.run([str(WRITER), "write", str(path), "--key", str(keys["key"]), "--fsync", "batch",
                        "--on-failure", "allow", "--fsize", "30000", "--count", "300", "--threads", "2",
                        "--sleep-us", "300", "--checkpoint-records", "3", "--witness-dir", str(wdir)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "failures=0" not in r.stdout, "writes failed: the case under test"
    raw = raw_lines(path)
    log = json.loads(raw[0])["log"]
    files = sorted(wdir.glob(log + "/*.json"))
    assert len(files) >= 2, "the open record and a checkpoint at least (fewer on a loaded machine)"
    for f in files:
        seq = int(f.stem)
        assert seq < len(raw) and f.read_bytes() == raw[seq] + b"\n", "witnessed %d is not the log's" % seq
    want = {i for i, l in enumerate(raw) if json.loads(l)["kind"] in ("open", "checkpoint")}
    assert {int(f.stem) for f in files} == want


# ------------------------------------------------------------ witness: bucket

def bucket_env(tmp_path, up, keys, g, gcs, prefix="audit/prod"):
    e = ServeEnv(tmp_path, upstream_port=up.port, audit_fsync="batch")
    e.config["google"] = {"credentials": "metadata", "metadata_host": g.host}
    e.config["audit"].update({"signing_key": str(keys["key"]), "checkpoint_records": 4,
                              "witness": {"bucket": "gs://%s/%s" % (gcs.bucket, prefix),
                                          "storage_url": gcs.url}})
    e.write_config()
    return e


def test_witness_bucket_uploads_create_only_and_retries_outages(tmp_path, up, keys):
    g = GoogleStandins().start()
    gcs = GcsStandin("baton-audit-witness", g.token_valid).start()
    try:
        gcs.fail_next(1, "503")
        gcs.fail_next(1, "close")
        e = bucket_env(tmp_path, up, keys, g, gcs)
        e.start()
        for i in range(9):
            assert e.request("GET", "/api/b%d" % i, token=e.token())[0] == 200
        wait_for(lambda: metric(e, "baton_audit_witness_pending") == 0 and
                 metric(e, "baton_audit_witness_written_total") >= 3, 20, "the uploads")
        # the 503 is a failure baton retries; the closed connection is one curl
        # may retry on a fresh connection by itself: one or two failures
        assert metric(e, "baton_audit_witness_failures_total") in (1, 2)
        assert e.stop() == 0
        raw = raw_lines(e.audit_path)
        recs = [json.loads(l) for l in raw]
        log = recs[0]["log"]
        want = {"audit/prod/%s/%020d.json" % (log, r["seq"]): raw[i] + b"\n"
                for i, r in enumerate(recs) if r["kind"] in ("open", "checkpoint")}
        assert gcs.names() == sorted(want)
        for name, data in want.items():
            assert gcs.get(name) == data
        ups = gcs.recorded("upload")
        assert len(ups) == len(want) + 2, "each fault cost one attempt, then each record once"
        assert all(u["query"]["ifGenerationMatch"] == ["0"] for u in ups)
        assert not gcs.problems(), gcs.problems()
        assert g.calls("mtoken") >= 1
        assert "retrying" in e.log_text()
    finally:
        gcs.stop()
        g.stop()


def test_witness_bucket_uploads_in_parallel_when_checkpoints_come_fast(tmp_path, up, keys):
    g = GoogleStandins().start()
    gcs = GcsStandin("baton-audit-witness", g.token_valid).start()
    gcs.delay_s = 0.3  # a slow link: one upload at a time could not keep up
    try:
        e = bucket_env(tmp_path, up, keys, g, gcs)
        e.config["audit"]["checkpoint_records"] = 1  # a checkpoint after every record
        e.write_config()
        e.start()
        for i in range(30):
            assert e.request("GET", "/api/p%d" % i, token=e.token())[0] == 200
        wait_for(lambda: metric(e, "baton_audit_witness_pending") == 0, 30, "the uploads")
        assert e.stop() == 0
        recs = lines_of(e.audit_path)
        want = sum(1 for r in recs if r["kind"] in ("open", "checkpoint"))
        assert len(gcs.names()) == want >= 31
        assert 2 <= gcs.max_active <= 8, gcs.max_active
        assert not gcs.problems(), gcs.problems()
    finally:
        gcs.stop()
        g.stop()


def test_witness_bucket_412_counts_only_an_equal_object(tmp_path, up, keys):
    g = GoogleStandins().start()
    gcs = GcsStandin("baton-audit-witness", g.token_valid).start()
    try:
        e = bucket_env(tmp_path, up, keys, g, gcs, prefix="w")
        e.start()
        assert e.request("GET", "/api/one", token=e.token())[0] == 200
        wait_for(lambda: metric(e, "baton_audit_witness_written_total") >= 1, 20, "the open record")
        assert e.stop() == 0
        raw = raw_lines(e.audit_path)
        log, n = json.loads(raw[0])["log"], len(raw)
        # the restart's open record (seq n): pretend an earlier attempt of ours
        # stored it already (equal), and plant a different object at the first
        # checkpoint's seq (n + 4: the open record and three requests make four lines)
        e.stderr.close()
        first_ckpt = "w/%s/%020d.json" % (log, n + 4)
        gcs.put(first_ckpt, b'{"forged":true}\n')
        e.start()
        for i in range(4):
            assert e.request("GET", "/api/two%d" % i, token=e.token())[0] == 200
        wait_for(lambda: metric(e, "baton_audit_witness_conflicts_total") == 1, 20, "the conflict")
        assert gcs.get(first_ckpt) == b'{"forged":true}\n', "never overwritten"
        assert "already exists and holds another record" in e.log_text()
        assert e.stop() == 0
        raw = raw_lines(e.audit_path)
        assert json.loads(raw[n + 4])["kind"] == "checkpoint"
        gets = gcs.recorded("get")
        assert gets and all(urllib.parse.unquote(r["path"]).endswith(first_ckpt) for r in gets)
        # an equal object: stored before the restart by "an earlier attempt"
        e.stderr.close()
        nxt = len(raw)
        opened = {}

        def pre_store():
            wait_for(lambda: e.audit_path.exists() and len(raw_lines(e.audit_path)) > nxt, 20, "open")
            opened["line"] = raw_lines(e.audit_path)[nxt]
        gcs.fail_next(2, "503")  # hold the first upload back (1 s, then 2 s) while we plant the copy
        e.start(wait=False)
        pre_store()  # the open record is written before baton serves
        gcs.put("w/%s/%020d.json" % (log, nxt), opened["line"] + b"\n")
        e.wait_ready()
        wait_for(lambda: metric(e, "baton_audit_witness_existing_total") == 1, 20, "the equal object")
        assert metric(e, "baton_audit_witness_conflicts_total") == 0
        assert e.stop() == 0
        assert not gcs.problems(), gcs.problems()
    finally:
        gcs.stop()
        g.stop()


def test_witness_bucket_rejected_token_is_refetched(tmp_path, up, keys):
    g = GoogleStandins().start()
    calls = {"n": 0}

    def token_ok(tok):
        calls["n"] += 1
        return calls["n"] > 1 and g.token_valid(tok)  # the first token is refused
    gcs = GcsStandin("baton-audit-witness", token_ok).start()
    try:
        e = bucket_env(tmp_path, up, keys, g, gcs)
        e.start()
        wait_for(lambda: metric(e, "baton_audit_witness_written_total") >= 1, 20, "the open record")
        assert metric(e, "baton_audit_witness_failures_total") == 1
        assert g.calls("mtoken") == 2, "a 401 drops the cached token"
        assert e.stop() == 0
    finally:
        gcs.stop()
        g.stop()


# ------------------------------------------------------------ baton check

def check_with(tmp_path, up, audit_extra, google=None):
    e = ServeEnv(tmp_path, upstream_port=up.port)
    e.config["audit"].update(audit_extra)
    if google:
        e.config["google"] = google
    e.write_config()
    return run_baton("check", "-c", tmp_path / "baton.json")


@pytest.mark.parametrize("witness,google,needle", [
    ({"dir": "nowhere"}, None, "is not an existing directory"),
    ({"bucket": "s3://x/y"}, {"credentials": "metadata"}, "gs://BUCKET/PREFIX"),
    ({"bucket": "gs://UPPER/x"}, {"credentials": "metadata"}, "not a Cloud Storage bucket name"),
    ({"bucket": "gs://ok-bucket/../x"}, {"credentials": "metadata"}, "object prefix"),
    ({"dir": ".", "bucket": "gs://ok-bucket"}, None, "exactly one of"),
    ({"dir": ".", "storage_url": "http://127.0.0.1:1"}, None, "applies only with"),
    ({"bucket": "gs://ok-bucket", "storage_url": "http://example.com"}, {"credentials": "metadata"},
     "loopback"),
    ({"bucket": "gs://ok-bucket"}, {"credentials": "local"}, "access token"),
    ({"bucket": "gs://ok-bucket", "color": 1}, {"credentials": "metadata"}, "color"),
])
def test_check_validates_the_witness(tmp_path, up, witness, google, needle):
    r = check_with(tmp_path, up, {"witness": witness}, google)
    assert r.returncode != 0 and needle in (r.stdout + r.stderr), r.stdout + r.stderr


def test_check_accepts_good_witnesses_and_the_group_mode(tmp_path, up):
    (tmp_path / "w").mkdir()
    r = check_with(tmp_path, up, {"witness": {"dir": "w"}, "fsync": "group"})
    assert r.returncode == 0, r.stdout + r.stderr
    r = check_with(tmp_path, up, {"witness": {"bucket": "gs://my-audit.bucket/prod/eu"}},
                   {"credentials": "metadata"})
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------ the samples (14.6)

def test_cloud_run_samples_mount_the_signing_key_and_name_a_witness_bucket():
    yaml = pytest.importorskip("yaml")
    from conftest import SRCDIR
    ex = SRCDIR / "docker" / "examples"
    for shape, yfile in (("gateway", "cloudrun-gateway.yaml"), ("sidecar", "cloudrun-sidecar.yaml")):
        cfg = json.loads((ex / shape / "conf" / "baton.json").read_text())
        key = cfg["audit"]["signing_key"]
        assert cfg["audit"]["witness"]["bucket"].startswith("gs://")
        doc = yaml.safe_load((ex / yfile).read_text())
        spec = doc["spec"]["template"]["spec"]
        baton = next(c for c in spec["containers"] if c["name"] == "baton")
        mounts = {m["name"]: m["mountPath"] for m in baton["volumeMounts"]}
        vols = {v["name"]: v for v in spec["volumes"]}
        name = next(n for n, path in mounts.items() if key.startswith(path + "/"))
        sec = vols[name]["secret"]
        assert sec["secretName"] == "baton-audit-signing-key"
        assert sec["defaultMode"] == 0o400
        assert [i["path"] for i in sec["items"]] == [os.path.basename(key)]
        assert cfg["audit"]["witness"]["bucket"].split("/")[2] in (ex / yfile).read_text()
        r = run_baton("check", "-c", ex / shape / "conf" / "baton.json")
        assert r.returncode == 0, r.stdout + r.stderr
    iam = (ex / "iam-bindings.sh").read_text()
    assert "roles/storage.objectCreator" in iam and "roles/secretmanager.secretAccessor" in iam
    for broader in ("objectAdmin", "storage.admin", "objectUser", "legacyBucketWriter"):
        assert broader not in iam, "the witness may create objects, never delete them"

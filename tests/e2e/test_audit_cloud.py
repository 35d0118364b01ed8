"""Audit evidence as it lands on Cloud Run: two `baton serve` processes write
their audit records to stdout, the Cloud Logging stand-in (cloud_logging.py)
turns each line into a LogEntry the way Cloud Logging does, and `baton audit
verify` checks what a reviewer gets back: a `gcloud logging read
--format=json` array (newest first) or a log sink's newline-delimited files
(any order, duplicates), with --pubkey and a witness directory in the layout
the writer's witness fills (<log id>/<seq, 20 digits>.json). Each tamper is
caught with exit 1 and its kind; input that is not an export exits 2."""
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import time

import pytest

import cloud_logging as cl
from conftest import BATON, BUILDDIR, run_baton
from serve_env import ServeEnv
from upstream import Upstream

WRITER = BUILDDIR / "tests" / "unit" / "test_audit_writer"


class StdoutServe(ServeEnv):
    """baton serve with `"audit": {"path": "-"}`: records on stdout, as on Cloud Run."""

    def start(self, wait=True):
        env = dict(os.environ)
        env.pop("BATON_CONFIG", None)
        env["PORT"] = str(self.port)
        self.stderr = open(self.stderr_path, "ab")
        self.stdout_path = self.dir / "stdout"
        self.stdout = open(self.stdout_path, "wb")
        self.t_exec = time.monotonic()
        self.proc = subprocess.Popen([str(BATON), "serve", "-c", str(self.dir / "baton.json")],
                                     stdout=self.stdout, stderr=self.stderr, env=env)
        if wait:
            self.wait_ready()
        return self


def verify(*args, stdin=None):
    return run_baton("audit", "verify", *args, input=stdin, timeout=60)


def kind_of(r):
    first = r.stdout.splitlines()[0] if r.stdout else ""
    m = re.search(r": ([a-z_]+): ", first)
    return m.group(1) if m else None


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Two instances' stdout lines (each a chain ending in a shutdown checkpoint)."""
    d = tmp_path_factory.mktemp("fleet")
    r = run_baton("audit", "keygen", "--out", d / "audit.pem")
    assert r.returncode == 0, r.stderr
    (d / "audit.pub.pem").write_text(r.stdout.split("key_id:")[0])
    up = Upstream().start()
    instances = []
    try:
        for n in range(2):
            idir = d / ("i%d" % n)
            idir.mkdir()
            env = StdoutServe(idir, up.port)
            env.config["audit"] = {"path": "-", "fsync": "batch", "on_failure": "deny",
                                   "signing_key": str(d / "audit.pem"), "checkpoint_records": 4,
                                   "record_headers": ["X-Sfn-Execution"]}
            env.write_config()
            env.start()
            for i in range(10):
                st, _, _ = env.request("GET", "/api/i%d/r%d" % (n, i), token=env.token(),
                                       headers={"X-Sfn-Execution": "arn:exec:%d" % i})
                assert st == 200
            st, _, _ = env.request("GET", "/api/denied")  # no token: 401, recorded
            assert st == 401
            assert env.stop() == 0
            env.stdout.close()
            lines = [l for l in env.stdout_path.read_bytes().splitlines() if l.strip()]
            instances.append(lines)
    finally:
        up.stop()
    return {"dir": d, "pub": d / "audit.pub.pem", "lines": instances}


def entries_of(lines_per_instance, rng):
    out = []
    for n, lines in enumerate(lines_per_instance):
        inst = cl.Instance(revision="baton-0000%d-xyz" % (n + 1), rng=rng)
        out += cl.ingest_stream(inst, lines, step_ms=7 + n)
    return out


def witness_dir(path, lines_per_instance):
    """The witness as the writer's witness fills it: open records and checkpoints."""
    for lines in lines_per_instance:
        for line in lines:
            rec = json.loads(line)
            if rec["kind"] in ("open", "checkpoint"):
                p = path / rec["log"] / ("%020d.json" % rec["seq"])
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(line + b"\n")
    return path


def rechain(lines, start):
    """A forger without the key: renumber and recompute every prev from `start`."""
    out = list(lines)
    base = json.loads(out[0])["seq"]
    for i in range(start, len(out)):
        rec = json.loads(out[i])
        rec["seq"] = base + i
        rec["prev"] = hashlib.sha256(out[i - 1]).hexdigest()
        out[i] = json.dumps(rec, separators=(",", ":")).encode()
    return out


def test_stdout_holds_one_signed_chain_per_instance(fleet):
    for lines in fleet["lines"]:
        recs = [json.loads(l) for l in lines]
        assert recs[0]["kind"] == "open" and recs[0]["start"] == "genesis"
        assert recs[-1]["kind"] == "checkpoint", "SIGTERM writes a final checkpoint"
        assert len({r["log"] for r in recs}) == 1
        assert sum(r["kind"] == "request" for r in recs) == 11
    assert json.loads(fleet["lines"][0][0])["log"] != json.loads(fleet["lines"][1][0])["log"]


def test_the_raw_stdout_verifies_as_written(fleet, tmp_path):
    for n, lines in enumerate(fleet["lines"]):
        f = tmp_path / ("i%d.jsonl" % n)
        f.write_bytes(b"\n".join(lines) + b"\n")
        r = verify(f, "--pubkey", fleet["pub"], "--from-genesis")
        assert r.returncode == 0, r.stdout + r.stderr


def test_json_lines_with_a_witness(fleet, tmp_path):
    """The witness works on baton's own files too (streamed, not indexed)."""
    w = witness_dir(tmp_path / "witness", fleet["lines"])
    files = []
    for n, lines in enumerate(fleet["lines"]):
        files.append(tmp_path / ("i%d.jsonl" % n))
        files[-1].write_bytes(b"\n".join(lines) + b"\n")
    r = verify(*files, "--pubkey", fleet["pub"], "--witness", w)
    assert r.returncode == 0 and "witness:  2 chain(s)" in r.stdout, r.stdout + r.stderr
    r = verify(files[0], "--pubkey", fleet["pub"], "--witness", w)
    assert r.returncode == 1 and kind_of(r) == "missing_chain", r.stdout
    assert json.loads(fleet["lines"][1][0])["log"] in r.stdout


def test_a_gcloud_export_of_two_instances_verifies(fleet, tmp_path):
    rng = random.Random(1)
    f = tmp_path / "export.json"
    f.write_bytes(cl.gcloud_read_json(entries_of(fleet["lines"], rng), rng))
    assert f.read_bytes().lstrip().startswith(b"[")
    w = witness_dir(tmp_path / "witness", fleet["lines"])
    r = verify(f, "--pubkey", fleet["pub"], "--witness", w, "--from-genesis")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 chain(s)" in r.stdout and "22 requests" in r.stdout
    for lines in fleet["lines"]:
        first, last = json.loads(lines[0]), json.loads(lines[-1])
        assert "chain:    %s  " % first["log"] in r.stdout, "each chain is listed"
        assert "pid=%d" % first["pid"] in r.stdout, "with the instance its open record names"
        assert "seq:    0..%d (from genesis)" % last["seq"] in r.stdout
        assert "cleanly: its last record is a checkpoint, signed (seq %d" % last["seq"] in r.stdout
    assert re.search(r"witness:  2 chain\(s\), \d+ witnessed record\(s\) equal", r.stdout)


def test_sink_files_in_any_order_with_duplicates_verify(fleet, tmp_path):
    rng = random.Random(2)
    files = []
    for i, data in enumerate(cl.sink_files(entries_of(fleet["lines"], rng), nfiles=3,
                                           duplicates=0.3, rng=rng)):
        f = tmp_path / ("stdout-%02d.json" % i)
        f.write_bytes(data)
        files.append(f)
    r = verify(*files, "--pubkey", fleet["pub"], "--witness", witness_dir(tmp_path / "w", fleet["lines"]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 chain(s)" in r.stdout
    assert re.search(r"copies:   [1-9]\d* identical duplicate record\(s\) dropped", r.stdout)
    # the same on stdin, one file after another
    r = verify("-", "--pubkey", fleet["pub"], stdin=b"".join(f.read_bytes() for f in files).decode())
    assert r.returncode == 0, r.stdout + r.stderr


def test_pipes_and_redirected_stdin_are_read_once(fleet, tmp_path):
    rng = random.Random(6)
    f = tmp_path / "export.json"
    f.write_bytes(cl.gcloud_read_json(entries_of(fleet["lines"], rng), rng))
    a = tmp_path / "a.jsonl"
    a.write_bytes(b"\n".join(fleet["lines"][0]) + b"\n")
    # the bytes read to tell a pipe's kind are not read again from the pipe
    r = subprocess.run(["bash", "-c", '"$0" audit verify <(cat "$1") <(cat "$2") --pubkey "$3"',
                        str(BATON), str(f), str(a), str(fleet["pub"])],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "2 chain(s)" in r.stdout, r.stdout + r.stderr
    with open(f, "rb") as stdin:
        r = subprocess.run([str(BATON), "audit", "verify", "-", "--pubkey", str(fleet["pub"])],
                           stdin=stdin, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "2 chain(s)" in r.stdout, r.stdout + r.stderr


def test_a_json_lines_file_and_an_export_verify_together(fleet, tmp_path):
    rng = random.Random(3)
    a = tmp_path / "a.jsonl"
    a.write_bytes(b"\n".join(fleet["lines"][0]) + b"\n")
    b = tmp_path / "b.json"
    b.write_bytes(cl.gcloud_read_json(entries_of([fleet["lines"][1]], rng), rng))
    r = verify(a, b, "--pubkey", fleet["pub"])
    assert r.returncode == 0 and "2 chain(s)" in r.stdout, r.stdout + r.stderr


def _payload_edit(entries, pred, fn):
    for e in entries:
        p = e.get("jsonPayload")
        if p and pred(p):
            fn(p)
            return entries
    raise AssertionError("no entry to edit")


def _is_request(n):
    return lambda p: p["kind"] == "request" and p["seq"] == n


def tamper_member(lines, rng):
    es = entries_of(lines, rng)
    return _payload_edit(es, _is_request(3), lambda p: p.update(request_id="forged-id")), []


def tamper_number(lines, rng):
    es = entries_of(lines, rng)
    return _payload_edit(es, _is_request(3), lambda p: p.update(status=201.0)), []


def tamper_delete(lines, rng):
    es = entries_of(lines, rng)
    return [e for e in es if not (e["jsonPayload"]["seq"] == 4 and
                                  e["jsonPayload"]["log"] == json.loads(lines[0][0])["log"])], []


def tamper_forge(lines, rng):
    a = list(lines[0])
    forged = json.loads(a[3])
    forged["request_id"] = "forged"
    a = rechain(a[:3] + [json.dumps(forged, separators=(",", ":")).encode()] + a[3:], 3)
    return entries_of([a, lines[1]], rng), []


def tamper_fork(lines, rng):
    es = entries_of(lines, rng)
    twin = json.loads(json.dumps([e for e in es if e["jsonPayload"]["seq"] == 5.0][0]))
    twin["jsonPayload"]["request_id"] = "twin"
    twin["insertId"] = "twin"
    return es + [twin], []


def tamper_drop_chain(lines, rng):
    return entries_of([lines[0]], rng), ["--witness"]


def tamper_drop_tail(lines, rng):
    b = list(lines[1])
    ckpts = [i for i, l in enumerate(b) if json.loads(l)["kind"] == "checkpoint"]
    cut = b[:ckpts[-2] + 1]  # up to an earlier checkpoint: signed all through
    return entries_of([lines[0], cut], rng), ["--witness"]


TAMPERS = [
    ("an edited member", tamper_member, "edited", "no longer hashes"),
    ("an edited number", tamper_number, "edited", "no longer hashes"),
    ("a deleted record", tamper_delete, "missing", "records 4..4 are missing"),
    ("a forged record, chain recomputed", tamper_forge, "bad_signature", "does not verify"),
    ("two different records with one seq", tamper_fork, "forked", "two different records with seq 5"),
    ("a whole chain deleted", tamper_drop_chain, "missing_chain", "is in the witness"),
    ("a chain's last records deleted", tamper_drop_tail, "missing", "its record of seq"),
]


@pytest.mark.parametrize("name,tamper,kind,words", TAMPERS, ids=[t[0] for t in TAMPERS])
def test_a_tamper_in_the_export_is_caught(fleet, tmp_path, name, tamper, kind, words):
    rng = random.Random(hash(name) & 0xffff)
    es, flags = tamper(fleet["lines"], rng)
    w = witness_dir(tmp_path / "witness", fleet["lines"])
    f = tmp_path / "export.json"
    f.write_bytes(cl.gcloud_read_json(es, rng))
    if flags:
        r = verify(f, "--pubkey", fleet["pub"])
        assert r.returncode == 0, "without the witness the cut is invisible: " + r.stdout
        r = verify(f, "--pubkey", fleet["pub"], "--witness", w)
    else:
        r = verify(f, "--pubkey", fleet["pub"])
    assert r.returncode == 1, r.stdout + r.stderr
    assert kind_of(r) == kind, r.stdout
    assert words in r.stdout.splitlines()[0], r.stdout
    # the same tamper in sink files, in any order
    files = []
    for i, data in enumerate(cl.sink_files(es, nfiles=2, duplicates=0.2, rng=rng)):
        files.append(tmp_path / ("s%d.json" % i))
        files[-1].write_bytes(data)
    args = ["--pubkey", fleet["pub"]] + (["--witness", w] if flags else [])
    r = verify(*files, *args)
    assert r.returncode == 1 and kind_of(r) == kind, r.stdout + r.stderr


def test_the_break_names_the_file_and_entry(fleet, tmp_path):
    rng = random.Random(9)
    es, _ = tamper_member(fleet["lines"], rng)
    f = tmp_path / "export.json"
    f.write_bytes(cl.gcloud_read_json(es, rng))
    r = verify(f, "--pubkey", fleet["pub"])
    assert re.match(r"%s:entry \d+: seq 3: edited: " % re.escape(str(f)), r.stdout), r.stdout


def test_a_witnessed_record_that_differs_is_a_fork(fleet, tmp_path):
    rng = random.Random(4)
    w = witness_dir(tmp_path / "witness", fleet["lines"])
    rec = json.loads(fleet["lines"][0][0])
    p = w / rec["log"] / ("%020d.json" % rec["seq"])
    rec["host"] = "elsewhere"  # the witness saw another open record at seq 0
    p.write_bytes(json.dumps(rec, separators=(",", ":")).encode() + b"\n")
    f = tmp_path / "export.json"
    f.write_bytes(cl.gcloud_read_json(entries_of(fleet["lines"], rng), rng))
    r = verify(f, "--pubkey", fleet["pub"], "--witness", w)
    assert r.returncode == 1 and kind_of(r) == "forked", r.stdout
    assert str(p) in r.stdout


def test_live_reports_a_cut_chain_instead_of_failing(fleet, tmp_path):
    rng = random.Random(5)
    # cut after the last request record: the checkpoints after it (heartbeats,
    # the final one) not written yet
    whole = list(fleet["lines"][0])
    last_req = max(i for i, l in enumerate(whole) if json.loads(l)["kind"] == "request")
    a = whole[:last_req + 1]
    f = tmp_path / "export.json"
    f.write_bytes(cl.gcloud_read_json(entries_of([a, fleet["lines"][1]], rng), rng))
    r = verify(f, "--pubkey", fleet["pub"])
    assert r.returncode == 1 and kind_of(r) == "unsigned_tail", r.stdout
    r = verify(f, "--pubkey", fleet["pub"], "--live")
    assert r.returncode == 0, r.stdout + r.stderr
    last_ckpt = [json.loads(l) for l in a if json.loads(l)["kind"] == "checkpoint"][-1]
    after = len(a) - 1 - [json.loads(l)["seq"] for l in a].index(last_ckpt["seq"])
    assert "CUT: its last checkpoint is seq %d (%s); %d record(s) after it are unsigned" % (
        last_ckpt["seq"], last_ckpt["ts"], after) in r.stdout, r.stdout
    assert "live:     %d record(s)" % after in r.stdout


@pytest.mark.skipif(not WRITER.exists(), reason="test_audit_writer not built (make check builds it)")
def test_from_genesis_refuses_a_log_cut_at_a_restart(tmp_path):
    path = tmp_path / "audit.jsonl"
    for prefix in ("a-", "b-"):
        r = subprocess.run([str(WRITER), "write", str(path), "--count", "6", "--prefix", prefix],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    lines = path.read_bytes().splitlines()
    restart = [i for i, l in enumerate(lines) if b'"start":"restart"' in l][0]
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"\n".join(lines[restart:]) + b"\n")
    r = verify(cut)
    assert r.returncode == 0, r.stdout
    assert "NOT FROM GENESIS: records 0..%d are not in the inputs" % (restart - 1) in r.stdout
    assert "WARNING:" in r.stdout, "the summary says it loudly"
    r = verify(cut, "--from-genesis")
    assert r.returncode == 1 and kind_of(r) == "bad_start", r.stdout
    assert "--from-genesis" in r.stdout
    assert verify(path, "--from-genesis").returncode == 0


BAD_INPUT = [
    ("not JSON", b"hello world\n", "not JSON"),
    ("not LogEntry-shaped", b'[{"a": 1}]\n', "not a LogEntry"),
    ("a LogEntry without jsonPayload", b'[{"insertId": "x", "textPayload": "GET /"}]\n',
     "without jsonPayload"),
    ("an array element that is not an object", b'[\n  7,\n  {"insertId": "x"}\n]\n',
     "entry 1 is not a JSON object"),
    ("an export cut short", b'[\n  {"insertId": "x", "jsonPayload": {"v": 1', "cut short"),
    ("a log line of baton's stderr", b'{"insertId": "x", "severity": "INFO", "jsonPayload": '
     b'{"message": "listening", "component": "server"}}\n', "not an audit record"),
    ("invalid JSON in an entry", b'{"insertId": "x", "jsonPayload": {"v": 1,}}\n', "not JSON"),
]


@pytest.mark.parametrize("name,data,words", BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_input_that_is_not_an_export_exits_2(tmp_path, name, data, words):
    f = tmp_path / "in.json"
    f.write_bytes(data)
    r = verify(f)
    assert r.returncode == 2, r.stdout + r.stderr
    assert words in r.stderr and str(f) in r.stderr, r.stderr
    assert "AddressSanitizer" not in r.stderr


def test_usage_of_the_new_options(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text("")
    assert verify(f, "--witness").returncode == 2
    r = verify(f, "--witness", tmp_path / "absent")
    assert r.returncode == 2 and "absent" in r.stderr
    bad = tmp_path / "w" / ("0" * 32)
    bad.mkdir(parents=True)
    (bad / ("%020d.json" % 3)).write_text('{"v":1,"seq":4}')
    r = verify(f, "--witness", tmp_path / "w")
    assert r.returncode == 2 and "not the record of log" in r.stderr, r.stderr

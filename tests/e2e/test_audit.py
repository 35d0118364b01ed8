"""The audit log end to end: `baton audit keygen`, `baton audit verify` against a
table of tampers, a writer process SIGKILLed under fsync "always", writes that
fail under a file size limit (deny and allow), rotation by logrotate and
SIGUSR1, and no secret in any record.

Logs are written by tests/unit/test_audit_writer (built with `make check`), a
small process that drives the audit writer (src/audit_*.c) the way the server does and prints
"durable ID 1|0", "refused ID" and a final "stats ..." line."""
import base64
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

from conftest import BUILDDIR, run_baton

WRITER = BUILDDIR / "tests" / "unit" / "test_audit_writer"

pytestmark = pytest.mark.skipif(not WRITER.exists(), reason="test_audit_writer not built (make check builds it)")


def write_log(path, *args, timeout=60):
    """Runs the writer to completion; returns its stdout lines."""
    r = subprocess.run([str(WRITER), "write", str(path), *map(str, args)], capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.splitlines()


def parse_outcomes(lines):
    durable_ok, durable_lost, refused, stats = set(), set(), set(), {}
    for line in lines:
        parts = line.split()
        if parts[:1] == ["durable"]:
            (durable_ok if parts[2] == "1" else durable_lost).add(parts[1])
        elif parts[:1] == ["refused"]:
            refused.add(parts[1])
        elif parts[:1] == ["stats"]:
            stats = dict(p.split("=") for p in parts[1:])
    return durable_ok, durable_lost, refused, stats


def request_ids(path, prefix=""):
    ids = set()
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                continue  # a torn last line
            rec = json.loads(raw)
            rid = rec.get("request_id")
            if rec["kind"] == "request" and rid.startswith(prefix):
                ids.add(rid[len(prefix):])
    return ids


def verify(*files, pubkey=None, stdin=None):
    args = ["audit", "verify", *files]
    if pubkey:
        args += ["--pubkey", pubkey]
    return run_baton(*args, input=stdin)


def break_kind(r):
    m = re.search(r": (\w+): ", r.stdout.splitlines()[0]) if r.stdout else None
    return m.group(1) if m else None


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    key = d / "audit.pem"
    r = run_baton("audit", "keygen", "--out", key)
    assert r.returncode == 0, r.stderr
    pub = d / "audit.pub.pem"
    pub.write_text(r.stdout.split("key_id:")[0])
    return {"key": key, "pub": pub, "key_id": r.stdout.split("key_id:")[1].strip(), "dir": d}


# ---------------------------------------------------------------- keygen

def test_keygen_writes_a_0600_ed25519_key_and_prints_its_public_key(keys):
    assert oct(keys["key"].stat().st_mode & 0o777) == "0o600"
    priv = serialization.load_pem_private_key(keys["key"].read_bytes(), None)
    pub = serialization.load_pem_public_key(keys["pub"].read_bytes())
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert priv.public_key().public_bytes(serialization.Encoding.Raw,
                                          serialization.PublicFormat.Raw) == raw
    assert keys["key_id"] == hashlib.sha256(raw).hexdigest()


def test_keygen_never_overwrites_and_needs_out(keys):
    before = keys["key"].read_bytes()
    r = run_baton("audit", "keygen", "--out", keys["key"])
    assert r.returncode == 1 and "never overwritten" in r.stderr
    assert keys["key"].read_bytes() == before
    assert run_baton("audit", "keygen").returncode == 2


def test_verify_usage_errors_exit_2(tmp_path, keys):
    assert run_baton("audit", "verify").returncode == 2
    assert run_baton("audit", "frobnicate").returncode == 2
    assert verify(tmp_path / "absent.jsonl").returncode == 2
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    (tmp_path / "x.jsonl").write_text("")
    r = verify(tmp_path / "x.jsonl", pubkey=bad)
    assert r.returncode == 2 and "Ed25519" in r.stderr


# ---------------------------------------------------------------- the tamper table

@pytest.fixture(scope="module")
def signed_log(keys, tmp_path_factory):
    d = tmp_path_factory.mktemp("signed")
    path = d / "audit.jsonl"
    write_log(path, "--key", keys["key"], "--count", 30, "--threads", 1, "--checkpoint-records", 7,
              "--fsync", "none")
    return path.read_bytes().splitlines()


def write_lines(path, lines, final_newline=True):
    path.write_bytes(b"\n".join(lines) + (b"\n" if final_newline else b""))
    return path


def rechain(lines, start):
    """What a forger without the key can do: renumber and recompute every prev."""
    out = list(lines)
    for i in range(start, len(out)):
        rec = json.loads(out[i])
        rec["seq"] = i
        rec["prev"] = hashlib.sha256(out[i - 1]).hexdigest()
        out[i] = json.dumps(rec, separators=(",", ":")).encode()
    return out


def test_untouched_log_verifies_with_a_summary(signed_log, keys, tmp_path):
    f = write_lines(tmp_path / "a.jsonl", signed_log)
    r = verify(f, pubkey=keys["pub"])
    assert r.returncode == 0, r.stdout
    assert "30 requests" in r.stdout and "(from genesis)" in r.stdout
    assert "signed:   through seq %d" % (len(signed_log) - 1) in r.stdout
    assert hashlib.sha256(signed_log[-1]).hexdigest() in r.stdout
    r = verify("-", pubkey=keys["pub"], stdin=f.read_text())
    assert r.returncode == 0, "reading stdin as \"-\""


def _edit(line, key, value):
    rec = json.loads(line)
    rec[key] = value
    return json.dumps(rec, separators=(",", ":")).encode()


TAMPERS = [
    # name, function(lines) -> lines, expected kind with --pubkey
    ("edit request_id", lambda l: l[:5] + [_edit(l[5], "request_id", "other")] + l[6:], "edited"),
    ("edit status", lambda l: l[:9] + [_edit(l[9], "status", 201)] + l[10:], "edited"),
    ("edit genesis ts", lambda l: [_edit(l[0], "ts", "2020-01-01T00:00:00.000Z")] + l[1:], "edited"),
    ("edit a prev", lambda l: l[:12] + [_edit(l[12], "prev", "0" * 64)] + l[13:], "edited"),
    ("edit the last checkpoint's sig", lambda l: l[:-1] + [_edit(l[-1], "sig", "0" * 128)], "bad_signature"),
    ("edit the last checkpoint's ts", lambda l: l[:-1] + [_edit(l[-1], "ts", "2020-01-01T00:00:00.000Z")], "bad_signature"),
    ("space inside the last line", lambda l: l[:-1] + [l[-1].replace(b'","', b'", "', 1)], "malformed"),
    ("delete a record", lambda l: l[:10] + l[11:], "missing"),
    ("delete the first record", lambda l: l[1:], "bad_start"),
    ("swap two records", lambda l: l[:10] + [l[11], l[10]] + l[12:], "reordered"),
    ("duplicate a record", lambda l: l[:10] + [l[9]] + l[10:], "inserted"),
    ("insert a forged record, chain recomputed", lambda l: rechain(l[:15] + [_edit(l[14], "request_id", "forged")] + l[15:], 15), "bad_signature"),
    ("append a forged record, chain recomputed", lambda l: rechain(l + [_edit(l[-2], "request_id", "forged")], len(l)), "unsigned_tail"),
    ("truncate the tail", lambda l: l[:-3], "unsigned_tail"),
    ("not JSON", lambda l: l[:4] + [b"hello"] + l[5:], "malformed"),
]


@pytest.mark.parametrize("name,tamper,kind", TAMPERS, ids=[t[0] for t in TAMPERS])
def test_verify_detects(signed_log, keys, tmp_path, name, tamper, kind):
    f = write_lines(tmp_path / "t.jsonl", tamper(list(signed_log)))
    r = verify(f, pubkey=keys["pub"])
    assert r.returncode == 1, r.stdout
    assert break_kind(r) == kind, r.stdout
    assert r.stdout.startswith(str(f) + ":"), "the break names the file and line"


def test_a_torn_last_line_is_reported_as_torn(signed_log, tmp_path):
    lines = list(signed_log)
    lines[-1] = lines[-1][:50]
    f = write_lines(tmp_path / "t.jsonl", lines, final_newline=False)
    r = verify(f)
    assert r.returncode == 1 and break_kind(r) == "torn"
    assert r.stdout.startswith("%s:%d:" % (f, len(lines)))


def test_a_recomputed_chain_fools_only_a_check_without_the_key(signed_log, keys, tmp_path):
    forged = rechain(signed_log[:15] + [_edit(signed_log[14], "request_id", "forged")] + signed_log[15:], 15)
    f = write_lines(tmp_path / "t.jsonl", forged)
    assert verify(f).returncode == 0
    assert verify(f, pubkey=keys["pub"]).returncode == 1


def test_a_checkpoint_forged_with_another_key(signed_log, keys, tmp_path):
    other = Ed25519PrivateKey.generate()
    raw = other.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    last = json.loads(signed_log[-1])
    for key_id in (hashlib.sha256(raw).hexdigest(), keys["key_id"]):
        msg = "baton-audit-checkpoint/1\n%s\n%d\n%s\n%s\n%s\n" % (
            last["log"], last["seq"], last["prev"], last["ts"], key_id)
        forged = dict(last, key_id=key_id, sig=other.sign(msg.encode()).hex())
        line = json.dumps(forged, separators=(",", ":")).encode()
        f = write_lines(tmp_path / "t.jsonl", signed_log[:-1] + [line])
        assert verify(f).returncode == 0, "well-formed: only the key can tell"
        r = verify(f, pubkey=keys["pub"])
        assert r.returncode == 1 and break_kind(r) == "bad_signature", r.stdout


def test_the_checkpoint_message_matches_what_baton_signs(signed_log, keys):
    pub = serialization.load_pem_public_key(keys["pub"].read_bytes())
    for line in signed_log:
        rec = json.loads(line)
        if rec["kind"] == "checkpoint":
            msg = "baton-audit-checkpoint/1\n%s\n%d\n%s\n%s\n%s\n" % (
                rec["log"], rec["seq"], rec["prev"], rec["ts"], rec["key_id"])
            pub.verify(bytes.fromhex(rec["sig"]), msg.encode())  # raises if not


def test_every_prev_is_the_sha256_of_the_previous_line(signed_log):
    assert json.loads(signed_log[0])["prev"] == "0" * 64
    for a, b in zip(signed_log, signed_log[1:]):
        assert json.loads(b)["prev"] == hashlib.sha256(a).hexdigest()
        assert json.loads(b)["seq"] == json.loads(a)["seq"] + 1


@pytest.fixture(scope="module")
def two_rotated_logs(keys, tmp_path_factory):
    d = tmp_path_factory.mktemp("rot")
    sets = []
    for name in ("a", "b"):
        path = d / ("%s.jsonl" % name)
        write_log(path, "--key", keys["key"], "--count", 24, "--threads", 1, "--rotate-bytes", 6000,
                  "--fsync", "none")
        sets.append(sorted(str(p) for p in d.glob("%s.jsonl.*" % name)) + [str(path)])
    return sets


def test_rotated_files_verify_in_order(two_rotated_logs, keys):
    a, b = two_rotated_logs
    assert len(a) >= 3
    r = verify(*a, pubkey=keys["pub"])
    assert r.returncode == 0, r.stdout
    assert "%d file(s)" % len(a) in r.stdout and "1 chain(s)" in r.stdout
    concatenated = "".join(open(f).read() for f in a)
    r = verify("-", pubkey=keys["pub"], stdin=concatenated)
    assert r.returncode == 0, "the files of a log concatenated in order verify as one: " + r.stdout


@pytest.mark.parametrize("pick,kind", [
    (lambda a, b: [a[0], b[1]], "spliced"),
    (lambda a, b: [a[0], a[2]], "missing"),
    (lambda a, b: [a[1], a[0]], "reordered"),
], ids=["file of another log", "file left out", "files swapped"])
def test_cross_file_splices_are_detected(two_rotated_logs, keys, pick, kind):
    r = verify(*pick(*two_rotated_logs), pubkey=keys["pub"])
    assert r.returncode == 1 and break_kind(r) == kind, r.stdout


# ---------------------------------------------------------------- crash

def test_sigkill_under_fsync_always_loses_nothing_reported_durable(keys, tmp_path):
    path = tmp_path / "crash.jsonl"
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    for rnd in range(5):
        prefix = "k%d-" % rnd
        p = subprocess.Popen([str(WRITER), "write", str(path), "--fsync", "always", "--key", str(keys["key"]),
                              "--prefix", prefix, "--count", "1000000", "--threads", "3", "--sleep-us", "200"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        head = b""
        deadline = time.monotonic() + 30
        while b"durable" not in head and time.monotonic() < deadline:
            head += p.stdout.readline()  # the writer is up and acknowledging
        time.sleep(rng.uniform(0.0, 0.3))
        p.send_signal(signal.SIGKILL)
        out, _ = p.communicate(timeout=30)
        ok, _, _, _ = parse_outcomes((head + out).decode().splitlines())
        assert ok, "seed %d round %d: some records were reported durable" % (seed, rnd)
        on_disk = request_ids(path, prefix)
        assert ok <= on_disk, "seed %d round %d: durable records missing: %s" % (
            seed, rnd, sorted(ok - on_disk)[:5])
        r = verify(path)
        assert r.returncode == 0 or break_kind(r) == "torn", r.stdout
        if r.returncode:
            n = len(path.read_bytes().split(b"\n"))
            assert r.stdout.startswith("%s:%d:" % (path, n)), "only the last line may be torn"
    out = write_log(path, "--fsync", "always", "--key", keys["key"], "--prefix", "end-", "--count", 50)
    assert len(parse_outcomes(out)[0]) == 50
    r = verify(path, pubkey=keys["pub"])
    assert r.returncode == 0, "seed %d: after the restarts the file verifies: %s" % (seed, r.stdout)
    assert "6 open" in r.stdout and "1 chain(s)" in r.stdout


# ---------------------------------------------------------------- failing writes

def test_writes_failing_with_deny_refuse_requests_and_keep_the_chain_clean(tmp_path):
    path = tmp_path / "full.jsonl"
    out = write_log(path, "--fsync", "always", "--on-failure", "deny", "--fsize", 30000,
                    "--count", 300, "--threads", 1, "--sleep-us", 500, "--prefix", "f-")
    ok, lost, refused, stats = parse_outcomes(out)
    assert refused, "once writes fail, reserves are refused"
    assert len(ok) + len(lost) + len(refused) == 300, "every request has exactly one outcome"
    assert int(stats["refused"]) == len(refused) and int(stats["lost"]) == len(lost)
    assert int(stats["failures"]) >= 1
    on_disk = request_ids(path, "f-")
    assert ok <= on_disk and not (on_disk & (lost | refused)), "only durable records are on disk"
    assert path.stat().st_size <= 30000
    r = verify(path)
    assert r.returncode == 0, "failed writes were cut back, no torn line: " + r.stdout
    # the first refusal comes after the first failure: nothing refused while healthy
    first_refused = min(int(i) for i in refused)
    assert any(int(i) < first_refused for i in lost), "a write failed before the first refusal"


def test_writes_failing_with_allow_count_the_loss_and_refuse_nothing(tmp_path):
    path = tmp_path / "full.jsonl"
    out = write_log(path, "--fsync", "batch", "--on-failure", "allow", "--fsize", 30000,
                    "--count", 300, "--threads", 2, "--sleep-us", 500, "--prefix", "f-")
    ok, lost, refused, stats = parse_outcomes(out)
    assert not refused and lost, "allow: nothing refused, the loss happens"
    assert len(ok) + len(lost) == 300
    assert int(stats["lost"]) == len(lost) and int(stats["failures"]) >= 1
    assert request_ids(path, "f-") == ok
    assert verify(path).returncode == 0
    # with room again, a restart continues the same chain
    write_log(path, "--count", 5, "--prefix", "g-")
    r = verify(path)
    assert r.returncode == 0 and "1 chain(s)" in r.stdout, r.stdout


# ---------------------------------------------------------------- logrotate

def test_sigusr1_after_logrotate_moves_the_file_continues_the_chain(keys, tmp_path):
    path, moved = tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1"
    p = subprocess.Popen([str(WRITER), "write", str(path), "--key", str(keys["key"]), "--count", "400",
                          "--threads", "1", "--sleep-us", "1000", "--fsync", "batch"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.15)
    os.rename(path, moved)  # logrotate's default "create" mode
    p.send_signal(signal.SIGUSR1)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert len(parse_outcomes(out.decode().splitlines())[0]) == 400
    assert json.loads(path.read_bytes().splitlines()[0])["kind"] == "rotate"
    assert json.loads(moved.read_bytes().splitlines()[-1])["kind"] == "checkpoint"
    r = verify(moved, path, pubkey=keys["pub"])
    assert r.returncode == 0 and "400 requests" in r.stdout, r.stdout


# ---------------------------------------------------------------- secrets

def test_no_token_key_or_cookie_ever_reaches_the_log(keys, tmp_path):
    header = base64.urlsafe_b64encode(b'{"alg":"RS256","kid":"k1"}').rstrip(b"=").decode()
    token = header + ".eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNlY3JldA"
    path = tmp_path / "audit.jsonl"
    write_log(path, "--key", keys["key"], "--count", 20, "--token", token)
    data = path.read_text()
    key_pem = keys["key"].read_text()
    key_body = "".join(key_pem.strip().splitlines()[1:-1])
    for secret in (token, token.split(".")[2], "Bearer", "s3cr3t", "Authorization", "Cookie", key_body):
        assert secret not in data, "%r found in the audit log" % secret
    assert hashlib.sha256(token.encode()).hexdigest() in data, "the token's fingerprint is recorded"
    assert '["X-Sfn-Execution","arn:aws:states:' in data


def test_record_headers_naming_authorization_is_refused(tmp_path):
    r = subprocess.run([str(WRITER), "write", str(tmp_path / "a.jsonl"), "--record-header", "Authorization"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "Authorization" in r.stdout and "never recorded" in r.stdout
    assert not (tmp_path / "a.jsonl").exists()

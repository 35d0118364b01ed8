"""The demo (scripts/demo.py, issue 13): it prints the real, shortened token
in each curl line and the caller of each audit record (never `$TOKEN` or
`sub=None`), verifies its audit log, and with --keep leaves baton, the issuer
and the upstream running, prints commands that work when pasted, and a stop
command that stops exactly what it started."""
import os
import re
import shutil
import subprocess
import time

from conftest import BATON, SRCDIR
from serve_env import free_port

DEMO = SRCDIR / "scripts" / "demo.py"


def run_demo(*args, timeout=120):
    env = dict(os.environ, BATON_BIN=str(BATON))
    ports = ",".join(str(free_port()) for _ in range(5))
    r = subprocess.run(["/usr/bin/python3", str(DEMO), "--ports", ports, *args],
                       capture_output=True, text=True, env=env, timeout=timeout)
    return r, ports.split(",")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = open("/proc/%d/stat" % pid).read().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_demo_prints_real_values_and_verifies_its_log():
    r, ports = run_demo()
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert "$TOKEN" not in out and "sub=None" not in out and "None" not in out
    curls = [l for l in out.splitlines() if l.startswith("$ curl")]
    assert len(curls) == 6
    with_token = [l for l in curls if "Authorization" in l]
    assert len(with_token) == 5
    for l in with_token:
        assert re.search(r"Authorization: Bearer eyJ[A-Za-z0-9_-]{9}\.\.\.[A-Za-z0-9_-]{6}'", l), l
    assert "http://127.0.0.1:%s/reports/weekly" % ports[0] in out
    recs = [l for l in out.splitlines() if re.match(r"  seq \d+ +(allow|deny)", l)]
    assert len(recs) == 6
    assert "caller: arn:aws:iam::123456789012:role/weekly-report-lambda" in recs[0]
    assert "caller: none (no token)" in recs[1]
    assert "caller: not verified" in recs[2]
    assert "caller: arn:aws:iam::123456789012:role/intern-sandbox" in recs[3]
    assert "caller: none (refused before the token was checked)" in recs[5]
    assert "\nverified: 1 file(s)" in out
    shutil.rmtree(re.search(r"Demo files .* are in (/\S+)", out).group(1))
    # nothing is left running
    for p in ports:
        with __import__("socket").socket() as s:
            assert s.connect_ex(("127.0.0.1", int(p))) != 0, "port %s still open" % p


def test_demo_keep_leaves_it_running_with_commands_that_work_and_a_stop():
    r, ports = run_demo("--keep")
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    work = re.search(r"pids in (/\S+)/demo\.pids", out).group(1)
    pids = [int(x) for x in open(work + "/demo.pids").read().split()]
    assert len(pids) == 2 and all(alive(p) for p in pids)
    stop_cmd = "kill %s" % " ".join(map(str, pids))  # if the printed one cannot be found
    try:
        lines = out.split("Try next:\n", 1)[1].splitlines()
        tries = [l.strip() for l in lines if l.startswith("  ")]
        token_cmd, post_cmd, get_cmd, explain_cmd = tries[0], tries[1], tries[2], tries[3]
        assert token_cmd.startswith("TOKEN=$(") and "--token --dir " + work in token_cmd
        script = "set -e\n%s\n%s\necho\n%s\necho\n%s\n" % (token_cmd, post_cmd, get_cmd,
                                                           explain_cmd)
        sh = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
        assert '"verified": true' in sh.stdout and '"path": "/reports/weekly"' in sh.stdout, \
            sh.stdout + sh.stderr
        assert '"path": "/reports/runs/42"' in sh.stdout
        assert "reason:   no_rule_match (403)" in sh.stdout, "explain as printed"
        assert "gateway http://127.0.0.1:%s" % ports[0] in out
        printed = [l.strip() for l in out.split("Stop everything:\n", 1)[1].splitlines()][0]
        assert printed.endswith("--stop --dir " + work)
        stop_cmd = printed
    finally:
        stop = subprocess.run(["sh", "-c", stop_cmd], capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    assert not any(alive(p) for p in pids), "stop stops both processes"
    verify = re.search(r"^  (\S+ audit verify .*)$", stop.stdout, re.M).group(1)
    v = subprocess.run(["sh", "-c", verify], capture_output=True, text=True, timeout=60)
    assert v.returncode == 0 and "requests" in v.stdout, v.stdout + v.stderr
    assert "8 requests" in v.stdout, "the two tried requests were recorded too: " + v.stdout
    shutil.rmtree(work)

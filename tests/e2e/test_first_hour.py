"""What a new user meets in the first hour (issue 13): counts in the audit
record and the access log that are true for baton's own responses, policy
diagnostics (did you mean, regex-looking globs, fractional rates, the value
explain received), `check` reading a jwks_file as serve would, and a refused
reload that /metrics and /readyz make visible."""
import json
import signal
import time

import pytest

from conftest import run_baton
from serve_env import ServeEnv, SUB, AUDIENCE, ISSUER


def access_lines(env):
    out = []
    for line in env.log_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if "httpRequest" in rec:
            out.append(rec)
    return out


def wait_for(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    return pred()


# ------------------------------------------------------------------ 1. counts

def test_counts_in_the_record_and_the_access_log_are_true(tmp_path, up):
    env = ServeEnv(tmp_path, up.port, extra={"access_log": True})
    env.start()
    try:
        tok = env.token()
        # baton's own 403 (no rule: the "getonly" step allows GET only)
        st, hd, body = env.request("POST", "/getonly/x", token=tok, body=b"0123456789",
                                   headers={"X-Request-Id": "count-403"})
        assert st == 403
        assert int(hd["content-length"]) == len(body) > 0
        denied_len = len(body)
        # baton's own 401
        st, hd, body401 = env.request("GET", "/api/x", headers={"X-Request-Id": "count-401"})
        assert st == 401 and int(hd["content-length"]) == len(body401)
        # an allowed request: the upstream's body, relayed
        st, hd, body_ok = env.request("POST", "/api/x?resp_bytes=1234", token=tok,
                                      body=b"x" * 300, headers={"X-Request-Id": "count-200"})
        assert st == 200 and len(body_ok) == 1234
        # a 502: nothing from the upstream, baton's own body
        st, hd, body502 = env.request("GET", "/dead/x", token=tok,
                                      headers={"X-Request-Id": "count-502"})
        assert st == 502
    finally:
        assert env.stop() == 0
    # the record's request_id is baton's own; the client's id is recorded beside it
    recs = {r["client_request_id"]: r for r in env.audit_records()}
    client_id = {r["request_id"]: r["client_request_id"] for r in recs.values()}
    assert recs["count-403"]["bytes_out"] == denied_len
    assert recs["count-403"]["upstream"] is None
    assert recs["count-401"]["bytes_out"] == len(body401)
    assert recs["count-200"]["bytes_out"] == 1234
    assert recs["count-200"]["upstream"]["bytes"] == 1234
    assert recs["count-200"]["request"]["bytes_in"] == 300
    assert recs["count-502"]["bytes_out"] == len(body502)
    # the upstream sent nothing: baton's 502 body is not the upstream's
    assert recs["count-502"]["upstream"]["bytes"] == 0
    sizes = {}
    for a in access_lines(env):
        sizes[client_id[a["request_id"]]] = int(a["httpRequest"]["responseSize"])
    assert sizes["count-403"] == denied_len
    assert sizes["count-401"] == len(body401)
    assert sizes["count-200"] == 1234
    assert sizes["count-502"] == len(body502)


# ------------------------------------------------------------ 2. policies

def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_check_suggests_policy_keys_and_warns_about_regex_globs(tmp_path, up):
    env = ServeEnv(tmp_path, up.port)
    pol = (
        '{\n'
        '  "step": "typo",\n'
        '  "route": { "path_prefx": "/typo/", "path_prefix": "/typo/" },\n'
        '  "upstream": "echo",\n'
        '  "callers": [{ "issuer": "test", "claims": { "sub": "x" } }],\n'
        '  "allow": [{ "methods": ["GET"], "paths": ["/typo/**"] }]\n'
        '}\n')
    write(env.dir / "policies" / "typo.json", pol)
    r = run_baton("check", "-c", env.dir / "baton.json")
    assert r.returncode == 1
    f = env.dir / "policies" / "typo.json"
    assert (f'{f}:{pos_of(pol, chr(34) + "path_prefx")}: error: route: unknown key "path_prefx" '
            f'(did you mean "path_prefix"?)') in r.stderr, r.stderr
    (env.dir / "policies" / "typo.json").unlink()

    regex = (
        '{\n'
        '  "step": "regex",\n'
        '  "route": { "path_prefix": "/regex/" },\n'
        '  "upstream": "echo",\n'
        '  "callers": [{ "issuer": "test", "claims": { "sub": "^arn:aws:states:.*$" } }],\n'
        '  "allow": [{ "methods": ["GET"], "paths": ["/regex/**"] }],\n'
        '  "require_headers": { "X-Run": "run-[12]" }\n'
        '}\n')
    write(env.dir / "policies" / "regex.json", regex)
    r = run_baton("check", "-c", env.dir / "baton.json")
    assert r.returncode == 0, "warnings do not fail check: " + r.stderr
    f = env.dir / "policies" / "regex.json"
    assert (f'{f}:{pos_of(regex, chr(34) + "^arn")}: warning: claim pattern "^arn:aws:states:.*$" looks like a regular '
            f'expression (it starts with the anchor "^")') in r.stderr, r.stderr
    assert (f'{f}:{pos_of(regex, chr(34) + "run-")}: warning: header value pattern "run-[12]" looks like a regular '
            f'expression (a bracket expression "[...]")') in r.stderr, r.stderr
    assert r.stderr.splitlines()[-1] == "baton check: 2 warnings"
    # the default policies (real ARNs, globs, paths) draw no warning
    (env.dir / "policies" / "regex.json").unlink()
    r = run_baton("check", "-c", env.dir / "baton.json")
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_fractional_rate_gives_retry_after_in_thousands_of_seconds(tmp_path, up):
    pols = {"slowrate": {"route": {"host": "*", "path_prefix": "/api/"}, "upstream": "echo",
                         "callers": [{"issuer": "test", "claims": {"sub": SUB}}],
                         "allow": [{"methods": ["GET"], "paths": ["/api/**"]}],
                         "limits": {"rate_per_s": 0.0002}}}
    env = ServeEnv(tmp_path, up.port, policies=pols)
    r = run_baton("check", "-c", env.dir / "baton.json")
    assert r.returncode == 0, r.stderr
    env.start()
    try:
        tok = env.token()
        st, _, _ = env.request("GET", "/api/once", token=tok)
        assert st == 200, "burst defaults to 1: the first request passes"
        st, hd, _ = env.request("GET", "/api/again", token=tok)
        assert st == 429
        assert 4990 <= int(hd["retry-after"]) <= 5000, hd
    finally:
        assert env.stop() == 0


def test_explain_shows_the_value_received_but_never_a_secret(tmp_path, up):
    pols = {"hdr": {"route": {"host": "*", "path_prefix": "/hdr/"}, "upstream": "echo",
                    "callers": [{"issuer": "test", "claims": {"sub": SUB, "tier": 2}}],
                    "allow": [{"methods": ["GET"], "paths": ["/hdr/**"]}],
                    "require_headers": {"X-Sfn-Execution": "arn:aws:states:*",
                                        "X-Api-Key": "k-*"}}}
    env = ServeEnv(tmp_path, up.port, policies=pols)
    cfg = env.dir / "baton.json"
    base = ["explain", "-c", cfg, "--method", "GET", "--path", "/hdr/x", "--issuer", "test"]
    claims = json.dumps({"iss": ISSUER, "sub": SUB, "tier": 2})
    r = run_baton(*base, "--claims", claims, "--header", "X-Sfn-Execution: arn:aws:lambda:x",
                  "--header", "X-Api-Key: k-1")
    assert r.returncode == 1
    assert ('miss:     header X-Sfn-Execution: got "arn:aws:lambda:x", which does not match '
            'glob "arn:aws:states:*"') in r.stdout, r.stdout
    # a header whose name says credential: the value is never printed
    r = run_baton(*base, "--claims", claims, "--header", "X-Sfn-Execution: arn:aws:states:x",
                  "--header", "X-Api-Key: sekrit-value-123", "--json")
    assert r.returncode == 1
    miss = json.loads(r.stdout)["miss"]
    assert miss["name"] == "X-Api-Key" and "[redacted] (16 bytes)" in miss["detail"], miss
    assert "sekrit" not in r.stdout + r.stderr
    # a claim of another type: its value is shown
    r = run_baton(*base, "--claims", json.dumps({"iss": ISSUER, "sub": SUB, "tier": "2"}),
                  "--header", "X-Sfn-Execution: arn:aws:states:x", "--header", "X-Api-Key: k-1")
    assert r.returncode == 1
    assert 'miss:     claim tier: expected an integer 2, got a string "2"' in r.stdout, r.stdout


# ----------------------------------------------------------- 3. jwks_file

def test_check_reads_the_jwks_file_as_serve_would(tmp_path, up):
    env = ServeEnv(tmp_path, up.port)
    cfg = env.dir / "baton.json"
    text = cfg.read_text()
    at = pos_of(text, '"jwks.json"')
    r = run_baton("check", "-c", cfg)
    assert r.returncode == 0, r.stderr
    jwks = env.dir / "jwks.json"
    good = jwks.read_text()

    jwks.unlink()
    r = run_baton("check", "-c", cfg)
    assert r.returncode == 1
    assert (f'{cfg}:{at}: error: issuer "test": cannot read jwks_file {jwks}: '
            f'No such file or directory') in r.stderr, r.stderr

    jwks.write_text('{"keys": [ {"kty": "RSA",, } ]}')
    r = run_baton("check", "-c", cfg)
    assert r.returncode == 1
    assert (f'{cfg}:{at}: error: issuer "test": key set rejected: key set is not valid JSON: ')\
        in r.stderr and "line 1 column" in r.stderr, r.stderr

    jwks.write_text('{"keys": [{"kty": "RSA", "kid": "weak", "n": "AQAB", "e": "AQAB"}]}')
    r = run_baton("check", "-c", cfg)
    assert r.returncode == 1
    assert f'{cfg}:{at}: error: issuer "test": key set has no usable key (1 skipped' in r.stderr, \
        r.stderr

    jwks.write_text("x" * (256 * 1024 + 1))
    r = run_baton("check", "-c", cfg)
    assert r.returncode == 1 and "larger than the key set cap" in r.stderr, r.stderr

    # one usable key and one that is not: loads, with a warning
    doc = json.loads(good)
    doc["keys"].append({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"})
    jwks.write_text(json.dumps(doc))
    r = run_baton("check", "-c", cfg)
    assert r.returncode == 0, r.stderr
    assert f'{jwks}: warning: issuer "test": 1 key skipped' in r.stderr, r.stderr


def pos_of(text, needle):
    i = text.index(needle)
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    return f"{line}:{col}"


def test_readme_policy_key_table_matches_the_loader():
    import subprocess
    from conftest import SRCDIR
    code = subprocess.run(["sh", str(SRCDIR / "scripts" / "policy_keys.sh")], capture_output=True,
                          text=True, check=True).stdout.split()
    readme = (SRCDIR / "README.md").read_text()
    section = readme.split("### Policy keys", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            rows.append(line.split("`")[1])
    assert len(code) >= 20
    assert sorted(rows) == sorted(code), (
        "README's policy key table and src/policy_load.c disagree: only in README %s, only in code %s"
        % (sorted(set(rows) - set(code)), sorted(set(code) - set(rows))))
    assert len(rows) == len(set(rows)), "a key listed twice"


# ------------------------------------------------------ 4. refused reloads

def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_a_refused_reload_shows_in_metrics_and_readyz(tmp_path, up):
    env = ServeEnv(tmp_path, up.port)
    env.start()
    try:
        st, _, body = env.admin("/metrics")
        m = body.decode()
        assert metric(m, "baton_config_last_reload_successful") == 1
        loaded = metric(m, "baton_config_last_reload_success_timestamp_seconds")
        assert abs(loaded - time.time()) < 60
        st, _, body = env.admin("/readyz")
        ready = json.loads(body)
        assert st == 200 and ready["config"]["last_reload_ok"] is True
        assert ready["config"]["generation"] == 1 and "error" not in ready["config"]

        time.sleep(1.1)  # the timestamps below must be able to differ
        bad = env.dir / "policies" / "typo.json"
        bad.write_text('{"step": "typo", "route": {"path_prefx": "/t/"}, "upstream": "echo",\n'
                       ' "callers": [{"issuer": "test", "claims": {"sub": "x"}}],\n'
                       ' "allow": [{"methods": ["GET"], "paths": ["/t/*"]}]}\n')
        env.signal(signal.SIGHUP)

        def refused():
            _, _, b = env.admin("/metrics")
            return metric(b.decode(), "baton_config_last_reload_successful") == 0
        assert wait_for(refused), env.log_text()
        st, _, body = env.admin("/metrics")
        m = body.decode()
        assert metric(m, "baton_config_last_reload_success_timestamp_seconds") == loaded, \
            "the running set's load time stays"
        st, _, body = env.admin("/readyz")
        ready = json.loads(body)
        assert st == 200, "the old set keeps serving: still ready"
        c = ready["config"]
        assert c["last_reload_ok"] is False and c["generation"] == 1
        assert c["error"].startswith(f'{bad}:1:27: route: missing required key "path_prefix"'), c
        assert c["error"].endswith("(and more)"), "the typo is a second error: " + c["error"]
        assert "older than the files" in c["note"] and c["reloads_refused"] == 1
        assert c["failed_at"] > c["loaded_at"]
        # requests still go through on the old set
        st, _, _ = env.request("GET", "/api/x", token=env.token())
        assert st == 200

        # fixed: the next reload is taken and the state clears
        bad.unlink()
        env.signal(signal.SIGHUP)

        def taken():
            _, _, b = env.admin("/metrics")
            return metric(b.decode(), "baton_config_last_reload_successful") == 1
        assert wait_for(taken), env.log_text()
        st, _, body = env.admin("/metrics")
        assert metric(body.decode(), "baton_config_last_reload_success_timestamp_seconds") > loaded
        ready = json.loads(env.admin("/readyz")[2])
        assert ready["config"]["last_reload_ok"] is True and ready["config"]["generation"] == 2
        assert "error" not in ready["config"] and ready["config"]["reloads_refused"] == 1
    finally:
        assert env.stop() == 0


def test_serve_logs_the_regex_warnings_at_start_and_reload(tmp_path, up):
    pols = {"api": {"route": {"host": "*", "path_prefix": "/api/"}, "upstream": "echo",
                    "callers": [{"issuer": "test", "claims": {"sub": SUB}}],
                    "allow": [{"methods": ["GET"], "paths": ["/api/**"]}],
                    "require_headers": {"X-Run": "^run-[0-9]+$"}}}
    env = ServeEnv(tmp_path, up.port, policies=pols)
    env.start()
    try:
        def warned(n):
            lines = [json.loads(l) for l in env.log_text().splitlines() if "regular expression" in l]
            return len(lines) >= n and lines
        lines = wait_for(lambda: warned(1))
        assert lines and lines[0]["severity"] == "WARNING" and lines[0]["line"] > 0, env.log_text()
        assert lines[0]["file"].endswith("api.json") and "^run-[0-9]+$" in lines[0]["message"]
        env.signal(signal.SIGHUP)
        assert wait_for(lambda: warned(2)), "logged again at reload: " + env.log_text()
    finally:
        assert env.stop() == 0

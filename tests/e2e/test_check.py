"""`baton check`: the sample config and policies pass; broken policies fail with
every error at its file:line:column; usage errors exit 2."""
import json

from conftest import run_baton
from policy_fixtures import SAMPLE_CONFIG, make_config_dir, minimal_policy, pos


def test_sample_config_and_policies_exit_0_and_list_what_was_loaded():
    r = run_baton("check", "-c", SAMPLE_CONFIG)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "issuers (2):" in out and " aws " in out and " cognito " in out
    assert "upstreams (3):" in out
    for name in ("cleanup", "billing", "approvals"):
        assert name in out
    assert "steps (3):" in out
    for step in ("weekly-cleanup", "billing-reconcile", "approval-callback"):
        assert step in out
    assert "routes (3, in match order):" in out
    assert "/billing/" in out and "-> billing-reconcile (upstream billing)" in out
    assert r.stderr == ""


def test_baton_config_environment_variable_is_used_without_c():
    r = run_baton("check", env={"BATON_CONFIG": str(SAMPLE_CONFIG)})
    assert r.returncode == 0, r.stderr
    assert "steps (3):" in r.stdout


def test_every_error_of_every_policy_is_printed_with_file_line_column(tmp_path):
    bad1 = (
        '{\n'
        '  "step": "bad-one",\n'
        '  "route": { "host": "*", "path_prefix": "/one/" },\n'
        '  "upstream": "payroll",\n'
        '  "callers": [{ "issuer": "aws", "claims": { "sub": "x" }, "role": "admin" }],\n'
        '  "allow": [{ "methods": ["post"], "paths": ["/one/../x"] }],\n'
        '  "limits": { "rate_per_s": 0 }\n'
        '}\n'
    )
    bad2 = (
        '{\n'
        '  "step": "bad-two",\n'
        '  "step": "again",\n'
        '  "route": { "path_prefix": "/two/" },\n'
        '  "upstream": "billing",\n'
        '  "callers": [{ "issuer": "github", "claims": { "sub": "x" } }],\n'
        '  "allow": [{ "methods": ["GET"], "paths": ["/two/**"] }]\n'
        '}\n'
    )
    cfg = make_config_dir(tmp_path, {"bad1.json": bad1, "bad2.json": bad2,
                                     "good.json": minimal_policy("good", "/good/")})
    r = run_baton("check", "-c", cfg)
    assert r.returncode == 1
    f1 = tmp_path / "policies" / "bad1.json"
    f2 = tmp_path / "policies" / "bad2.json"
    expected = [
        f'{f1}:{pos(bad1, chr(34) + "payroll")}: error: upstream "payroll" is not defined in',
        f'{f1}:{pos(bad1, chr(34) + "role")}: error: callers[0]: unknown key "role"',
        f'{f1}:{pos(bad1, chr(34) + "post")}: error: method "post" must be an upper-case token',
        f'{f1}:{pos(bad1, chr(34) + "/one/../x")}: error: path pattern "/one/../x" can never match a canonical path (path_dot_segment)',
        f'{f1}:{pos(bad1, "0 }")}: error: "rate_per_s" is 0, the range is greater than 0 up to 1000000',
        f'{f2}:{pos(bad2, chr(34) + "step", 2)}: error: duplicate key "step" (first at line 2, column 3)',
        f'{f2}:{pos(bad2, chr(34) + "github")}: error: issuer "github" is not defined in',
    ]
    lines = r.stderr.splitlines()
    for e in expected:
        assert any(line.startswith(e) for line in lines), (e, r.stderr)
    assert lines[-1] == "baton check: 7 errors", r.stderr
    assert r.stdout == ""


def test_duplicate_route_names_both_files(tmp_path):
    a = minimal_policy("step-a", "/same/")
    b = minimal_policy("step-b", "/same/")
    cfg = make_config_dir(tmp_path, {"a.json": a, "b.json": b})
    r = run_baton("check", "-c", cfg)
    assert r.returncode == 1
    fa = tmp_path / "policies" / "a.json"
    fb = tmp_path / "policies" / "b.json"
    want = (f'{fb}:{pos(b, "{", 2)}: error: route (host "*", path_prefix "/same/") '
            f'is also claimed by {fa}:{pos(a, "{", 2)}')
    assert want in r.stderr, r.stderr


def test_duplicate_step_names_both_files(tmp_path):
    a = minimal_policy("same-step", "/a/")
    b = minimal_policy("same-step", "/b/")
    cfg = make_config_dir(tmp_path, {"a.json": a, "b.json": b})
    r = run_baton("check", "-c", cfg)
    assert r.returncode == 1
    fa = tmp_path / "policies" / "a.json"
    fb = tmp_path / "policies" / "b.json"
    assert (f'{fb}:{pos(b, chr(34) + "same-step")}: error: step "same-step" is also defined by '
            f'{fa}:{pos(a, chr(34) + "same-step")}') in r.stderr


def test_json_syntax_error_has_a_position(tmp_path):
    text = '{\n  "step": "s",\n  "route": { "path_prefix": "/s/" ,, }\n}\n'
    cfg = make_config_dir(tmp_path, {"s.json": text})
    r = run_baton("check", "-c", cfg)
    assert r.returncode == 1
    f = tmp_path / "policies" / "s.json"
    assert f"{f}:3:" in r.stderr and "invalid JSON" in r.stderr


def test_empty_policy_directory_is_an_error(tmp_path):
    cfg = make_config_dir(tmp_path, {})
    r = run_baton("check", "-c", cfg)
    assert r.returncode == 1
    assert "no step policy (*.json) in the policy directory" in r.stderr


def test_config_errors_are_reported_and_exit_1(tmp_path):
    cfg = tmp_path / "baton.json"
    cfg.write_text('{\n  "listen": "0.0.0.0:8080",\n  "bogus_key": 1\n}\n')
    r = run_baton("check", "-c", cfg)
    assert r.returncode == 1
    assert f"{cfg}:3:3: error:" in r.stderr, r.stderr


def test_missing_config_file_exits_1(tmp_path):
    r = run_baton("check", "-c", tmp_path / "nope.json")
    assert r.returncode == 1
    assert "nope.json" in r.stderr


def test_unknown_option_exits_2_with_usage():
    r = run_baton("check", "--frobnicate")
    assert r.returncode == 2
    assert "usage: baton check" in r.stderr


def test_stray_argument_exits_2():
    r = run_baton("check", "-c", SAMPLE_CONFIG, "extra")
    assert r.returncode == 2


def test_help_exits_0():
    r = run_baton("check", "--help")
    assert r.returncode == 0
    assert "usage: baton check" in r.stdout


def test_every_sample_policy_is_strict_json_with_known_keys():
    """The samples double as fixtures: each one names an upstream and issuers of
    the sample config, so `check` would catch a drift between them."""
    cfg = json.loads(SAMPLE_CONFIG.read_text())
    upstreams = {u["name"] for u in cfg["upstreams"]}
    issuers = {i["name"] for i in cfg["issuers"]}
    pdir = (SAMPLE_CONFIG.parent / cfg["policies"]).resolve()
    files = sorted(pdir.glob("*.json"))
    assert len(files) == 3
    for f in files:
        p = json.loads(f.read_text())
        assert p["upstream"] in upstreams
        assert all(c["issuer"] in issuers for c in p["callers"])

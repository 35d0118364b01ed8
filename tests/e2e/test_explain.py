"""`baton explain`: decisions on the sample workflows (allow, each kind of deny,
would_deny), the closest miss, --json output, and exit codes (0 allow, 1 deny
or would_deny, 2 usage or config errors)."""
import json

from conftest import run_baton
from policy_fixtures import (SAMPLE_CONFIG, SAMPLE_POLICIES, issuer_iss, make_config_dir,
                             minimal_policy, pos)

EXEC = "arn:aws:states:us-east-1:123456789012:execution:billing-after-deploy:run-42"
BILLING_FILE = SAMPLE_POLICIES / "billing-reconcile.json"


def cognito_claims(**extra):
    c = {"iss": issuer_iss("cognito"), "client_id": "5kq8example1ab2cd3ef4gh5ij6",
         "token_use": "access", "scope": "billing-api/reconcile"}
    c.update(extra)
    return c


def aws_claims(role, region="us-east-1", account="123456789012"):
    return {"iss": issuer_iss("aws"), "sub": f"arn:aws:iam::{account}:role/{role}",
            "https://sts.amazonaws.com/": {"aws_account": account, "org_id": "o-a1b2c3d4e5",
                                           "source_region": region}}


def explain(*args, claims=None, config=SAMPLE_CONFIG, json_out=False):
    argv = ["explain", "-c", config, *args]
    if claims is not None:
        argv += ["--claims", json.dumps(claims)]
    if json_out:
        argv.append("--json")
    return run_baton(*argv)


def field(out, name):
    """The value of a `name:` line of the text output."""
    for line in out.splitlines():
        if line.startswith(name + ":"):
            return line[len(name) + 1:].strip()
    return None


# ---------------------------------------------------------------- allow

def test_billing_reconcile_from_step_functions_is_allowed_with_caller_and_rule_lines():
    r = explain("--method", "POST", "--path", "/billing/reconcile",
                "--header", f"X-Sfn-Execution: {EXEC}", claims=cognito_claims())
    assert r.returncode == 0, r.stdout + r.stderr
    assert field(r.stdout, "decision") == "allow"
    assert field(r.stdout, "reason") == "allowed (200)"
    assert field(r.stdout, "step") == "billing-reconcile (enforce)"
    assert field(r.stdout, "policy").split(" ")[0].endswith("/policies/billing-reconcile.json")
    text = BILLING_FILE.read_text()
    assert field(r.stdout, "caller") == f"callers[0] at {field(r.stdout, 'policy').split(' ')[0]}:{pos(text, '{', 3)} (issuer cognito)"
    rule = field(r.stdout, "rule")
    rule_at = pos(text, '{ "methods"')
    assert rule.startswith("allow[0] at ") and rule.endswith(f':{rule_at} (path pattern "/billing/reconcile")')


def test_weekly_cleanup_from_lambda_is_allowed():
    r = explain("--method", "POST", "--path", "/cleanup/weekly",
                claims=aws_claims("weekly-cleanup-lambda"))
    assert r.returncode == 0, r.stdout
    assert field(r.stdout, "step") == "weekly-cleanup (enforce)"


def test_approval_callback_is_allowed():
    r = explain("--method", "POST", "--path", "/approvals/chg-1842/decision",
                "--header", "X-Sfn-Execution: arn:aws:states:us-west-2:123456789012:execution:change-approval:abc",
                claims=aws_claims("approval-callback-prod"))
    assert r.returncode == 0, r.stdout
    assert field(r.stdout, "step") == "approval-callback (enforce)"


def test_issuer_flag_replaces_the_iss_claim():
    claims = cognito_claims()
    del claims["iss"]
    r = explain("--method", "GET", "--path", "/billing/runs/7", "--issuer", "cognito",
                "--header", f"X-Sfn-Execution: {EXEC}", claims=claims)
    assert r.returncode == 0, r.stdout


def test_claims_from_a_file(tmp_path):
    f = tmp_path / "claims.json"
    f.write_text(json.dumps(aws_claims("weekly-cleanup-lambda")))
    r = run_baton("explain", "-c", SAMPLE_CONFIG, "--method", "GET", "--path", "/cleanup/runs/9",
                  "--claims", f"@{f}")
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------- deny

def test_wrong_region_is_no_caller_match_with_the_closest_miss():
    r = explain("--method", "POST", "--path", "/cleanup/weekly",
                claims=aws_claims("weekly-cleanup-lambda", region="eu-west-1"))
    assert r.returncode == 1
    assert field(r.stdout, "decision") == "deny"
    assert field(r.stdout, "reason") == "no_caller_match (403)"
    text = (SAMPLE_POLICIES / "weekly-cleanup.json").read_text()
    miss = field(r.stdout, "miss")
    assert miss.startswith('claim "https://sts.amazonaws.com/".source_region: got "eu-west-1", '
                           'expected one of ["us-east-1", "us-west-2"]'), miss
    assert miss.endswith(f'weekly-cleanup.json:{pos(text, "[" + chr(34) + "us-east-1")})'), miss
    assert field(r.stdout, "closest").startswith("callers[0] at ")


def test_role_of_another_step_is_no_caller_match():
    r = explain("--method", "POST", "--path", "/cleanup/weekly", claims=aws_claims("billing-lambda"))
    assert r.returncode == 1
    assert 'claim sub: expected "arn:aws:iam::123456789012:role/weekly-cleanup-lambda"' in r.stdout


def test_missing_scope_is_scope_missing():
    r = explain("--method", "POST", "--path", "/billing/reconcile", "--header", f"X-Sfn-Execution: {EXEC}",
                claims=cognito_claims(scope="billing-api/read"))
    assert r.returncode == 1
    assert field(r.stdout, "reason") == "scope_missing (403)"
    assert field(r.stdout, "miss").startswith("scope billing-api/reconcile: ")


def test_wrong_method_is_no_rule_match_naming_the_rule():
    r = explain("--method", "DELETE", "--path", "/billing/reconcile", "--header", f"X-Sfn-Execution: {EXEC}",
                claims=cognito_claims())
    assert r.returncode == 1
    assert field(r.stdout, "reason") == "no_rule_match (403)"
    assert field(r.stdout, "closest").startswith("allow[0] at ")
    assert field(r.stdout, "miss").startswith('method DELETE: method "DELETE" is not one of [POST]')


def test_duplicate_required_header_is_header_mismatch():
    r = explain("--method", "POST", "--path", "/billing/reconcile",
                "--header", f"X-Sfn-Execution: {EXEC}", "--header", f"x-sfn-execution: {EXEC}",
                claims=cognito_claims())
    assert r.returncode == 1
    assert field(r.stdout, "reason") == "header_mismatch (403)"
    assert "present 2 times" in field(r.stdout, "miss")


def test_missing_and_mismatched_header():
    r = explain("--method", "POST", "--path", "/billing/reconcile", claims=cognito_claims())
    assert r.returncode == 1 and "absent from the request" in r.stdout
    r = explain("--method", "POST", "--path", "/billing/reconcile",
                "--header", "X-Sfn-Execution: arn:aws:states:us-east-1:999999999999:execution:x:y",
                claims=cognito_claims())
    assert r.returncode == 1
    assert field(r.stdout, "miss").startswith(
        'header X-Sfn-Execution: got "arn:aws:states:us-east-1:999999999999:execution:x:y", '
        'which does not match glob "arn:aws:states:')


def test_non_canonical_paths_are_denied_with_their_reason():
    cases = {
        "/billing/../cleanup/weekly": "path_dot_segment",
        "/billing%2Freconcile": "path_encoded_slash",
        "//billing/reconcile": "path_empty_segment",
        "/billing/reconcile;x=1": "path_semicolon",
        "/billing/%72econcile": "path_noncanonical_escape",
    }
    for target, reason in cases.items():
        r = explain("--method", "POST", "--path", target, claims=cognito_claims())
        assert r.returncode == 1, target
        assert field(r.stdout, "reason") == f"{reason} (400)", (target, r.stdout)


def test_unrouted_path_is_no_route():
    r = explain("--method", "GET", "--path", "/admin", claims=cognito_claims())
    assert r.returncode == 1
    assert field(r.stdout, "reason") == "no_route (404)"


def test_unknown_iss_is_unknown_issuer_and_missing_iss_is_issuer_missing():
    r = explain("--method", "POST", "--path", "/cleanup/weekly",
                claims={"iss": "https://evil.example", "sub": "x"})
    assert r.returncode == 1 and field(r.stdout, "reason") == "unknown_issuer (401)"
    r = explain("--method", "POST", "--path", "/cleanup/weekly", claims={"sub": "x"})
    assert r.returncode == 1 and field(r.stdout, "reason") == "issuer_missing (401)"


def test_claims_of_the_right_shape_from_the_wrong_issuer_do_not_match():
    claims = aws_claims("weekly-cleanup-lambda")
    claims["iss"] = issuer_iss("cognito")
    r = explain("--method", "POST", "--path", "/cleanup/weekly", claims=claims)
    assert r.returncode == 1
    assert field(r.stdout, "miss").startswith('issuer cognito: no callers entry is for issuer "cognito"')


# ---------------------------------------------------------------- dry_run, hosts

def test_dry_run_deny_is_would_deny_and_exits_1(tmp_path):
    cfg = make_config_dir(tmp_path, {"t.json": minimal_policy("trial", "/trial/", mode="dry_run")})
    r = explain("--method", "GET", "--path", "/trial/x", claims=aws_claims("someone-else"), config=cfg)
    assert r.returncode == 1
    assert field(r.stdout, "decision") == "would_deny"
    assert field(r.stdout, "reason") == "no_caller_match (403)"
    assert "dry_run" in field(r.stdout, "note")
    ok = explain("--method", "GET", "--path", "/trial/x", claims=aws_claims("x"), config=cfg)
    assert ok.returncode == 0 and field(ok.stdout, "decision") == "allow"


def test_exact_host_wins_over_star_and_the_port_is_stripped(tmp_path):
    cfg = make_config_dir(tmp_path, {
        "star.json": minimal_policy("star", "/api/v1/"),
        "exact.json": minimal_policy("exact", "/", host="internal.example.com"),
    })
    claims = aws_claims("x")
    r = explain("--method", "GET", "--path", "/api/v1/x", "--host", "Internal.Example.com:8443",
                claims=claims, config=cfg)
    assert field(r.stdout, "step") == "exact (enforce)", r.stdout
    r = explain("--method", "GET", "--path", "/api/v1/x", "--host", "other.example.com",
                claims=claims, config=cfg)
    assert field(r.stdout, "step") == "star (enforce)"
    r = explain("--method", "GET", "--path", "/api/v1/x", claims=claims, config=cfg)
    assert field(r.stdout, "step") == "star (enforce)"


# ---------------------------------------------------------------- --json

def test_json_output_on_allow():
    r = explain("--method", "GET", "--path", "/billing/runs/7?verbose=1", "--header", f"X-Sfn-Execution: {EXEC}",
                claims=cognito_claims(), json_out=True)
    assert r.returncode == 0
    o = json.loads(r.stdout)
    assert o["decision"] == "allow" and o["reason"] == "allowed" and o["status"] == 200
    assert o["path"] == "/billing/runs/7" and o["query"] == "verbose=1"
    assert o["step"] == "billing-reconcile" and o["mode"] == "enforce" and o["upstream"] == "billing"
    assert o["issuer"] == "cognito"
    assert o["policy"]["file"].endswith("billing-reconcile.json") and len(o["policy"]["sha256"]) == 64
    text = BILLING_FILE.read_text()
    assert o["caller"]["index"] == 0
    assert f'{o["caller"]["line"]}:{o["caller"]["column"]}' == pos(text, "{", 3)
    assert o["rule"]["index"] == 1 and o["rule"]["pattern"] == "/billing/runs/*"
    assert o["miss"] is None


def test_json_output_on_deny_has_the_miss():
    r = explain("--method", "POST", "--path", "/billing/reconcile",
                claims=cognito_claims(client_id="another-client"), json_out=True)
    assert r.returncode == 1
    o = json.loads(r.stdout)
    assert o["decision"] == "deny" and o["reason"] == "no_caller_match" and o["status"] == 403
    m = o["miss"]
    assert m["kind"] == "claim" and m["name"] == "client_id"
    assert m["detail"] == 'expected "5kq8example1ab2cd3ef4gh5ij6", got "another-client"'
    text = BILLING_FILE.read_text()
    assert f'{m["line"]}:{m["column"]}' == pos(text, '"5kq8example')


def test_json_output_on_a_rejected_path():
    r = explain("--method", "GET", "--path", "/billing/./runs", claims=cognito_claims(), json_out=True)
    assert r.returncode == 1
    o = json.loads(r.stdout)
    assert o["reason"] == "path_dot_segment" and o["status"] == 400
    assert o["path"] is None and o["target"] == "/billing/./runs" and o["step"] is None


# ---------------------------------------------------------------- usage and config errors

def test_usage_errors_exit_2():
    base = ["explain", "-c", SAMPLE_CONFIG]
    claims = json.dumps(cognito_claims())
    for argv, msg in [
        ([*base, "--path", "/x", "--claims", claims], "--method and --path are required"),
        ([*base, "--method", "GET", "--claims", claims], "--method and --path are required"),
        ([*base, "--method", "GET", "--path", "/x"], "exactly one of --claims or --token"),
        ([*base, "--method", "GET", "--path", "/x", "--claims", claims, "--token", "t"], "exactly one"),
        ([*base, "--method", "GET", "--path", "/x", "--claims", "{not json"], "--claims is not JSON"),
        ([*base, "--method", "GET", "--path", "/x", "--claims", "[1]"], "must be a JSON object"),
        ([*base, "--method", "G T", "--path", "/x", "--claims", claims], "not an HTTP method"),
        ([*base, "--method", "GET", "--path", "/x", "--claims", claims, "--header", "NoColon"], "Name: value"),
        ([*base, "--method", "GET", "--path", "/x", "--claims", claims, "--issuer", "github"], "not an issuer"),
        ([*base, "--method", "GET", "--path", "/x", "--claims", claims, "--issuer", "aws"], "is not issuer aws"),
        ([*base, "--bogus"], "unknown or incomplete option"),
    ]:
        r = run_baton(*argv)
        assert r.returncode == 2, (argv, r.stdout, r.stderr)
        assert msg in r.stderr, (msg, r.stderr)


def test_broken_policy_exits_2_with_positions(tmp_path):
    text = '{\n  "step": "s",\n  "unknown": 1\n}\n'
    cfg = make_config_dir(tmp_path, {"s.json": text})
    r = explain("--method", "GET", "--path", "/x", claims=cognito_claims(), config=cfg)
    assert r.returncode == 2
    assert f'{tmp_path / "policies" / "s.json"}:{pos(text, chr(34) + "unknown")}: error: unknown key "unknown"' in r.stderr

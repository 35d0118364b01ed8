"""`baton explain --token`: the issuer's keys are fetched once (discovery and
JWKS from the loopback AWS and Cognito stand-ins), the token is verified as the
server verifies it, and the policy decides on the verified claims."""
import json
import time

import pytest

from conftest import run_baton
from idp import AwsIssuer, CognitoIssuer, Key, sign_jws

AUD = "https://gateway.example.com"
ROLE = "arn:aws:iam::123456789012:role/sfn-billing"


@pytest.fixture
def setup(tmp_path):
    aws = AwsIssuer().start()
    cog = CognitoIssuer().start()
    cfg = {
        "listen": "127.0.0.1:18999", "admin_listen": "",
        "issuers": [
            {"name": "aws", "issuer": aws.issuer, "discovery": True, "allow_http": True,
             "audiences": [AUD], "algorithms": ["ES384", "RS256"]},
            {"name": "cognito", "issuer": cog.issuer, "jwks_uri": cog.jwks_uri, "allow_http": True,
             "audiences": ["3q8v1example7clientid"], "audience_claim": "client_id",
             "algorithms": ["RS256"], "token_use": "access"},
        ],
        "google": {"credentials": "local"},
        "upstreams": [{"name": "billing", "url": "http://127.0.0.1:9", "identity": "none"}],
        "policies": "policies",
    }
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "billing.json").write_text(json.dumps({
        "step": "billing", "route": {"host": "*", "path_prefix": "/billing/"}, "upstream": "billing",
        "callers": [
            {"issuer": "aws", "claims": {"sub": ROLE,
                                         "https://sts.amazonaws.com/": {"aws_account": "123456789012"}}},
            {"issuer": "cognito", "claims": {"client_id": "3q8v1example7clientid"},
             "scopes": ["billing/reconcile"]}],
        "allow": [{"methods": ["POST"], "paths": ["/billing/reconcile"]}],
    }))
    (tmp_path / "baton.json").write_text(json.dumps(cfg))
    yield aws, cog, tmp_path / "baton.json"
    aws.stop()
    cog.stop()


def explain(cfg, token, method="POST", path="/billing/reconcile", *extra):
    return run_baton("explain", "-c", cfg, "--method", method, "--path", path, "--token", token,
                     "--json", *extra)


def test_valid_aws_token_is_verified_then_allowed(setup):
    aws, _, cfg = setup
    r = explain(cfg, aws.mint(role_arn=ROLE, audience=AUD))
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["decision"] == "allow"
    assert out["authentication"]["reason"] == "allowed"
    assert out["authentication"]["sub"] == ROLE
    assert out["issuer"] == "aws"
    assert aws.count("jwks") == 1, "keys are fetched exactly once"


def test_valid_token_of_another_role_is_verified_then_denied_by_policy(setup):
    aws, _, cfg = setup
    r = explain(cfg, aws.mint(role_arn="arn:aws:iam::123456789012:role/other", audience=AUD))
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["authentication"]["reason"] == "allowed"
    assert out["reason"] == "no_caller_match"


def test_cognito_access_token_without_aud_passes_on_client_id_and_scope(setup):
    _, cog, cfg = setup
    r = explain(cfg, cog.mint())
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["decision"] == "allow"


def test_cognito_token_without_the_required_scope_is_scope_missing(setup):
    _, cog, cfg = setup
    r = explain(cfg, cog.mint(scope="billing/read"))
    assert r.returncode == 1
    assert json.loads(r.stdout)["reason"] == "scope_missing"


def test_cognito_id_token_where_access_is_required_is_token_use_mismatch(setup):
    _, cog, cfg = setup
    r = explain(cfg, cog.mint(token_use="id"))
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["reason"] == "token_use_mismatch"
    assert out["status"] == 401


@pytest.mark.parametrize("mutate,reason", [
    (lambda aws: aws.mint(role_arn=ROLE, audience="https://elsewhere"), "audience_mismatch"),
    (lambda aws: aws.mint(role_arn=ROLE, audience=AUD, now=time.time() - 3600), "expired"),
    (lambda aws: aws.mint(role_arn=ROLE, audience=AUD)[:-4] + "AAAA", "bad_signature"),
    (lambda aws: sign_jws(Key("ES384", kid="rogue-kid"), {"iss": aws.issuer, "aud": AUD, "sub": ROLE,
                                                          "exp": int(time.time()) + 300},
                          {"typ": "JWT"}), "unknown_kid"),
    (lambda aws: "not.a.jwt", "token_bad_encoding"),
])
def test_bad_tokens_are_refused_with_their_precise_reason(setup, mutate, reason):
    aws, _, cfg = setup
    r = explain(cfg, mutate(aws))
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["decision"] == "deny"
    assert out["authentication"]["reason"] == reason, out
    assert out["reason"] == reason


def test_route_is_decided_before_authentication(setup):
    aws, _, cfg = setup
    r = explain(cfg, "garbage", "GET", "/nothing-routes-here")
    assert r.returncode == 1
    assert json.loads(r.stdout)["reason"] == "no_route"


def test_issuer_down_at_explain_time_fails_closed_with_keys_unavailable(setup):
    aws, _, cfg = setup
    tok = aws.mint(role_arn=ROLE, audience=AUD)
    aws.down("refuse")
    r = explain(cfg, tok)
    assert r.returncode == 1
    assert json.loads(r.stdout)["reason"] == "keys_unavailable"
    assert "did not load" in r.stderr


def test_token_and_claims_together_is_a_usage_error(setup):
    _, _, cfg = setup
    r = run_baton("explain", "-c", cfg, "--method", "GET", "--path", "/billing/x",
                  "--token", "a.b.c", "--claims", "{}")
    assert r.returncode == 2

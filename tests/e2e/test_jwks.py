"""Key sets end to end: `baton serve` against the loopback stand-ins of an AWS
IAM outbound identity issuer (discovery + JWKS, ES384 and RS256) and an Amazon
Cognito user pool (jwks_uri, RS256 access tokens without typ or aud).

Every check goes through the real binary: a request with a token, the status
it gets, what reached the upstream, the audit record's reason, /readyz, and the
requests each stand-in counted (to bound what baton costs an issuer)."""
import json
import threading
import time
import uuid

import pytest

from idp import STS_NS, AwsIssuer, CognitoIssuer, Key, sign_jws
from serve_env import ServeEnv

ROLE = "arn:aws:iam::123456789012:role/sfn-billing"
AUD = "https://gateway.example.com"
CLIENT = "3q8v1example7clientid"


def issuer_configs(aws, cognito, never=None, min_s=1):
    out = [
        {"name": "aws", "issuer": aws.issuer, "discovery": True, "audiences": [AUD],
         "algorithms": ["RS256", "ES384"], "token_types": ["JWT"], "allow_http": True,
         "refresh_min_s": min_s, "refresh_max_s": 3600, "fetch_timeout_ms": 1000, "leeway_s": 5},
        {"name": "cognito", "issuer": cognito.issuer, "jwks_uri": cognito.jwks_uri,
         "audiences": [CLIENT], "audience_claim": "client_id", "token_use": "access",
         "algorithms": ["RS256"], "allow_http": True, "refresh_min_s": min_s,
         "fetch_timeout_ms": 1000, "leeway_s": 5},
    ]
    if never is not None:
        out.append({"name": "never", "issuer": never.issuer, "discovery": True,
                    "audiences": [AUD], "algorithms": ["ES384", "RS256"], "allow_http": True,
                    "refresh_min_s": 1, "fetch_timeout_ms": 1000})
    return out


def policies(with_never=False):
    allow = [{"methods": ["GET", "POST"], "paths": ["/**"]}]
    p = {
        "aws": {"route": {"host": "*", "path_prefix": "/aws/"}, "upstream": "gcp",
                "callers": [{"issuer": "aws", "claims": {
                    "sub": ROLE, STS_NS: {"aws_account": "123456789012"}}}],
                "allow": allow},
        "cognito": {"route": {"host": "*", "path_prefix": "/cog/"}, "upstream": "gcp",
                    "callers": [{"issuer": "cognito", "claims": {"client_id": CLIENT}}],
                    "allow": allow},
    }
    if with_never:
        p["never"] = {"route": {"host": "*", "path_prefix": "/never/"}, "upstream": "gcp",
                      "callers": [{"issuer": "never", "claims": {"sub": ROLE}}], "allow": allow}
    return p


@pytest.fixture
def idps():
    aws = AwsIssuer().start()
    cognito = CognitoIssuer().start()
    yield aws, cognito
    aws.stop()
    cognito.stop()


def serve(tmp_path, up, aws, cognito, never=None, wait=True, min_s=1, ready_timeout_ms=None):
    extra = {"issuers": issuer_configs(aws, cognito, never, min_s)}
    if ready_timeout_ms is not None:
        extra["ready_timeout_ms"] = ready_timeout_ms
    env = ServeEnv(tmp_path, up.port, extra=extra, policies=policies(never is not None))
    env.start(wait=wait)
    return env


def eventually(fn, timeout=5.0, step=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def status(env, path, token):
    return env.request("GET", path, token=token)[0]


def test_aws_and_cognito_tokens(tmp_path, up, idps):
    aws, cognito = idps
    env = serve(tmp_path, up, aws, cognito)
    try:
        assert aws.count("discovery") == 1 and aws.count("jwks") == 1, \
            "one discovery and one JWKS fetch at start"
        assert cognito.count("jwks") == 1 and cognito.count("discovery") == 0, \
            "a jwks_uri issuer is fetched directly"
        es = aws.mint(role_arn=ROLE, audience=AUD, alg="ES384")
        rs = aws.mint(role_arn=ROLE, audience=AUD, alg="RS256")
        assert status(env, "/aws/run", es) == 200, "AWS ES384 token accepted"
        assert status(env, "/aws/run", rs) == 200, "AWS RS256 token accepted"
        assert status(env, "/cog/run", cognito.mint(client_id=CLIENT)) == 200, \
            "Cognito access token (no typ, no aud, client_id) accepted"
        assert status(env, "/cog/run", cognito.mint(client_id=CLIENT, token_use="id")) == 401, \
            "a Cognito ID token is refused where an access token is required"
        assert status(env, "/aws/run", aws.mint(role_arn=ROLE, audience="https://other")) == 401
        assert status(env, "/aws/run", aws.mint(role_arn=ROLE, account="999999999999")) == 403, \
            "a token of another account authenticates but matches no caller"
        # an AWS token presented to the Cognito step: authenticated by its own issuer,
        # never by the other one's keys
        assert status(env, "/cog/run", es) == 403
        # a key the issuer never published, with the kid of one it did
        now = int(time.time())
        forged = sign_jws(Key("ES384", kid=aws.kids()[0]),
                          {"iss": aws.issuer, "aud": AUD, "sub": ROLE, "iat": now, "exp": now + 300},
                          {"typ": "JWT"})
        assert status(env, "/aws/run", forged) == 401, "a forged signature under a known kid fails"
        st, _, body = env.admin("/readyz")
        ready = json.loads(body)
        assert st == 200 and ready["keys"]["ready"] is True
        assert {i["name"]: i["keys"] for i in ready["keys"]["issuers"]} == {"aws": 2, "cognito": 1}
    finally:
        assert env.stop() == 0
    reasons = [r["reason"] for r in env.audit_records()]
    assert reasons == ["allowed", "allowed", "allowed", "token_use_mismatch", "audience_mismatch",
                       "no_caller_match", "no_caller_match", "bad_signature"]


def test_rotation_and_revocation(tmp_path, up, idps):
    aws, cognito = idps
    env = serve(tmp_path, up, aws, cognito)
    try:
        old_kid = aws.kids()[0]  # the ES384 key
        old_tok = aws.mint(role_arn=ROLE, audience=AUD, kid=old_kid)
        assert status(env, "/aws/run", old_tok) == 200
        new = aws.rotate("ES384")
        new_tok = aws.mint(role_arn=ROLE, audience=AUD, kid=new.kid)
        # the first request with the new kid waits for the refresh it triggers
        # and is decided on the new key set: served at once
        assert status(env, "/aws/run", new_tok) == 200, \
            "a rotated-in key is served on its first token"
        assert status(env, "/aws/run", old_tok) == 200, "the old key works while still published"
        # revoke the old key: it leaves the JWKS; the next refresh (triggered here by
        # an unknown kid) must invalidate tokens signed by it, cached ones included
        aws.remove_key(old_kid)
        probe = aws.mint(role_arn=ROLE, audience=AUD, kid=aws.rotate("RS256").kid)
        assert eventually(lambda: status(env, "/aws/run", probe) == 200, 4)
        assert eventually(lambda: status(env, "/aws/run", old_tok) == 401, 4), \
            "a token signed by a removed key fails after the refresh (no stale cache hit)"
        assert status(env, "/aws/run", new_tok) == 200
    finally:
        assert env.stop() == 0
    reasons = [r["reason"] for r in env.audit_records()]
    assert reasons[:3] == ["allowed"] * 3, "no request with the rotated-in kid failed"
    assert "unknown_kid" in reasons, "the removed key's token is recorded as unknown_kid"


def test_issuer_down_keeps_cached_keys(tmp_path, up, idps):
    aws, cognito = idps
    env = serve(tmp_path, up, aws, cognito)
    try:
        tok = aws.mint(role_arn=ROLE, audience=AUD)
        assert status(env, "/aws/run", tok) == 200
        for mode in ("refuse", "error", "garbage", "hang"):
            aws.down(mode)
            if mode == "hang":
                aws.hang_s = 3  # beyond fetch_timeout_ms = 1000
            before = aws.count()
            # unknown kids force refresh attempts while the issuer is down; a kid
            # that may have rotated in where baton cannot see is our outage: 503
            junk = aws.mint(role_arn=ROLE, audience=AUD, header={"kid": "missing-" + mode})
            st, hd, _ = env.request("GET", "/aws/run", token=junk)
            assert st == 503 and hd.get("retry-after"), "issuer %s: unknown kid, retryable" % mode
            time.sleep(1.3)
            assert status(env, "/aws/run", junk) == 503
            assert status(env, "/aws/run", aws.mint(role_arn=ROLE, audience=AUD)) == 200, \
                "issuer %s: cached keys keep working" % mode
            if mode != "refuse":
                assert aws.count() > before, "issuer %s: a refresh was attempted" % mode
            st, _, body = env.admin("/readyz")
            assert st == 200, "a failed refresh does not make baton unready"
            issuer = [i for i in json.loads(body)["keys"]["issuers"] if i["name"] == "aws"][0]
            assert issuer["loaded"] and issuer.get("last_error"), \
                "issuer %s: the failure is visible in /readyz" % mode
            aws.up()
        _, _, metrics = env.admin("/metrics")
        failed = [l for l in metrics.decode().splitlines()
                  if l.startswith('baton_keyset_refreshes_total{issuer="aws",result="failed"}')]
        assert failed and float(failed[0].split()[-1]) >= 4, "failures are counted in /metrics"
    finally:
        assert env.stop() == 0
    log = env.log_text()
    assert "keeping the last good key set" in log
    assert tok not in log, "no token in the logs"


def test_never_loaded_fails_closed(tmp_path, up, idps):
    aws, cognito = idps
    never = AwsIssuer().start()
    never.down("error")
    env = serve(tmp_path, up, aws, cognito, never=never, wait=False, ready_timeout_ms=1500)
    try:
        def ready():
            try:
                return env.admin("/readyz")
            except OSError:
                return None
        assert eventually(lambda: ready() and never.count() >= 2, 10), "retries while down"
        assert not env.listening(), "the serving port stays closed while an issuer never loaded"
        assert eventually(env.listening, 5), "and opens once ready_timeout_ms passed"
        assert "ready_timeout_ms (1500) passed" in env.log_text() and \
            "issuer never keys" in env.log_text(), "the log says what is still missing"
        st, _, body = ready()
        assert st == 503, "/readyz is false while an issuer never loaded"
        doc = json.loads(body)
        assert doc["keys"]["ready"] is False
        info = [i for i in doc["keys"]["issuers"] if i["name"] == "never"][0]
        assert info["loaded"] is False and "503" in info["last_error"]
        tok = never.mint(role_arn=ROLE, audience=AUD)
        st, hd, _ = env.request("GET", "/never/run", token=tok)
        assert st == 503 and hd.get("retry-after") == "5", \
            "tokens of a never-loaded issuer fail closed, retryable: our outage, not a 401"
        assert "www-authenticate" not in hd, "nothing tells the caller to get a new token"
        assert eventually(lambda: [(r["reason"], r["decision"], r["status"])
                                   for r in env.audit_records()][-1:] ==
                          [("keys_unavailable", "error", 503)], 3), "recorded as keys_unavailable"
        assert status(env, "/aws/run", aws.mint(role_arn=ROLE, audience=AUD)) == 200, \
            "other issuers are unaffected"
        never.up()
        assert eventually(lambda: ready()[0] == 200, 5), "ready once the issuer answers"
        assert status(env, "/never/run", tok) == 200
    finally:
        assert env.stop() == 0
        never.stop()


def test_discovery_issuer_mismatch(tmp_path, up, idps):
    aws, cognito = idps
    aws.discovery_issuer = "https://attacker.example"
    env = serve(tmp_path, up, aws, cognito, wait=False, ready_timeout_ms=0)
    try:
        assert eventually(lambda: aws.count("discovery") >= 1, 5)
        time.sleep(0.3)
        assert aws.count("jwks") == 0, "the JWKS of a mismatched discovery is never fetched"
        st, _, body = env.admin("/readyz")
        info = [i for i in json.loads(body)["keys"]["issuers"] if i["name"] == "aws"][0]
        assert st == 503 and not info["loaded"] and "names issuer" in info["last_error"]
        assert status(env, "/aws/run", aws.mint(role_arn=ROLE, audience=AUD)) == 503
    finally:
        assert env.stop() == 0


def test_random_kid_flood_is_bounded(tmp_path, up, idps):
    aws, cognito = idps
    env = serve(tmp_path, up, aws, cognito, min_s=2)
    try:
        good = aws.mint(role_arn=ROLE, audience=AUD)
        assert status(env, "/aws/run", good) == 200
        aws.reset_counters()
        results = []
        t0 = time.monotonic()

        def flood():
            while time.monotonic() - t0 < 3.0:
                # signed by the stand-in's real key under a random kid: only the kid is unknown
                tok = aws.mint(role_arn=ROLE, audience=AUD, header={"kid": "rnd-" + uuid.uuid4().hex})
                results.append(status(env, "/aws/run", tok))
        threads = [threading.Thread(target=flood) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        bound = int(elapsed / 2) + 2
        assert len(results) >= 50 and set(results) == {401}, "every random kid is refused"
        assert aws.count("jwks") <= bound, \
            "%d random kids in %.1f s cost %d JWKS fetches (bound %d)" % (
                len(results), elapsed, aws.count("jwks"), bound)
        assert aws.count("discovery") <= bound
        assert status(env, "/aws/run", good) == 200, "the good token still works after the flood"
    finally:
        assert env.stop() == 0

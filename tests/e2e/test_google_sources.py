"""Google credential sources end to end, below the server: the real identity
cache, google.c and http_client.c (driven by `tests/unit/test_google --drive`
on its own background event_base) against the loopback Google stand-ins.
Each request baton sends is checked as Google's client library sends it; each
fault of issue 6 is played on each endpoint; the driver reports what
identity_get answers over time, readiness, the /readyz detail and stats."""
import json
import os
import subprocess
import threading
import time

import pytest

from conftest import BUILDDIR
from google_standins import GoogleStandins, write_sa_key

DRIVER = BUILDDIR / "tests" / "unit" / "test_google"
AUD1 = "https://billing-abc-uc.a.run.app"
AUD2 = "https://ledger-abc-uc.a.run.app"
STEP_SA = "billing-step@proj.iam.gserviceaccount.com"
OTHER_SA = "ledger-step@proj.iam.gserviceaccount.com"

pytestmark = pytest.mark.skipif(not DRIVER.exists(), reason="tests/unit/test_google not built")


def drive(*args, run_ms=800, poll_ms=100, timeout_ms=1000):
    """Runs the driver; returns (poll lines, final line)."""
    cmd = [str(DRIVER), "--drive", "--run-ms", str(run_ms), "--poll-ms", str(poll_ms),
           "--timeout-ms", str(timeout_ms), *map(str, args)]
    env = dict(os.environ, BATON_LOG_LEVEL="debug")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=run_ms / 1000 + 30, env=env)
    lines = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
    assert lines, "driver printed nothing: rc=%d stderr=%s" % (p.returncode, p.stderr[-2000:])
    assert "Sanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr[-4000:]
    assert p.returncode in (0, 3), "driver failed: rc=%d %s" % (p.returncode, p.stderr[-2000:])
    final = lines[-1]
    drive.stderr = p.stderr
    return lines[:-1], final


def pair_results(line, aud, sa=None):
    return next(p for p in line["pairs"] if p["audience"] == aud and p.get("sa") == sa)


@pytest.fixture
def google():
    g = GoogleStandins().start()
    yield g
    g.stop()


def meta_args(g, *pairs):
    args = ["--source", "metadata", "--metadata-host", g.host, "--iam", g.url]
    for sa, aud in pairs:
        args += ["--pair", "%s,%s" % (sa or "-", aud)]
    return args


# ---------------------------------------------------------------- metadata

def test_metadata_identity_request_as_google_client_sends_it(google):
    polls, final = drive(*meta_args(google, (None, AUD1), (None, AUD2)))
    assert final["ready"] and final["detail"] == ""
    last = polls[-1]
    for aud in (AUD1, AUD2):
        r = pair_results(last, aud)
        assert r["reason"] == "allowed" and r["bearer"]
        assert r["claims"]["aud"] == aud and r["minted_audience"] == aud
        assert r["identity"] == google.own_email == r["claims"]["email"]
        assert r["token_sha256"] in google.issued, "the cached token is the one the metadata server issued"
        assert r["expires_at"] == r["claims"]["exp"]
    recs = google.recorded("identity")
    assert len(recs) == 2, "one identity call per (identity, audience)"
    for rec in recs:
        assert rec["headers"]["metadata-flavor"] == "Google"
        assert "format=full" in rec["query"]
    assert sorted(r["query"] for r in recs) == sorted(
        "audience=%s&format=full" % a.replace(":", "%3A").replace("/", "%2F") for a in (AUD1, AUD2))
    assert google.problems() == []


def test_metadata_impersonation_single_access_token(google):
    google.grant(STEP_SA)
    google.grant(OTHER_SA)
    polls, final = drive(*meta_args(google, (STEP_SA, AUD1), (OTHER_SA, AUD1), (STEP_SA, AUD2)))
    assert final["ready"], final["detail"]
    for sa, aud in ((STEP_SA, AUD1), (OTHER_SA, AUD1), (STEP_SA, AUD2)):
        r = pair_results(polls[-1], aud, sa)
        assert r["reason"] == "allowed"
        assert r["identity"] == sa and r["claims"]["email"] == sa and r["claims"]["aud"] == aud
    assert google.calls("mtoken") == 1, "one access-token fetch shared by concurrent impersonations"
    assert google.calls("iam") == 3
    for rec in google.recorded("iam"):
        assert rec["path"] in ("/v1/projects/-/serviceAccounts/%s:generateIdToken" % s for s in (STEP_SA, OTHER_SA))
        assert rec["headers"]["authorization"].startswith("Bearer ya29.standin-")
        body = json.loads(rec["body"])
        assert body["includeEmail"] is True and body["audience"] in (AUD1, AUD2)
    assert google.calls("identity") == 0, "impersonated pairs never use the own identity endpoint"
    assert google.problems() == []


def test_impersonation_403_names_the_missing_binding(google):
    google.grant(STEP_SA, token_creator=False)
    polls, final = drive(*meta_args(google, (STEP_SA, AUD1)), run_ms=2500, poll_ms=500)
    assert pair_results(polls[-1], AUD1, STEP_SA)["reason"] == "identity_permission_denied"
    assert not final["ready"]
    d = final["detail"]
    assert "roles/iam.serviceAccountOpenIdTokenCreator" in d
    assert "on the service account %s" % STEP_SA in d
    assert "--member=serviceAccount:%s" % google.own_email in d, "the member is baton's own account"
    assert "PERMISSION_DENIED" in d
    st = final["stats"][0]
    assert st["failures"].get("permission_denied", 0) >= 1 and st["mints_ok"] == 0
    # loud in the logs, and never a token there
    assert "serviceAccountOpenIdTokenCreator" in drive.stderr
    assert "ya29." not in drive.stderr and "eyJ" not in drive.stderr
    assert google.problems() == []


def test_impersonation_404_unknown_account(google):
    polls, final = drive(*meta_args(google, ("ghost@proj.iam.gserviceaccount.com", AUD1)))
    r = pair_results(polls[-1], AUD1, "ghost@proj.iam.gserviceaccount.com")
    assert r["reason"] == "identity_unknown_account"
    assert "does not know the service account ghost@proj.iam.gserviceaccount.com" in final["detail"]
    assert final["stats"][0]["failures"] == {"not_found": final["stats"][0]["latency_count"]}


@pytest.mark.parametrize("fault,label", [
    ("close", "malformed"),       # connection closed with no answer: a broken response
    ("500", "http_5xx"),
    ("403", "permission_denied"),
    ("404", "not_found"),
    ("malformed", "malformed"),
    ("oversized", "too_big"),
    ("expired", "expired"),
    ("near_expiry", "expired"),
    ("no_flavor", "malformed"),
])
def test_metadata_identity_faults_fail_closed(google, fault, label):
    google.set_fault("identity", fault)
    polls, final = drive(*meta_args(google, (None, AUD1)), run_ms=500)
    assert all(pair_results(p, AUD1)["reason"] != "allowed" for p in polls), "no token ever served"
    assert not final["ready"]
    st = final["stats"][0]
    assert st["mints_ok"] == 0
    assert label in st["failures"], (fault, st)
    assert label in final["detail"]
    assert 1 <= google.calls("identity") <= 3, "failures back off, no hot loop"


def test_metadata_slow_beyond_timeout(google):
    google.slow_s = 2.0
    google.set_fault("identity", "slow")
    t0 = time.monotonic()
    polls, final = drive(*meta_args(google, (None, AUD1)), run_ms=900, timeout_ms=300)
    assert "timeout" in final["stats"][0]["failures"]
    assert not final["ready"]
    assert time.monotonic() - t0 < 10


def test_metadata_access_token_faults_reach_impersonation(google):
    google.grant(STEP_SA)
    google.set_fault("mtoken", "malformed")
    polls, final = drive(*meta_args(google, (STEP_SA, AUD1)), run_ms=500)
    assert pair_results(polls[-1], AUD1, STEP_SA)["reason"] == "identity_unavailable"
    assert "own access token" in final["detail"]
    assert google.calls("iam") == 0


def test_cold_start_down_then_recovery(google):
    port = google.port
    google.stop()
    got = {}

    def bring_up():
        time.sleep(1.2)
        google.start(port)
        got["up"] = time.monotonic()

    t = threading.Thread(target=bring_up)
    t.start()
    t0 = time.monotonic()
    polls, final = drive(*meta_args(google, (None, AUD1)), run_ms=5000, poll_ms=100)
    t.join()
    first = [p for p in polls if p["t_ms"] < 1000]
    assert first and all(pair_results(p, AUD1)["reason"] == "identity_unavailable" and not p["ready"]
                         for p in first), "metadata down at cold start: unavailable, not ready"
    assert final["ready"], final["detail"]
    ok_at = next(p["t_ms"] for p in polls if pair_results(p, AUD1)["reason"] == "allowed")
    assert ok_at < 4500, "recovered within the backoff after the server came back"
    assert final["stats"][0]["failures"].get("connect", 0) >= 1


def test_short_lived_tokens_refresh_while_serving(google):
    """Tokens valid 63 s leave 3 s before the 60 s margin: the cache must
    refresh them ahead so that no poll ever finds no usable token."""
    google.set_fault("identity", "short")
    polls, final = drive(*meta_args(google, (None, AUD1)), run_ms=5500, poll_ms=100)
    results = [pair_results(p, AUD1) for p in polls]
    # From the first token on (at cold start, whenever the loaded machine lets it
    # arrive, normally within 300 ms), no poll may find no usable token.
    first = next((i for i, r in enumerate(results) if r["reason"] == "allowed"), None)
    assert first is not None and polls[first]["t_ms"] < 2500, "the first token came within 2.5 s"
    served = results[first:]
    assert served and all(r["reason"] == "allowed" for r in served), \
        [r["reason"] for r in served if r["reason"] != "allowed"]
    shas = {r["token_sha256"] for r in served}
    assert len(shas) >= 2, "the token was replaced ahead of its margin"
    for r in served:
        assert r["expires_at"] - time.time() > -5  # sanity: recent tokens
    assert 2 <= google.calls("identity") <= 6


# ---------------------------------------------------------------- service-account key

@pytest.fixture
def sa_env(tmp_path, google):
    email = "baton-key@proj.iam.gserviceaccount.com"
    token_uri = google.url + "/token"
    key_path = tmp_path / "sa.json"
    key = write_sa_key(key_path, email, token_uri, key_id="4f2c0ffee0123456789abcdef0123456789abcde")
    google.sa_key, google.sa_key_id, google.sa_email, google.token_uri = \
        key, "4f2c0ffee0123456789abcdef0123456789abcde", email, token_uri
    return google, key_path, email


def test_sa_key_id_token_and_impersonation_requests(sa_env):
    google, key_path, email = sa_env
    google.grant(STEP_SA)
    polls, final = drive("--source", "sa_key", "--key", key_path, "--iam", google.url,
                         "--pair", "-,%s" % AUD1, "--pair", "%s,%s" % (STEP_SA, AUD2))
    assert final["ready"], final["detail"]
    own = pair_results(polls[-1], AUD1)
    assert own["identity"] == email and own["claims"]["aud"] == AUD1
    assert own["token_sha256"] in google.issued
    imp = pair_results(polls[-1], AUD2, STEP_SA)
    assert imp["identity"] == STEP_SA and imp["claims"]["aud"] == AUD2
    oauth = google.recorded("oauth")
    assert len(oauth) == 2, "one id_token grant, one access-token grant"
    import urllib.parse
    import jwt
    kinds = set()
    for rec in oauth:
        form = urllib.parse.parse_qs(rec["body"])
        assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
        claims = jwt.decode(form["assertion"][0], options={"verify_signature": False})
        kinds.add("target_audience" if "target_audience" in claims else claims["scope"])
    assert kinds == {"target_audience", "https://www.googleapis.com/auth/cloud-platform"}
    assert google.calls("iam") == 1
    assert google.problems() == [], "assertion header kid/alg/typ, claims and signature as Google expects"


def test_sa_key_wrong_key_invalid_grant(sa_env, tmp_path):
    google, key_path, email = sa_env
    other = tmp_path / "other.json"
    write_sa_key(other, email, google.token_uri)  # a different key than the stand-in trusts
    polls, final = drive("--source", "sa_key", "--key", other, "--pair", "-,%s" % AUD1)
    assert pair_results(polls[-1], AUD1)["reason"] == "identity_unavailable"
    assert "invalid_grant" in final["detail"] and "deleted or disabled" in final["detail"]


@pytest.mark.parametrize("fault,label", [("500", "http_5xx"), ("malformed", "malformed"),
                                         ("oversized", "too_big"), ("near_expiry", "expired")])
def test_sa_key_token_endpoint_faults(sa_env, fault, label):
    google, key_path, email = sa_env
    google.set_fault("oauth", fault)
    polls, final = drive("--source", "sa_key", "--key", key_path, "--pair", "-,%s" % AUD1, run_ms=400)
    assert label in final["stats"][0]["failures"]
    assert not final["ready"]


def test_sa_key_world_readable_refused(sa_env):
    google, key_path, email = sa_env
    os.chmod(key_path, 0o644)
    polls, final = drive("--source", "sa_key", "--key", key_path, "--pair", "-,%s" % AUD1)
    assert final.get("error") == "identity_new" and "chmod 600" in final["message"]
    assert google.calls() == 0


def test_iam_faults(sa_env):
    google, key_path, email = sa_env
    google.grant(STEP_SA)
    google.set_fault("iam", "malformed")
    polls, final = drive("--source", "sa_key", "--key", key_path, "--iam", google.url,
                         "--pair", "%s,%s" % (STEP_SA, AUD1), run_ms=400)
    assert "malformed" in final["stats"][0]["failures"]
    google.set_fault("iam", "500")
    polls, final = drive("--source", "sa_key", "--key", key_path, "--iam", google.url,
                         "--pair", "%s,%s" % (STEP_SA, AUD1), run_ms=400)
    assert "http_5xx" in final["stats"][0]["failures"]


# ---------------------------------------------------------------- local

def test_local_tokens_and_jwks():
    polls, final = drive("--source", "local", "--local-issuer", "https://baton.test",
                         "--pair", "-,%s" % AUD1, "--pair", "%s,%s" % (STEP_SA, AUD1), run_ms=300)
    assert final["ready"]
    own, imp = pair_results(polls[-1], AUD1), pair_results(polls[-1], AUD1, STEP_SA)
    assert own["claims"]["iss"] == "https://baton.test" and own["claims"]["email"] == "baton@local"
    assert imp["claims"]["email"] == STEP_SA and imp["claims"]["sub"] == STEP_SA
    assert own["claims"]["exp"] - own["claims"]["iat"] == 3600
    keys = final["jwks"]["keys"]
    assert len(keys) == 1 and keys[0]["alg"] == "RS256" and "d" not in keys[0]

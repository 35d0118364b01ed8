"""Google identity through `baton serve` (docs/spec.md step 5): the upstream
receives, in its token_header, a Google-signed ID token whose aud is its
audience and whose identity is the step's service account (impersonation) or
baton's own; the client's Authorization never reaches it; the audit record
names the identity and audience minted. Fail closed: with no usable token the
request gets 503 with the precise reason, nothing is forwarded, /readyz is
false and says why; recovery once Google answers again; tokens refreshed
while requests are in flight; 1,000 concurrent first requests cost one mint
per (identity, audience); `local` credentials publish the JWKS their tokens
verify with."""
import re
import concurrent.futures
import http.client
import json
import socket
import threading
import time

import jwt
import pytest

from google_standins import GoogleStandins, decode_unverified, write_sa_key
from serve_env import ServeEnv, SUB
from upstream import Upstream

AUD = "https://gcp.test"  # the "gcp" upstream of ServeEnv
STEP_SA = "billing-step@proj.iam.gserviceaccount.com"
NOBIND_SA = "nobind-step@proj.iam.gserviceaccount.com"
GHOST_SA = "ghost-step@proj.iam.gserviceaccount.com"
ALLOW_ALL = [{"methods": ["GET", "POST"], "paths": ["/**"]}]
CALLER = [{"issuer": "test", "claims": {"sub": SUB}}]


def policies(*extra):
    p = {
        "own": {"route": {"host": "*", "path_prefix": "/own/"}, "upstream": "gcp",
                "callers": CALLER, "allow": ALLOW_ALL},
        "imp": {"route": {"host": "*", "path_prefix": "/imp/"}, "upstream": "gcp",
                "callers": CALLER, "allow": ALLOW_ALL, "service_account": STEP_SA},
        "plain": {"route": {"host": "*", "path_prefix": "/api/"}, "upstream": "echo",
                  "callers": CALLER, "allow": ALLOW_ALL},
    }
    for name, sa in extra:
        p[name] = {"route": {"host": "*", "path_prefix": "/%s/" % name}, "upstream": "gcp",
                   "callers": CALLER, "allow": ALLOW_ALL, "service_account": sa}
    return p


@pytest.fixture
def up():
    u = Upstream().start()
    yield u
    u.stop()


@pytest.fixture
def google():
    g = GoogleStandins().start()
    g.grant(STEP_SA)
    g.grant(NOBIND_SA, token_creator=False)
    yield g
    g.stop()


def meta_env(tmp_path, up, google, pols=None, ready_timeout_ms=None, **gextra):
    gcfg = {"credentials": "metadata", "metadata_host": google.host,
            "iamcredentials_url": google.url, "timeout_ms": 1000}
    gcfg.update(gextra)
    extra = {"google": gcfg}
    if ready_timeout_ms is not None:  # 0: serve before ready, to test what callers get then
        extra["ready_timeout_ms"] = ready_timeout_ms
    return ServeEnv(tmp_path, up.port, policies=pols or policies(), extra=extra)


def wait_listening(env, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if env.proc.poll() is not None:
            raise RuntimeError("baton exited: " + env.log_text())
        try:
            socket.create_connection(("127.0.0.1", env.port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("baton never listened: " + env.log_text())


def header_of(rec, name):
    return [v for n, v in rec["headers"] if n.lower() == name]


def forwarded_for(up, path):
    return [r for r in up.requests() if r["target"].startswith(path)]


def test_upstream_receives_google_token_for_its_audience(tmp_path, up, google):
    env = meta_env(tmp_path, up, google).start()
    try:
        tok = env.token()
        st, _, _ = env.request("POST", "/own/run?x=1", token=tok, body=b"{}",
                               headers={"X-Request-Id": "own-1", "Content-Type": "application/json"})
        assert st == 200
        st, _, _ = env.request("GET", "/imp/run", token=tok, headers={"X-Request-Id": "imp-1"})
        assert st == 200
        st, _, _ = env.request("GET", "/api/plain", token=tok, headers={"X-Request-Id": "plain-1"})
        assert st == 200
    finally:
        assert env.stop() == 0

    own, = forwarded_for(up, "/own/run")
    xsa = header_of(own, "x-serverless-authorization")
    assert len(xsa) == 1 and xsa[0].startswith("Bearer ")
    claims = google.verify(xsa[0][7:], AUD)  # signature, aud, exp, iss
    assert claims["email"] == google.own_email
    assert header_of(own, "authorization") == [], "the client's Authorization never reaches the upstream"

    imp, = forwarded_for(up, "/imp/run")
    claims = google.verify(header_of(imp, "x-serverless-authorization")[0][7:], AUD)
    assert claims["email"] == STEP_SA, "minted for the step's service account"

    plain, = forwarded_for(up, "/api/plain")
    assert header_of(plain, "x-serverless-authorization") == [] and header_of(plain, "authorization") == [], \
        "identity none: no token at all"

    recs = {(r.get("client_request_id") or r["request_id"]): r for r in env.audit_records()}
    assert recs["own-1"]["upstream"]["identity"] == google.own_email
    assert recs["own-1"]["upstream"]["audience"] == AUD
    assert recs["imp-1"]["upstream"]["identity"] == STEP_SA
    assert google.calls("identity") == 1 and google.calls("iam") == 1
    assert google.problems() == []
    text = env.log_text() + "".join(p.read_text() for p in env.dir.glob("audit.jsonl*"))
    assert "eyJ" not in text and "ya29." not in text, "no token in logs or audit"


def assert_metric_families_grouped(text):
    """Prometheus text format: every sample of a family stands in one group."""
    seen, current = set(), None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        family = re.sub(r"_(bucket|sum|count)$", "", line.split("{", 1)[0].split(" ", 1)[0])
        if family != current:
            assert family not in seen, "samples of %s are not grouped" % family
            seen.add(family)
            current = family


def test_missing_binding_is_loud_and_fails_closed(tmp_path, up, google):
    env = meta_env(tmp_path, up, google, pols=policies(("nobind", NOBIND_SA), ("ghost", GHOST_SA)),
                   ready_timeout_ms=0)
    env.start(wait=False)
    try:
        wait_listening(env)
        time.sleep(1.0)
        tok = env.token()
        st, _, body = env.request("GET", "/nobind/x", token=tok, headers={"X-Request-Id": "nb-1"})
        assert st == 503
        st, _, _ = env.request("GET", "/ghost/x", token=tok, headers={"X-Request-Id": "gh-1"})
        assert st == 503
        st, _, _ = env.request("GET", "/own/x", token=tok, headers={"X-Request-Id": "own-ok"})
        assert st == 200, "other steps keep working"
        st, _, ready = env.admin("/readyz")
        assert st != 200
        text = ready.decode()
        assert "roles/iam.serviceAccountOpenIdTokenCreator" in text and NOBIND_SA in text
        assert "does not know the service account " + GHOST_SA in text
        st, _, metrics = env.admin("/metrics")
        m = metrics.decode()
        assert 'baton_identity_usable{identity="%s"' % NOBIND_SA in m
        assert_metric_families_grouped(m)
        fails = [l for l in m.splitlines() if l.startswith(
            'baton_identity_mint_failures_total{identity="%s"' % NOBIND_SA) and 'reason="permission_denied"' in l]
        assert len(fails) == 1 and float(fails[0].rsplit(" ", 1)[1]) >= 1, \
            "the missing binding is counted under its reason"
        own = [l for l in m.splitlines()  # baton's own identity is labelled "default"
               if l.startswith('baton_identity_token_expiry_seconds{identity="default"')]
        assert own and 3000 < float(own[0].rsplit(" ", 1)[1]) <= 3600, "seconds to expiry of a fresh token"
        assert re.search(r'^baton_identity_mint_duration_seconds_count\{identity="default",[^}]*\} [1-9]',
                         m, re.M), "mint latency is observed"
        assert 'baton_identity_mint_duration_seconds_bucket{identity="%s"' % NOBIND_SA in m
    finally:
        assert env.stop() == 0
    assert forwarded_for(up, "/nobind/") == [] and forwarded_for(up, "/ghost/") == [], "nothing forwarded"
    recs = {(r.get("client_request_id") or r["request_id"]): r for r in env.audit_records()}
    assert recs["nb-1"]["reason"] == "identity_permission_denied" and recs["nb-1"]["status"] == 503
    assert recs["gh-1"]["reason"] == "identity_unknown_account"
    log = env.log_text()
    assert "gcloud iam service-accounts add-iam-policy-binding " + NOBIND_SA in log


def test_cold_start_metadata_down_then_recovery(tmp_path, up, google):
    port = google.port
    google.stop()
    env = meta_env(tmp_path, up, google, ready_timeout_ms=0)
    env.start(wait=False)
    try:
        wait_listening(env)
        tok = env.token()
        st, _, _ = env.request("GET", "/own/cold", token=tok, headers={"X-Request-Id": "cold-1"})
        assert st == 503
        st, _, ready = env.admin("/readyz")
        assert st != 200 and b"connect" in ready
        google.start(port)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            st, _, _ = env.admin("/readyz")
            if st == 200:
                break
            time.sleep(0.1)
        assert st == 200, "ready once the metadata server answers"
        st, _, _ = env.request("GET", "/own/warm", token=tok, headers={"X-Request-Id": "warm-1"})
        assert st == 200
    finally:
        assert env.stop() == 0
    assert forwarded_for(up, "/own/cold") == [], "nothing forwarded without the identity"
    recs = {(r.get("client_request_id") or r["request_id"]): r for r in env.audit_records()}
    assert recs["cold-1"]["reason"] == "identity_unavailable" and recs["cold-1"]["status"] == 503


def test_token_expiring_while_requests_in_flight(tmp_path, up, google):
    """63 s tokens leave 3 s of use before the 60 s margin: baton refreshes
    them in the background while a client keeps sending; every request is
    served and the upstream never receives a token within the margin."""
    google.set_fault("identity", "short")
    env = meta_env(tmp_path, up, google).start()
    try:
        tok = env.token()
        statuses = []
        t_end = time.monotonic() + 5.0
        while time.monotonic() < t_end:
            st, _, _ = env.request("GET", "/own/busy?delay_ms=50", token=tok)
            statuses.append(st)
    finally:
        assert env.stop() == 0
    assert statuses and all(s == 200 for s in statuses), statuses
    seen = forwarded_for(up, "/own/busy")
    tokens = {header_of(r, "x-serverless-authorization")[0][7:] for r in seen}
    assert len(tokens) >= 2, "tokens were replaced while serving"
    for r in seen:
        c = decode_unverified(header_of(r, "x-serverless-authorization")[0][7:])
        assert c["exp"] - r["t"] > 55, "never forwarded a token inside the safety margin"
    assert google.calls("identity") <= 8, "refreshes are paced, not per request"


def test_thousand_concurrent_first_requests_one_mint_per_pair(tmp_path, up, google):
    google.slow_s = 1.5
    google.set_fault("identity", "slow")
    google.set_fault("mtoken", "slow")
    env = meta_env(tmp_path, up, google, timeout_ms=5000, ready_timeout_ms=0)
    env.limits["max_connections"] = 2000
    env.config["limits"] = env.limits
    env.write_config()
    env.start(wait=False)
    try:
        wait_listening(env)
        tok = env.token()
        paths = ["/own/first", "/imp/first"]

        def one(i):
            c = http.client.HTTPConnection("127.0.0.1", env.port, timeout=20)
            try:
                c.request("GET", paths[i % 2], headers={"Authorization": "Bearer " + tok})
                r = c.getresponse()
                r.read()
                return r.status
            except OSError:
                return -1
            finally:
                c.close()

        with concurrent.futures.ThreadPoolExecutor(max_workers=100) as ex:
            statuses = list(ex.map(one, range(1000)))
        assert statuses.count(-1) == 0
        print("first-request statuses:", {s: statuses.count(s) for s in set(statuses)})
        assert set(statuses) <= {200, 503}
        # all mints land; then everything is served
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and env.admin("/readyz")[0] != 200:
            time.sleep(0.1)
        assert one(0) == 200 and one(1) == 200
    finally:
        assert env.stop() == 0
    assert google.calls("identity") == 1, "one metadata mint for (baton, %s)" % AUD
    assert google.calls("mtoken") == 1, "one access token for impersonation"
    assert google.calls("iam") == 1, "one generateIdToken for (%s, %s)" % (STEP_SA, AUD)
    # every 503 was fail-closed: the upstream saw only served requests
    assert len(forwarded_for(up, "/own/first")) + len(forwarded_for(up, "/imp/first")) == \
        statuses.count(200) + 2


def test_service_account_key_through_serve(tmp_path, up, google):
    email = "baton-key@proj.iam.gserviceaccount.com"
    token_uri = google.url + "/token"
    key_path = tmp_path / "sa.json"
    google.sa_key = write_sa_key(key_path, email, token_uri, key_id="feedc0de")
    google.sa_key_id, google.sa_email, google.token_uri = "feedc0de", email, token_uri
    env = ServeEnv(tmp_path, up.port, policies=policies(), extra={"google": {
        "credentials": {"service_account_key": str(key_path)}, "iamcredentials_url": google.url,
        "timeout_ms": 1000}})
    env.start()
    try:
        tok = env.token()
        assert env.request("GET", "/own/k", token=tok)[0] == 200
        assert env.request("GET", "/imp/k", token=tok)[0] == 200
    finally:
        assert env.stop() == 0
    own, = forwarded_for(up, "/own/k")
    assert google.verify(header_of(own, "x-serverless-authorization")[0][7:], AUD)["email"] == email
    imp, = forwarded_for(up, "/imp/k")
    assert google.verify(header_of(imp, "x-serverless-authorization")[0][7:], AUD)["email"] == STEP_SA
    assert google.problems() == []


def test_local_credentials_publish_their_jwks(tmp_path, up):
    env = ServeEnv(tmp_path, up.port, policies=policies(), extra={"google": {
        "credentials": "local", "local_issuer": "https://baton.test"}})
    env.start()
    try:
        tok = env.token()
        assert env.request("GET", "/own/l", token=tok)[0] == 200
        assert env.request("GET", "/imp/l", token=tok)[0] == 200
        st, _, body = env.admin("/.well-known/jwks.json")
        assert st == 200
        jwks = json.loads(body)
    finally:
        assert env.stop() == 0
    keys = {k["kid"]: jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(k)) for k in jwks["keys"]}
    for path, who in (("/own/l", "baton@local"), ("/imp/l", STEP_SA)):
        rec, = forwarded_for(up, path)
        t = header_of(rec, "x-serverless-authorization")[0][7:]
        key = keys[jwt.get_unverified_header(t)["kid"]]
        c = jwt.decode(t, key, algorithms=["RS256"], audience=AUD, issuer="https://baton.test")
        assert c["email"] == who and c["sub"] == who

"""The signed caller assertion end to end: `baton serve` in front of the echoing
upstream; the assertion that arrives is verified by two independent JWT
libraries fetching baton's own JWKS (PyJWT, Debian's python3-jwt, through
PyJWKClient; and the npm package `jose`, pinned by tests/jose/package-lock.json
and installed with `npm ci` into the build tree), each checking the signature,
`iss`, `aud` and `exp`. The claims name the caller (an AWS IAM outbound
identity token: role ARN and account; a Cognito client-credentials access
token: client_id), the step, the policy and the Step Functions execution ARN;
`exp` never exceeds the caller token's; a client's copy of the header never
arrives; denied and unauthenticated requests forward nothing; a signing
failure is 503 assertion_unavailable with nothing forwarded; rotation with
previous_keys keeps old assertions verifiable; `baton explain --token` prints
the same claims."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import BUILDDIR, SRCDIR, run_baton
from serve_env import ServeEnv, SUB, AUDIENCE

GW = "https://gateway.test"
HEADER = "X-Caller-Assertion"
EXEC = "arn:aws:states:us-east-1:123456789012:execution:billing-after-deploy:run-1"
EXEC2 = "arn:aws:states:us-east-1:123456789012:execution:billing-after-deploy:run-2"
COGNITO_ISS = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Test"
CLIENT_ID = "5kq8example1ab2cd3ef4gh5ij6"
TYP = "baton-assertion+jwt"


def write_key(path, mode=0o600):
    k = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    os.chmod(path, mode)
    return k


def write_pub(path, k):
    path.write_bytes(k.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo))


def policies():
    allow_all = [{"methods": ["GET", "POST"], "paths": ["/**"]}]
    aws = [{"issuer": "test", "claims": {"sub": SUB,
                                         "https://sts.amazonaws.com/": {"aws_account": "123456789012"}}}]
    need_exec = {"X-Sfn-Execution": "arn:aws:states:us-east-1:123456789012:execution:billing-after-deploy:*"}
    return {
        "sfn": {"route": {"host": "*", "path_prefix": "/sfn/"}, "upstream": "echo",
                "callers": aws, "allow": allow_all, "require_headers": need_exec},
        "cog": {"route": {"host": "*", "path_prefix": "/cog/"}, "upstream": "echo",
                "callers": [{"issuer": "cognito", "claims": {"client_id": CLIENT_ID}}],
                "allow": allow_all, "require_headers": need_exec},
        "plain": {"route": {"host": "*", "path_prefix": "/plain/"}, "upstream": "noassert",
                  "callers": aws, "allow": allow_all},
        "other": {"route": {"host": "*", "path_prefix": "/other/"}, "upstream": "echo",
                  "callers": [{"issuer": "test", "claims": {"sub": "someone-else"}}], "allow": allow_all},
        "dry": {"route": {"host": "*", "path_prefix": "/dry/"}, "upstream": "echo", "mode": "dry_run",
                "callers": [{"issuer": "test", "claims": {"sub": "nobody"}}], "allow": allow_all},
    }


def make_env(tmp, up, assertion, upstream_extra=None):
    e = ServeEnv(tmp, up.port, policies=policies(), limits={"max_header_bytes": 65536})
    e.config["issuers"].append({"name": "cognito", "issuer": COGNITO_ISS, "jwks_file": "jwks.json",
                                "audiences": [CLIENT_ID], "audience_claim": "client_id",
                                "token_use": "access", "algorithms": ["RS256"], "leeway_s": 5})
    e.config["upstreams"].append({"name": "noassert", "url": "http://127.0.0.1:%d" % up.port,
                                  "identity": "none", "caller_assertion": False})
    e.config["assertion"] = assertion
    e.write_config()
    return e


@pytest.fixture(scope="module")
def env(tmp_path_factory, up):
    d = tmp_path_factory.mktemp("assertion")
    key = write_key(d / "assertion.pem")
    e = make_env(d, up, {"issuer": GW, "signing_key": "assertion.pem", "lifetime_s": 120,
                         "header": HEADER})
    e.assertion_key = key
    e.start()
    yield e
    assert e.stop() == 0


_n = [0]


def rid():
    _n[0] += 1
    return "assert-%d-%d" % (int(time.time()), _n[0])


def seen(up, request_id):
    for r in reversed(up.requests()):
        for n, v in r["headers"]:
            if n.lower() == "x-request-id" and v == request_id:
                return r
    return None


def send(env, up, path, token=None, headers=None, method="POST"):
    """Returns (status, response headers, [values of the assertion header the upstream saw] or None)."""
    h = dict(headers or {})
    h["X-Request-Id"] = rid()
    st, hd, _ = env.request(method, path, token=token, headers=h)
    rec = seen(up, h["X-Request-Id"])
    if rec is None:
        return st, hd, None
    name = env.config["assertion"].get("header", "x-baton-assertion").lower()
    return st, hd, [v for n, v in rec["headers"] if n.lower().replace("_", "-") == name]


def jwks_url(env):
    return "http://127.0.0.1:%d/.well-known/baton/jwks.json" % env.port


def pyjwt_verify(env, token, aud="http://127.0.0.1:%d"):
    aud = aud % env.upstream_port if "%d" in aud else aud
    client = jwt.PyJWKClient(jwks_url(env))
    key = client.get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["ES256"], audience=aud, issuer=GW,
                      options={"require": ["exp", "iat", "iss", "aud", "sub"]})


def config_generation(env):
    body = env.admin("/metrics")[2].decode()
    return int(float([l.split()[-1] for l in body.splitlines()
                      if l.startswith("baton_config_generation")][0]))


def aws_token(env, exp_in=300, **kw):
    return env.token(exp_in=exp_in, **{"https://sts.amazonaws.com/": {"aws_account": "123456789012",
                                                                      "source_region": "us-east-1"}}, **kw)


def cognito_token(env, exp_in=300):
    # Cognito client-credentials access token: no aud, client_id, token_use access
    now = int(time.time())
    return jwt.encode({"iss": COGNITO_ISS, "sub": "sub-not-the-client-id", "client_id": CLIENT_ID,
                       "token_use": "access", "scope": "billing-api/reconcile", "iat": now,
                       "exp": now + exp_in, "jti": "cog-%d" % now},
                      env.key_pem, algorithm="RS256", headers={"kid": env.kid})


# ------------------------------------------------------------------ tests

def test_aws_caller_assertion_arrives_and_verifies_with_pyjwt(env, up):
    tok = aws_token(env)
    st, _, got = send(env, up, "/sfn/run", tok, {"X-Sfn-Execution": EXEC})
    assert st == 200 and got and len(got) == 1, "exactly one assertion reaches the upstream"
    claims = pyjwt_verify(env, got[0])
    hdr = jwt.get_unverified_header(got[0])
    assert hdr["alg"] == "ES256" and hdr["typ"] == TYP
    assert claims["sub"] == SUB, "sub is the caller's role ARN"
    assert claims["caller"]["aws_account"] == "123456789012"
    assert claims["caller"]["iss"] == "https://issuer.test"
    assert claims["caller"]["token_sha256"] == hashlib.sha256(tok.encode()).hexdigest()
    assert claims["caller"]["jti"] == jwt.decode(tok, options={"verify_signature": False})["jti"]
    assert claims["step"] == "sfn"
    assert claims["headers"] == {"X-Sfn-Execution": EXEC}, "the execution ARN is signed"
    assert claims["policy"]["file"].endswith("sfn.json") and len(claims["policy"]["sha256"]) == 64
    assert claims["dry_run"] is False
    assert claims["exp"] - claims["iat"] == 120, "lifetime_s"
    log_ids = {r["log"] for r in env.audit_lines() if "log" in r}
    assert claims["audit_log"] in log_ids, "audit_log names the audit chain"
    assert "request_id" not in claims and "path" not in claims


def test_cognito_caller_sub_is_client_id(env, up):
    st, _, got = send(env, up, "/cog/run", cognito_token(env), {"X-Sfn-Execution": EXEC})
    assert st == 200 and got
    claims = pyjwt_verify(env, got[0])
    assert claims["sub"] == CLIENT_ID and claims["caller"]["client_id"] == CLIENT_ID
    assert claims["caller"]["sub"] == "sub-not-the-client-id"
    assert "aws_account" not in claims["caller"]


def test_exp_never_exceeds_the_callers(env, up):
    tok = aws_token(env, exp_in=40)
    st, _, got = send(env, up, "/sfn/run", tok, {"X-Sfn-Execution": EXEC2})
    assert st == 200 and got
    claims = pyjwt_verify(env, got[0])
    caller_exp = jwt.decode(tok, options={"verify_signature": False})["exp"]
    assert claims["exp"] == caller_exp and claims["exp"] < claims["iat"] + 120


def test_cached_per_token_step_and_execution(env, up):
    tok = aws_token(env)
    a = send(env, up, "/sfn/a", tok, {"X-Sfn-Execution": EXEC})[2]
    b = send(env, up, "/sfn/b", tok, {"X-Sfn-Execution": EXEC})[2]
    c = send(env, up, "/sfn/c", tok, {"X-Sfn-Execution": EXEC2})[2]
    assert a == b, "same token, step and execution: the cached assertion (no request id or path in it)"
    assert a != c and pyjwt_verify(env, c[0])["headers"]["X-Sfn-Execution"] == EXEC2


def test_client_copies_never_arrive(env, up):
    tok = aws_token(env)
    forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."
    h = {"X-Sfn-Execution": EXEC}
    rid_ = rid()
    st, _, _ = env.request("POST", "/sfn/run", token=tok,
                           headers={**h, "X-Request-Id": rid_, HEADER: forged,
                                    "x_caller_assertion": forged, "X-Baton-Assertion": forged})
    rec = seen(up, rid_)
    assert st == 200 and rec
    vals = [v for n, v in rec["headers"] if n.lower().replace("_", "-") in
            ("x-caller-assertion", "x-baton-assertion")]
    assert len(vals) == 1 and vals[0] != forged, "only baton's own assertion arrives"
    # an upstream with caller_assertion false: the client's copy is still stripped
    rid_ = rid()
    st, _, _ = env.request("POST", "/plain/x", token=tok, headers={"X-Request-Id": rid_, HEADER: forged})
    rec = seen(up, rid_)
    assert st == 200 and rec
    assert not [n for n, v in rec["headers"] if n.lower().replace("_", "-") == "x-caller-assertion"]


def test_denied_and_unauthenticated_forward_nothing(env, up):
    assert send(env, up, "/sfn/run", None, {"X-Sfn-Execution": EXEC})[::2] == (401, None)
    assert send(env, up, "/other/x", aws_token(env))[::2] == (403, None)
    assert send(env, up, "/sfn/run", aws_token(env), {"X-Sfn-Execution": "arn:aws:states:eu-west-1:1:execution:x:y"}
                )[::2] == (403, None), "a require_headers mismatch forwards nothing"


def test_dry_run_step_says_so(env, up):
    st, _, got = send(env, up, "/dry/x", aws_token(env))
    assert st == 200 and got
    assert pyjwt_verify(env, got[0])["dry_run"] is True


def test_signing_failure_is_503_and_forwards_nothing(env, up):
    huge = "arn:aws:states:us-east-1:123456789012:execution:billing-after-deploy:" + "x" * 9000
    st, hd, got = send(env, up, "/sfn/run", aws_token(env), {"X-Sfn-Execution": huge})
    assert (st, got) == (503, None), "fail closed"
    assert hd.get("retry-after") == "1"
    deadline = time.monotonic() + 5
    while True:  # the writer commits in batches: wait for the record
        rec = [r for r in env.audit_records() if r.get("client_request_id") == hd["x-request-id"]]
        if rec or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert rec and rec[0]["reason"] == "assertion_unavailable" and rec[0]["decision"] == "error"


def test_jwks_served_on_both_listeners(env):
    st, hd, body = env.request("GET", "/.well-known/baton/jwks.json")
    ast, ahd, abody = env.admin("/.well-known/baton/jwks.json")
    assert st == ast == 200 and body == abody
    assert "max-age=300" in hd["cache-control"] and "max-age=300" in ahd["Cache-Control"]
    keys = json.loads(body)["keys"]
    assert len(keys) == 1 and keys[0]["kty"] == "EC" and keys[0]["crv"] == "P-256" and "d" not in keys[0]
    pub = env.assertion_key.public_key().public_numbers()
    assert jwt.utils.base64url_decode(keys[0]["x"]) == pub.x.to_bytes(32, "big")
    # RFC 7638 thumbprint, computed here independently
    canon = json.dumps({"crv": "P-256", "kty": "EC", "x": keys[0]["x"], "y": keys[0]["y"]},
                       separators=(",", ":"), sort_keys=True)
    assert keys[0]["kid"] == jwt.utils.base64url_encode(hashlib.sha256(canon.encode()).digest()).decode()


def test_explain_prints_the_claims(env):
    tok = aws_token(env)
    r = run_baton("explain", "-c", env.dir / "baton.json", "--method", "POST", "--path", "/sfn/run",
                  "--header", "X-Sfn-Execution: " + EXEC, "--token", tok, "--json")
    assert r.returncode == 0, r.stderr
    a = json.loads(r.stdout)["assertion"]
    assert a["iss"] == GW and a["sub"] == SUB and a["step"] == "sfn"
    assert a["headers"] == {"X-Sfn-Execution": EXEC} and a["caller"]["aws_account"] == "123456789012"
    r = run_baton("explain", "-c", env.dir / "baton.json", "--method", "POST", "--path", "/sfn/run",
                  "--header", "X-Sfn-Execution: " + EXEC, "--token", tok)
    assert r.returncode == 0 and "assertion:" in r.stdout and EXEC in r.stdout
    r = run_baton("explain", "-c", env.dir / "baton.json", "--method", "POST", "--path", "/plain/x",
                  "--token", tok, "--json")
    assert json.loads(r.stdout)["assertion"] is None, "caller_assertion false: nothing would be signed"


# ------------------------------------------------------------ jose (npm)

JOSE_SRC = SRCDIR / "tests" / "jose"
JOSE_FILES = ("package.json", "package-lock.json", "verify.mjs")


def jose_dir():
    """The pinned jose project in the build tree, `npm ci` when the lockfile changed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node and npm are not installed (scripts/deps.sh installs nodejs and npm)")
    d = BUILDDIR / "tests" / "jose-verifier"
    d.mkdir(parents=True, exist_ok=True)
    for f in JOSE_FILES:
        shutil.copyfile(JOSE_SRC / f, d / f)
    want = hashlib.sha256((JOSE_SRC / "package-lock.json").read_bytes()).hexdigest()
    stamp = d / ".installed-lock-sha256"
    if not (d / "node_modules" / "jose").is_dir() or not stamp.exists() or stamp.read_text() != want:
        try:
            r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=d,
                               capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            pytest.skip("npm ci of the pinned jose timed out (npm registry unreachable?)")
        if r.returncode != 0:
            pytest.skip("npm ci of the pinned jose failed (offline?): " + r.stderr[-300:])
        stamp.write_text(want)
    return node, d


def jose_verify(env, tokens, audience):
    node, d = jose_dir()
    req = {"jwks": jwks_url(env), "issuer": GW, "audience": audience, "typ": TYP, "tokens": tokens}
    r = subprocess.run([node, str(d / "verify.mjs")], input=json.dumps(req), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_verifies_with_npm_jose(env, up):
    aud = "http://127.0.0.1:%d" % env.upstream_port
    a = send(env, up, "/sfn/run", aws_token(env), {"X-Sfn-Execution": EXEC})[2][0]
    c = send(env, up, "/cog/run", cognito_token(env), {"X-Sfn-Execution": EXEC2})[2][0]
    tampered = a[:-4] + ("AAAA" if not a.endswith("AAAA") else "BBBB")
    out = jose_verify(env, [a, c, tampered], aud)
    assert out[0]["ok"] and out[0]["payload"]["sub"] == SUB, out[0]
    assert out[0]["payload"]["headers"]["X-Sfn-Execution"] == EXEC
    assert out[0]["payload"]["caller"]["aws_account"] == "123456789012"
    assert out[1]["ok"] and out[1]["payload"]["caller"]["client_id"] == CLIENT_ID, out[1]
    assert not out[2]["ok"] and out[2]["code"] == "ERR_JWS_SIGNATURE_VERIFICATION_FAILED", out[2]
    wrong_aud = jose_verify(env, [a], "https://someone-else.test")
    assert not wrong_aud[0]["ok"] and wrong_aud[0]["code"] == "ERR_JWT_CLAIM_VALIDATION_FAILED"


# ------------------------------------------------------------ rotation

def test_rotation_with_previous_keys(tmp_path, up):
    """A generated key first (no signing_key), then a new configured key with the
    old public key in previous_keys: assertions signed before still verify
    against the JWKS served after, by PyJWT and by jose; the old key never signs."""
    aud = "http://127.0.0.1:%d" % up.port
    e = make_env(tmp_path, up, {"issuer": GW})  # default header, generated key
    e.start()
    try:
        tok = aws_token(e)
        st, _, got = send(e, up, "/sfn/run", tok, {"X-Sfn-Execution": EXEC,
                                                   "X-Baton-Assertion": "forged"})
        assert st == 200 and got and got[0] != "forged", "default header; the client's copy stripped"
        old = got[0]
        old_jwks = json.loads(e.request("GET", "/.well-known/baton/jwks.json")[2])["keys"]
        assert pyjwt_verify(e, old, aud)["sub"] == SUB
        # a SIGHUP reload keeps the generated key: assertions already out stay verifiable
        gen = config_generation(e)
        e.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while config_generation(e) == gen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert config_generation(e) > gen, "the reload happened"
        assert json.loads(e.request("GET", "/.well-known/baton/jwks.json")[2])["keys"] == old_jwks
    finally:
        assert e.stop() == 0
    # the old public key, from the JWKS, into a PEM for previous_keys
    nums = ec.EllipticCurvePublicNumbers(
        int.from_bytes(jwt.utils.base64url_decode(old_jwks[0]["x"]), "big"),
        int.from_bytes(jwt.utils.base64url_decode(old_jwks[0]["y"]), "big"), ec.SECP256R1())
    (tmp_path / "old.pub.pem").write_bytes(nums.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    write_key(tmp_path / "new.pem")
    e.config["assertion"] = {"issuer": GW, "signing_key": "new.pem", "previous_keys": ["old.pub.pem"]}
    e.write_config()
    r = run_baton("check", "-c", e.dir / "baton.json")
    assert r.returncode == 0, r.stderr
    line = [l for l in r.stdout.splitlines() if l.startswith("caller assertion:")]
    assert line and "new.pem" in line[0] and "1 previous key;" in line[0], r.stdout
    assert line[0].split("to:")[1].split() == ["echo", "echo_base", "dead", "gcp"], \
        "every upstream but the one with caller_assertion false"
    e.start()
    try:
        keys = json.loads(e.request("GET", "/.well-known/baton/jwks.json")[2])["keys"]
        assert [k["kid"] for k in keys][1:] == [old_jwks[0]["kid"]], "the previous key is published second"
        new = send(e, up, "/sfn/run", aws_token(e), {"X-Sfn-Execution": EXEC})[2][0]
        assert jwt.get_unverified_header(new)["kid"] == keys[0]["kid"] != old_jwks[0]["kid"], \
            "the new key signs, never the previous one"
        assert pyjwt_verify(e, old, aud)["sub"] == SUB, "an assertion signed before rotation still verifies"
        assert pyjwt_verify(e, new, aud)["sub"] == SUB
        out = jose_verify(e, [old, new], aud)
        assert out[0]["ok"] and out[1]["ok"], out
    finally:
        assert e.stop() == 0


def test_bad_signing_key_refuses_to_start(tmp_path, up):
    write_key(tmp_path / "loose.pem", mode=0o644)
    e = make_env(tmp_path, up, {"issuer": GW, "signing_key": "loose.pem"})
    with pytest.raises(RuntimeError) as ei:
        e.start()
    e.stop()
    assert "mode 644" in str(ei.value)


# ------------------------------------------------------------ docs examples

def doc_block(title):
    """The indented code block under `## <title>` in docs/assertion.md."""
    text = (SRCDIR / "docs" / "assertion.md").read_text()
    part = text.split("## " + title + "\n", 1)[1].split("\n## ", 1)[0]
    lines, started = [], False
    for line in part.splitlines():
        if line.startswith("    ") or (started and not line.strip()):
            lines.append(line[4:])
            started = True
        elif started:
            break
    return "\n".join(lines).strip() + "\n"


def localize(code, env):
    return (code.replace("https://gateway.example.com/.well-known/baton/jwks.json", jwks_url(env))
                .replace("https://gateway.example.com", GW)
                .replace("https://billing-abc-uc.a.run.app", "http://127.0.0.1:%d" % env.upstream_port))


def test_docs_python_example_works(env, up):
    tok = send(env, up, "/sfn/run", aws_token(env), {"X-Sfn-Execution": EXEC})[2][0]
    ns = {}
    exec(compile(localize(doc_block("Verifying it in Python (PyJWT)"), env), "docs/assertion.md", "exec"), ns)
    claims = ns["caller_of"]({"x-baton-assertion": tok})
    assert claims["sub"] == SUB and claims["headers"]["X-Sfn-Execution"] == EXEC
    with pytest.raises(jwt.InvalidTokenError):
        ns["caller_of"]({"x-baton-assertion": tok[:-3] + ("AAA" if not tok.endswith("AAA") else "BBB")})


def test_docs_node_example_works(env, up):
    node, d = jose_dir()
    tok = send(env, up, "/sfn/run", aws_token(env), {"X-Sfn-Execution": EXEC})[2][0]
    (d / "doc_example.mjs").write_text(localize(doc_block("Verifying it in Node (jose)"), env))
    (d / "doc_driver.mjs").write_text(
        "import { callerOf } from './doc_example.mjs';\n"
        "const p = await callerOf({'x-baton-assertion': process.argv[2]});\n"
        "process.stdout.write(JSON.stringify(p));\n")
    r = subprocess.run([node, str(d / "doc_driver.mjs"), tok], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    assert p["sub"] == SUB and p["headers"]["X-Sfn-Execution"] == EXEC

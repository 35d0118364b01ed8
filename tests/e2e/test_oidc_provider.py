"""End to end against a real OpenID Provider: the npm package oidc-provider,
pinned by tests/oidc/package-lock.json and installed with `npm ci` into the
build directory (never into the source tree), run by tests/oidc/provider.mjs
on 127.0.0.1. It issues client-credentials access tokens in the RFC 9068 JWT
format (typ at+jwt) signed with RS256, PS256, ES256 and EdDSA; `baton serve`
finds its keys through OIDC discovery and must accept each of them, and
refuse what is not its own.

Needs node and npm (scripts/deps.sh installs them) and the npm registry the
first time; without them the module is skipped with the reason."""
import base64
import hashlib
import json
import select
import shutil
import subprocess

import pytest
import requests

from conftest import BUILDDIR, SRCDIR
from serve_env import ServeEnv
from upstream import Upstream

OIDC_SRC = SRCDIR / "tests" / "oidc"
FILES = ("package.json", "package-lock.json", "provider.mjs")


def install_dir():
    """Copies the pinned project to the build tree and runs `npm ci` there when
    the lockfile changed since the last install. Skips the module on failure."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node and npm are not installed (scripts/deps.sh installs nodejs and npm)")
    d = BUILDDIR / "tests" / "oidc-provider"
    d.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        shutil.copyfile(OIDC_SRC / f, d / f)
    want = hashlib.sha256((OIDC_SRC / "package-lock.json").read_bytes()).hexdigest()
    stamp = d / ".installed-lock-sha256"
    if not (d / "node_modules" / "oidc-provider").is_dir() or \
            not stamp.exists() or stamp.read_text() != want:
        try:
            r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                               cwd=d, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            pytest.skip("npm ci of the pinned oidc-provider timed out (npm registry unreachable?)")
        if r.returncode != 0:
            lines = [l for l in (r.stderr + r.stdout).splitlines()
                     if l.startswith("npm ERR!") or l.startswith("npm error")]
            why = "; ".join(l.split(" ", 2)[-1] for l in lines[:3]) or "exit %d" % r.returncode
            pytest.skip("npm ci of the pinned oidc-provider failed (offline, or the npm registry "
                        "is unreachable): " + why)
        stamp.write_text(want)
    return node, d


@pytest.fixture(scope="module")
def provider():
    node, d = install_dir()
    log = open(d / "provider.stderr", "wb")
    proc = subprocess.Popen([node, "provider.mjs"], cwd=d, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=log)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else b""
        if not line:
            raise RuntimeError("oidc-provider did not start: " +
                               (d / "provider.stderr").read_text(errors="replace"))
        info = json.loads(line)
        info["version"] = json.loads((d / "node_modules" / "oidc-provider" /
                                      "package.json").read_text())["version"]
        yield info
    finally:
        proc.stdin.close()  # the provider exits when its stdin closes
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def access_token(info, alg):
    r = requests.post(info["token_endpoint"], timeout=10,
                      auth=(info["client_id"], info["client_secret"]),
                      data={"grant_type": "client_credentials", "scope": info["scope"],
                            "resource": info["resources"][alg]})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def jose_header(token):
    h = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))


@pytest.fixture(scope="module")
def env(tmp_path_factory, provider):
    up = Upstream().start()
    allow = [{"methods": ["GET"], "paths": ["/**"]}]
    issuer = {"name": "oidc", "issuer": provider["issuer"], "discovery": True,
              "audiences": sorted(provider["resources"].values()),
              "algorithms": ["RS256", "PS256", "ES256", "EdDSA"], "token_types": ["at+jwt"],
              "allow_http": True, "refresh_min_s": 1, "fetch_timeout_ms": 3000, "leeway_s": 5}
    e = ServeEnv(tmp_path_factory.mktemp("oidc"), up.port,
                 extra={"issuers": [issuer]},
                 policies={
                     "oidc": {"route": {"host": "*", "path_prefix": "/oidc/"}, "upstream": "gcp",
                              "callers": [{"issuer": "oidc",
                                           "claims": {"client_id": provider["client_id"]}}],
                              "allow": allow},
                 })
    e.start()
    yield e
    rc = e.stop()
    up.stop()
    assert rc == 0


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
def test_access_token_verifies(env, provider, alg):
    tok = access_token(provider, alg)
    h = jose_header(tok)
    assert h["alg"] == alg and h["typ"] == "at+jwt" and h["kid"] == provider["kids"][alg], \
        "oidc-provider %s issued an RFC 9068 %s token" % (provider["version"], alg)
    st, _, _ = env.request("GET", "/oidc/reports", token=tok)
    assert st == 200, "baton accepts the provider's %s access token" % alg


def test_keys_came_from_discovery(env, provider):
    _, _, body = env.admin("/readyz")
    issuers = {i["name"]: i for i in json.loads(body)["keys"]["issuers"]}
    assert issuers["oidc"]["loaded"] and issuers["oidc"]["keys"] == 4, \
        "all four keys of the provider's JWKS are usable"


def test_tampered_and_foreign_tokens_fail(env, provider):
    tok = access_token(provider, "ES256")
    h, p, s = tok.split(".")
    sig = bytearray(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
    sig[5] ^= 1
    bad = h + "." + p + "." + base64.urlsafe_b64encode(bytes(sig)).rstrip(b"=").decode()
    assert env.request("GET", "/oidc/reports", token=bad)[0] == 401, "a flipped signature bit fails"
    # the payload of an RS256 token under the header of an EdDSA one: alg/key mismatch
    rs = access_token(provider, "RS256").split(".")
    ed = access_token(provider, "EdDSA").split(".")
    assert env.request("GET", "/oidc/reports", token=ed[0] + "." + rs[1] + "." + rs[2])[0] == 401
    assert env.request("GET", "/oidc/reports")[0] == 401, "no token: 401"


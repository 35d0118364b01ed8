"""baton's fully local demo: the whole chain on loopback, bounded in time.

  caller token from a loopback AWS-style issuer (discovery + JWKS)
    -> baton (conf/demo/baton.json: policy, audit, "local" Google credentials)
    -> a demo upstream that verifies the ID token baton minted for it against
       baton's /.well-known/jwks.json and prints the identity it received.

It shows allow, 401, 403 and 404 with their audit records, then verifies the
audit log's hash chain and signed checkpoints. Run by scripts/demo.sh with
Debian's /usr/bin/python3 (python3-jwt, python3-cryptography, python3-requests).
"""
import http.server
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import jwt
import requests

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from idp import AwsIssuer  # noqa: E402  (the loopback issuer the tests use)

BATON = pathlib.Path(os.environ.get("BATON_BIN", ROOT / "baton"))
GATEWAY = "http://127.0.0.1:18080"
ADMIN = "http://127.0.0.1:19090"
AUDIENCE = "https://gateway.demo.local"


def say(text=""):
    print(text, flush=True)


class DemoUpstream(http.server.BaseHTTPRequestHandler):
    """The Cloud Run service stand-in: checks the ID token like a service that
    validates tokens itself, and answers with the identity it saw."""
    protocol_version = "HTTP/1.1"
    jwks = None

    def log_message(self, *args):
        pass

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        header = self.headers.get("X-Serverless-Authorization", "")
        try:
            token = header.split(" ", 1)[1]
            key = DemoUpstream.jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(token, key.key, algorithms=["RS256"],
                                audience="https://reports.demo.local")
            seen = {"verified": True, "iss": claims["iss"], "aud": claims["aud"],
                    "email": claims.get("email"), "exp_in_s": claims["exp"] - int(time.time())}
        except Exception as e:  # the demo shows what a service would refuse
            seen = {"verified": False, "error": type(e).__name__}
        seen["client_authorization_forwarded"] = "Authorization" in self.headers
        seen["path"] = self.path
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer


def call(title, method, path, token=None, headers=None):
    hdrs = dict(headers or {})
    shown = ""
    if token:
        hdrs["Authorization"] = "Bearer " + token
        shown = " -H 'Authorization: Bearer $TOKEN'"
    for k, v in (headers or {}).items():
        shown += " -H '%s: %s'" % (k, v)
    say("\n== %s\n$ curl -X %s%s %s%s" % (title, method, shown, GATEWAY, path))
    r = requests.request(method, GATEWAY + path, headers=hdrs, timeout=10)
    www = r.headers.get("WWW-Authenticate")
    say("HTTP %d%s" % (r.status_code, ("  WWW-Authenticate: " + www) if www else ""))
    say(r.text.strip()[:400])
    return r


def main():
    if not BATON.exists():
        sys.exit("demo: %s not built (run scripts/demo.sh)" % BATON)
    work = pathlib.Path(tempfile.mkdtemp(prefix="baton-demo-"))
    shutil.copytree(ROOT / "conf" / "demo", work, dirs_exist_ok=True)
    procs = []
    issuer = upstream = None
    try:
        subprocess.run([str(BATON), "audit", "keygen", "--out", str(work / "audit-ed25519.pem")],
                       check=True, capture_output=True)
        pub = work / "audit-ed25519.pub.pem"
        subprocess.run(["openssl", "pkey", "-in", str(work / "audit-ed25519.pem"), "-pubout",
                        "-out", str(pub)], check=True)

        issuer = AwsIssuer(path="/demo-account", port=18081, algs=("ES384",)).start()
        upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 18082), DemoUpstream)
        threading.Thread(target=upstream.serve_forever, daemon=True).start()

        say("== baton check -c conf/demo/baton.json")
        chk = subprocess.run([str(BATON), "check", "-c", str(work / "baton.json")],
                             capture_output=True, text=True)
        say((chk.stdout + chk.stderr).strip())
        if chk.returncode != 0:
            sys.exit("demo: config check failed")

        log = open(work / "baton.log", "w")
        baton = subprocess.Popen([str(BATON), "serve", "-c", str(work / "baton.json")],
                                 stdout=log, stderr=subprocess.STDOUT)
        procs.append(baton)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                if requests.get(ADMIN + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if baton.poll() is not None:
                sys.exit("demo: baton exited: see %s" % (work / "baton.log"))
            time.sleep(0.1)
        else:
            sys.exit("demo: baton not ready within 15 s: see %s" % (work / "baton.log"))
        say("\nbaton is ready (GET %s/readyz = 200)" % ADMIN)
        DemoUpstream.jwks = jwt.PyJWKClient(ADMIN + "/.well-known/jwks.json")

        lambda_role = "arn:aws:iam::123456789012:role/weekly-report-lambda"
        good = issuer.mint(role_arn=lambda_role, audience=AUDIENCE)
        other = issuer.mint(role_arn="arn:aws:iam::123456789012:role/intern-sandbox",
                            audience=AUDIENCE)
        call("allowed: the weekly-report Lambda's token; the upstream verifies what baton minted",
             "POST", "/reports/weekly", token=good, headers={"X-Sfn-Execution": "demo-run-1"})
        call("401: no token", "POST", "/reports/weekly")
        call("401: a token for another audience (the reason goes to the audit log only)",
             "POST", "/reports/weekly", token=issuer.mint(role_arn=lambda_role,
                                                          audience="https://elsewhere"))
        call("403: a valid token of a role the step's policy does not name",
             "POST", "/reports/weekly", token=other)
        call("403: the right caller, a method/path no allow rule names",
             "DELETE", "/reports/weekly", token=good)
        call("404: no step policy routes this path", "GET", "/payroll/export", token=good)

        baton.send_signal(signal.SIGTERM)  # drain, flush, final signed checkpoint
        baton.wait(timeout=15)
        log.close()

        say("\n== the audit records (%s)" % (work / "audit.jsonl"))
        for line in open(work / "audit.jsonl"):
            rec = json.loads(line)
            if rec["kind"] != "request":  # open, checkpoint, rotate, lost
                say("  seq %-3s %s" % (rec["seq"], {
                    "open": "open (the chain starts: genesis prev = 64 zeros)",
                    "checkpoint": "checkpoint (Ed25519-signed head of the chain)"}.get(
                        rec["kind"], rec["kind"])))
                continue
            caller = rec.get("caller") or {}
            say("  seq %-3s %-6s %-18s %s %-6s %-18s sub=%s" % (
                rec.get("seq"), rec.get("decision"), rec.get("reason"), rec.get("status"),
                (rec.get("request") or {}).get("method"), (rec.get("request") or {}).get("path"),
                caller.get("sub")))
        say("\n== baton audit verify audit.jsonl --pubkey audit-ed25519.pub.pem")
        v = subprocess.run([str(BATON), "audit", "verify", str(work / "audit.jsonl"),
                            "--pubkey", str(pub)], capture_output=True, text=True)
        say((v.stdout + v.stderr).strip())
        say("\nDemo files (config, policy, audit log, baton log) are in %s" % work)
        return v.returncode
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if upstream:
            upstream.shutdown()
        if issuer:
            issuer.stop()


if __name__ == "__main__":
    sys.exit(main())

"""baton's fully local demo: the whole chain on loopback, bounded in time.

  caller token from a loopback AWS-style issuer (discovery + JWKS)
    -> baton (conf/demo/baton.json: policy, audit, "local" Google credentials)
    -> a demo upstream that verifies the ID token baton minted for it against
       baton's /.well-known/jwks.json and prints the identity it received.

It shows allow, 401, 403 and 404 (each call as the curl command it is, with
the real token shortened) and their audit records, then verifies the audit
log's hash chain and signed checkpoints. Run by scripts/demo.sh with Debian's
/usr/bin/python3 (python3-jwt, python3-cryptography, python3-requests).

  demo.py [--ports G,A,I,U,C]   run the demo and stop everything it started
  demo.py --keep                leave baton, the issuer and the upstream running;
                                print the commands to try next and how to stop
  demo.py --token --dir DIR     a fresh caller token from a kept demo's issuer
  demo.py --stop --dir DIR      stop a kept demo (the pids in DIR/demo.pids)

The issuer and the upstream run in a child process of their own (`--standins`),
so that --keep can leave them running after this script exits. Ports default
to 18080 (gateway), 19090 (admin), 18081 (issuer), 18082 (upstream) and 18083
(the issuer's mint endpoint); --ports moves them (the tests use free ones).
"""
import argparse
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
from idp import AwsIssuer, _Server, _control_handler  # noqa: E402  (the tests' loopback issuer)

BATON = pathlib.Path(os.environ.get("BATON_BIN", ROOT / "build" / "demo" / "baton"))  # demo.sh's build
AUDIENCE = "https://gateway.demo.local"
LAMBDA_ROLE = "arn:aws:iam::123456789012:role/weekly-report-lambda"
DEFAULT_PORTS = (18080, 19090, 18081, 18082, 18083)  # gateway, admin, issuer, upstream, mint
PY = "/usr/bin/python3"


class Ports:
    def __init__(self, spec=None):
        vals = [int(x) for x in spec.split(",")] if spec else list(DEFAULT_PORTS)
        if len(vals) != 5:
            raise SystemExit("demo: --ports takes five ports: gateway,admin,issuer,upstream,mint")
        self.gateway, self.admin, self.issuer, self.upstream, self.mint = vals

    def spec(self):
        return "%d,%d,%d,%d,%d" % (self.gateway, self.admin, self.issuer, self.upstream, self.mint)

    @property
    def gateway_url(self):
        return "http://127.0.0.1:%d" % self.gateway

    @property
    def admin_url(self):
        return "http://127.0.0.1:%d" % self.admin


def short(token):
    """A token as the demo prints it: recognisable, never whole."""
    return "%s...%s" % (token[:12], token[-6:])


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


def call(ports, title, method, path, token=None, headers=None):
    hdrs = dict(headers or {})
    shown = ""
    if token:
        hdrs["Authorization"] = "Bearer " + token
        shown = " -H 'Authorization: Bearer %s'" % short(token)
    for k, v in (headers or {}).items():
        shown += " -H '%s: %s'" % (k, v)
    say("\n== %s\n$ curl -X %s%s %s%s" % (title, method, shown, ports.gateway_url, path))
    r = requests.request(method, ports.gateway_url + path, headers=hdrs, timeout=10)
    www = r.headers.get("WWW-Authenticate")
    say("HTTP %d%s" % (r.status_code, ("  WWW-Authenticate: " + www) if www else ""))
    say(r.text.strip()[:400])
    return r


def caller_text(rec):
    """Who called, as the record says: the verified sub, an unverified hint, or none."""
    caller = rec.get("caller")
    if not caller and rec.get("reason") == "token_missing":
        return "caller: none (no token)"
    if not caller:
        return "caller: none (refused before the token was checked)"
    sub = caller.get("sub") or "(no sub)"
    if caller.get("verified"):
        return "caller: " + sub
    return "caller: not verified (token %s..., claimed sub %s)" % (
        (caller.get("token_sha256") or "")[:12], sub)


def mint(ports, role=LAMBDA_ROLE, audience=AUDIENCE, lifetime=3600):
    """A caller token from the stand-in issuer's mint endpoint."""
    r = requests.get("http://127.0.0.1:%d/mint" % ports.mint,
                     params={"role_arn": role, "audience": audience, "lifetime": lifetime},
                     timeout=5)
    r.raise_for_status()
    return r.json()["token"]


def standins(work, ports):
    """The child process: the issuer, its mint endpoint and the upstream, until SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    issuer = AwsIssuer(path="/demo-account", port=ports.issuer, algs=("ES384",)).start()
    control = _Server(("127.0.0.1", ports.mint), _control_handler(issuer, stop))
    threading.Thread(target=control.serve_forever, args=(0.05,), daemon=True).start()
    DemoUpstream.jwks = jwt.PyJWKClient(ports.admin_url + "/.well-known/jwks.json")
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", ports.upstream), DemoUpstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    (work / "standins.ready").write_text(str(os.getpid()))
    stop.wait()
    upstream.shutdown()
    control.shutdown()
    issuer.stop()
    return 0


def demo_state(work):
    try:
        return json.loads((work / "demo.json").read_text())
    except (OSError, ValueError):
        raise SystemExit("demo: %s is not a kept demo's directory (no demo.json)" % work)


def ours(pid):
    """Whether pid is still a process this demo started (a reused pid is left alone)."""
    try:
        cmd = pathlib.Path("/proc/%d/cmdline" % pid).read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"baton" in c or b"demo.py" in c for c in cmd)


def stop_kept(work):
    try:
        pids = [int(x) for x in (work / "demo.pids").read_text().split()]
    except (OSError, ValueError):
        say("demo: nothing to stop in %s (no demo.pids: stopped already?)" % work)
        return 1
    for pid in pids:
        if ours(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 15
    while time.time() < deadline and any(ours(p) for p in pids):
        time.sleep(0.1)
    left = [p for p in pids if ours(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    (work / "demo.pids").unlink()
    say("stopped: %s" % ", ".join(str(p) for p in pids))
    say("the audit log now ends with a signed checkpoint:")
    say("  %s audit verify %s --pubkey %s" % (BATON, work / "audit.jsonl",
                                               work / "audit-ed25519.pub.pem"))
    return 0


def wait_file(path, proc, what, seconds=15):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if path.exists():
            return
        if proc.poll() is not None:
            raise SystemExit("demo: %s exited" % what)
        time.sleep(0.05)
    raise SystemExit("demo: %s not ready within %d s" % (what, seconds))


def run(ports, keep):
    if not BATON.exists():
        sys.exit("demo: %s not built (run scripts/demo.sh)" % BATON)
    work = pathlib.Path(tempfile.mkdtemp(prefix="baton-demo-"))
    shutil.copytree(ROOT / "conf" / "demo", work, dirs_exist_ok=True)
    cfg = json.loads((work / "baton.json").read_text())
    cfg["listen"] = "127.0.0.1:%d" % ports.gateway
    cfg["admin_listen"] = "127.0.0.1:%d" % ports.admin
    cfg["issuers"][0]["issuer"] = "http://127.0.0.1:%d/demo-account" % ports.issuer
    cfg["upstreams"][0]["url"] = "http://127.0.0.1:%d" % ports.upstream
    (work / "baton.json").write_text(json.dumps(cfg, indent=2) + "\n")
    procs = []
    kept = False
    try:
        subprocess.run([str(BATON), "audit", "keygen", "--out", str(work / "audit-ed25519.pem")],
                       check=True, capture_output=True)
        pub = work / "audit-ed25519.pub.pem"
        subprocess.run(["openssl", "pkey", "-in", str(work / "audit-ed25519.pem"), "-pubout",
                        "-out", str(pub)], check=True)

        slog = open(work / "standins.log", "w")
        st = subprocess.Popen([PY, str(pathlib.Path(__file__).resolve()), "--standins",
                               "--dir", str(work), "--ports", ports.spec()],
                              stdout=slog, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(st)
        wait_file(work / "standins.ready", st, "the issuer and upstream (see %s)" % slog.name)

        say("== baton check -c %s" % (work / "baton.json"))
        chk = subprocess.run([str(BATON), "check", "-c", str(work / "baton.json")],
                             capture_output=True, text=True)
        say((chk.stdout + chk.stderr).strip())
        if chk.returncode != 0:
            sys.exit("demo: config check failed")

        log = open(work / "baton.log", "w")
        baton = subprocess.Popen([str(BATON), "serve", "-c", str(work / "baton.json")],
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(baton)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                if requests.get(ports.admin_url + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if baton.poll() is not None:
                sys.exit("demo: baton exited: see %s" % (work / "baton.log"))
            time.sleep(0.1)
        else:
            sys.exit("demo: baton not ready within 15 s: see %s" % (work / "baton.log"))
        say("\nbaton is ready (GET %s/readyz = 200)" % ports.admin_url)

        good = mint(ports)
        other = mint(ports, role="arn:aws:iam::123456789012:role/intern-sandbox")
        say("\ncaller token (role %s): %s (%d bytes, ES384, 1 h)" % (LAMBDA_ROLE, short(good),
                                                                    len(good)))
        call(ports, "allowed: the weekly-report Lambda's token; the upstream verifies what baton minted",
             "POST", "/reports/weekly", token=good, headers={"X-Sfn-Execution": "demo-run-1"})
        call(ports, "401: no token", "POST", "/reports/weekly")
        call(ports, "401: a token for another audience (the reason goes to the audit log only)",
             "POST", "/reports/weekly", token=mint(ports, audience="https://elsewhere"))
        call(ports, "403: a valid token of a role the step's policy does not name",
             "POST", "/reports/weekly", token=other)
        call(ports, "403: the right caller, a method/path no allow rule names",
             "DELETE", "/reports/weekly", token=good)
        call(ports, "404: no step policy routes this path", "GET", "/payroll/export", token=good)

        if not keep:
            baton.send_signal(signal.SIGTERM)  # drain, flush, final signed checkpoint
            baton.wait(timeout=15)
        log.close()

        say("\n== the audit records (%s)" % (work / "audit.jsonl"))
        deadline = time.time() + 5
        while keep and time.time() < deadline and \
                (work / "audit.jsonl").read_text().count('"kind":"request"') < 6:
            time.sleep(0.05)  # fsync "batch": a kept baton writes within batch_ms
        for line in open(work / "audit.jsonl"):
            rec = json.loads(line)
            if rec["kind"] != "request":  # open, checkpoint, rotate, lost
                say("  seq %-3s %s" % (rec["seq"], {
                    "open": "open (the chain starts: genesis prev = 64 zeros)",
                    "checkpoint": "checkpoint (Ed25519-signed head of the chain)"}.get(
                        rec["kind"], rec["kind"])))
                continue
            say("  seq %-3s %-6s %-18s %s %-6s %-18s %s" % (
                rec.get("seq"), rec.get("decision"), rec.get("reason"), rec.get("status"),
                (rec.get("request") or {}).get("method"), (rec.get("request") or {}).get("path"),
                caller_text(rec)))
        if keep:
            (work / "demo.pids").write_text("%d\n%d\n" % (baton.pid, st.pid))
            (work / "demo.json").write_text(json.dumps({"ports": ports.spec()}) + "\n")
            kept = True
            # the printed commands name the binary this demo ran, wherever it was built
            me = "BATON_BIN=%s %s %s" % (BATON, PY, pathlib.Path(__file__).resolve())
            say("\n== still running (--keep): baton (pid %d: gateway %s, admin %s), and the "
                "issuer and the upstream (pid %d); pids in %s"
                % (baton.pid, ports.gateway_url, ports.admin_url, st.pid, work / "demo.pids"))
            say("Try next:")
            say("  TOKEN=$(%s --token --dir %s)" % (me, work))
            say("  curl -X POST -H \"Authorization: Bearer $TOKEN\" -H 'X-Sfn-Execution: demo-run-2' "
                "%s/reports/weekly" % ports.gateway_url)
            say("  curl -H \"Authorization: Bearer $TOKEN\" %s/reports/runs/42" % ports.gateway_url)
            say("  %s explain -c %s --method DELETE --path /reports/weekly --token \"$TOKEN\""
                % (BATON, work / "baton.json"))
            say("  curl -s %s/metrics | grep baton_requests_total" % ports.admin_url)
            say("  curl -s %s/readyz" % ports.admin_url)
            say("  tail -n 3 %s" % (work / "audit.jsonl"))
            say("Edit %s, then reload: kill -HUP %d" % (work / "policies" / "weekly-report.json",
                                                      baton.pid))
            say("Stop everything:")
            say("  %s --stop --dir %s" % (me, work))
            say("  (or: kill $(cat %s))" % (work / "demo.pids"))
            return 0
        say("\n== baton audit verify audit.jsonl --pubkey audit-ed25519.pub.pem")
        v = subprocess.run([str(BATON), "audit", "verify", str(work / "audit.jsonl"),
                            "--pubkey", str(pub)], capture_output=True, text=True)
        say((v.stdout + v.stderr).strip())
        say("\nDemo files (config, policy, audit log, baton log) are in %s" % work)
        return v.returncode
    finally:
        if not kept:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()


def main(argv=None):
    ap = argparse.ArgumentParser(description="baton's fully local demo")
    ap.add_argument("--keep", action="store_true",
                    help="leave baton, the issuer and the upstream running")
    ap.add_argument("--token", action="store_true", help="print a token from a kept demo")
    ap.add_argument("--stop", action="store_true", help="stop a kept demo")
    ap.add_argument("--dir", type=pathlib.Path, help="a kept demo's directory")
    ap.add_argument("--ports", help="gateway,admin,issuer,upstream,mint (default %s)"
                    % ",".join(map(str, DEFAULT_PORTS)))
    ap.add_argument("--role", default=LAMBDA_ROLE, help="--token: the caller's role ARN")
    ap.add_argument("--standins", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.standins:
        return standins(args.dir, Ports(args.ports))
    if args.token or args.stop:
        if not args.dir:
            ap.error("--token and --stop need --dir (printed by --keep)")
        if args.stop:
            return stop_kept(args.dir)
        print(mint(Ports(demo_state(args.dir)["ports"]), role=args.role))
        return 0
    return run(Ports(args.ports), args.keep)


if __name__ == "__main__":
    sys.exit(main())

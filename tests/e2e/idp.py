"""Loopback stand-ins for the identity providers baton trusts.

Two issuers, each an HTTP server on 127.0.0.1 with OIDC discovery and a JWKS,
its own signing keys, request counters and failure switches:

- ``AwsIssuer``: AWS IAM outbound identity federation (sts:GetWebIdentityToken).
  The real issuer is ``https://<uuid>.tokens.sts.global.api.aws``; here it is
  ``http://127.0.0.1:PORT/<uuid>`` (baton's config sets allow_http for loopback).
  Keys ES384 and RS256; tokens carry ``typ: JWT``, ``sub`` = role ARN, ``aud``,
  a 300 s lifetime and the namespaced claims under ``https://sts.amazonaws.com/``.
- ``CognitoIssuer``: an Amazon Cognito user pool issuing client-credentials
  access tokens: RS256, no ``typ``, no ``aud``; ``client_id``, ``token_use``
  ``access`` and ``scope``; JWKS at ``<iss>/.well-known/jwks.json``.

Use it as a library from pytest::

    with AwsIssuer() as idp:
        tok = idp.mint(role_arn="arn:aws:iam::123456789012:role/x", audience="https://gw")
        idp.rotate("RS256"); idp.remove_key(old_kid); idp.down("error"); idp.count("jwks")

or as a script (``idp.py serve --kind aws``, or several stand-ins in one
process with ``--issuer aws:max-age=60 --issuer cognito``): it prints one JSON
line per stand-in with the issuer, its URLs and a control URL, serves until
its stdin closes or SIGTERM,
and answers control requests on the control port (``GET /info``, ``/mint``,
``/stats``; ``POST /rotate``, ``/remove``, ``/mode``, ``/cache_control``,
``/discovery_issuer``, ``/reset``), so non-Python tests can drive it too.

Tokens are signed by hand (header and payload JSON, base64url, the algorithm's
raw signature) so the header holds exactly what the caller asks for.
"""
import argparse
import base64
import collections
import http.server
import json
import signal
import sys
import threading
import time
import urllib.parse
import uuid

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

STS_NS = "https://sts.amazonaws.com/"

_CURVES = {"ES256": (ec.SECP256R1, hashes.SHA256, 32, "P-256"),
           "ES384": (ec.SECP384R1, hashes.SHA384, 48, "P-384"),
           "ES512": (ec.SECP521R1, hashes.SHA512, 66, "P-521")}
_RSA_HASH = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64u(n, length=None):
    length = length or (n.bit_length() + 7) // 8
    return b64u(n.to_bytes(length, "big"))


class Key:
    """One signing key and its public JWK. ``alg``: RS*/PS*/ES*/EdDSA."""

    def __init__(self, alg, kid=None, rsa_bits=2048):
        self.alg = alg
        self.kid = kid or "%s-%s" % (alg.lower(), uuid.uuid4().hex[:12])
        if alg[:2] in ("RS", "PS"):
            self.priv = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        elif alg in _CURVES:
            self.priv = ec.generate_private_key(_CURVES[alg][0]())
        elif alg == "EdDSA":
            self.priv = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError("unsupported alg %s" % alg)

    def jwk(self, with_alg=True):
        pub = self.priv.public_key()
        if self.alg[:2] in ("RS", "PS"):
            nums = pub.public_numbers()
            d = {"kty": "RSA", "n": _int_b64u(nums.n), "e": _int_b64u(nums.e)}
        elif self.alg in _CURVES:
            nums = pub.public_numbers()
            size = _CURVES[self.alg][2]
            d = {"kty": "EC", "crv": _CURVES[self.alg][3],
                 "x": _int_b64u(nums.x, size), "y": _int_b64u(nums.y, size)}
        else:
            from cryptography.hazmat.primitives import serialization
            raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            d = {"kty": "OKP", "crv": "Ed25519", "x": b64u(raw)}
        d.update({"kid": self.kid, "use": "sig"})
        if with_alg:
            d["alg"] = self.alg
        return d

    def sign(self, msg):
        if self.alg.startswith("RS"):
            return self.priv.sign(msg, padding.PKCS1v15(), _RSA_HASH[self.alg[2:]]())
        if self.alg.startswith("PS"):
            h = _RSA_HASH[self.alg[2:]]
            return self.priv.sign(msg, padding.PSS(mgf=padding.MGF1(h()), salt_length=h.digest_size), h())
        if self.alg in _CURVES:
            _, hf, size, _ = _CURVES[self.alg]
            r, s = decode_dss_signature(self.priv.sign(msg, ec.ECDSA(hf())))
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        return self.priv.sign(msg)


def sign_jws(key, claims, header=None):
    """Compact JWS of ``claims`` with ``key``. ``header`` replaces the default
    {"alg", "kid"} members given (a value of None removes a member)."""
    hdr = {"alg": key.alg, "kid": key.kid}
    for k, v in (header or {}).items():
        if v is None:
            hdr.pop(k, None)
        else:
            hdr[k] = v
    signing_input = (b64u(json.dumps(hdr, separators=(",", ":")).encode()) + "." +
                     b64u(json.dumps(claims, separators=(",", ":")).encode()))
    return signing_input + "." + b64u(key.sign(signing_input.encode()))


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # clients that hang up (baton's timeouts) are expected


class Issuer:
    """Base of the stand-ins: keys, discovery, JWKS, counters, failure modes.

    Modes (``down``): "error" answers 503, "hang" answers after ``hang_s``
    seconds, "garbage" answers 200 with a body that is not JSON, "refuse"
    closes the listening socket (connections refused); ``up()`` restores.
    """

    kind = "generic"
    default_algs = ("RS256",)
    jwks_suffix = "/.well-known/jwks.json"
    discovery_suffix = "/.well-known/openid-configuration"

    def __init__(self, algs=None, path=None, port=0, cache_control="public, max-age=3600",
                 hang_s=30.0):
        self._lock = threading.Lock()
        self.keys = [Key(a) for a in (algs or self.default_algs)]
        self.retired = []  # removed keys: tokens signed with them must stop verifying
        self.mode = "up"
        self.hang_s = hang_s
        self.cache_control = cache_control
        self.discovery_issuer = None  # override: a mismatch test
        self.jwks_override = None      # raw JWKS body override
        self.path = path if path is not None else self.default_path()
        self.requests = collections.Counter()
        self.request_log = []  # (monotonic time, path)
        self._server = None
        self._thread = None
        self.port = port
        self._bind()

    # -- naming -------------------------------------------------------------
    def default_path(self):
        return ""

    @property
    def issuer(self):
        return "http://127.0.0.1:%d%s" % (self.port, self.path)

    @property
    def jwks_uri(self):
        return self.issuer + self.jwks_suffix

    @property
    def discovery_url(self):
        return self.issuer + self.discovery_suffix

    # -- server -------------------------------------------------------------
    def _bind(self):
        self._server = _Server(("127.0.0.1", self.port), self._handler())
        self.port = self._server.server_address[1]

    def start(self):
        if self._server is None:
            self._bind()
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _handler(self):
        idp = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                idp._serve(self)

        return Handler

    def _serve(self, h):
        path = urllib.parse.urlsplit(h.path).path
        with self._lock:
            self.requests[path] += 1
            self.request_log.append((time.monotonic(), path))
            mode = self.mode
        if mode == "refuse":  # a kept-alive connection from before: hang up on it
            h.close_connection = True
            return
        if mode == "hang":
            time.sleep(self.hang_s)
        if mode == "error":
            return self._send(h, 503, b'{"error":"unavailable"}')
        if path == self.path + self.discovery_suffix:
            body = json.dumps(self.discovery()).encode()
        elif path == self.path + self.jwks_suffix:
            body = self.jwks_override if self.jwks_override is not None else \
                json.dumps(self.jwks()).encode()
        else:
            return self._send(h, 404, b'{"error":"not found"}')
        if mode == "garbage":
            body = b"<html>not json</html>"
        headers = [("Content-Type", "application/json")]
        if self.cache_control:
            headers.append(("Cache-Control", self.cache_control))
        self._send(h, 200, body, headers)

    @staticmethod
    def _send(h, status, body, headers=()):
        try:
            h.send_response(status)
            for k, v in headers:
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        except OSError:
            pass

    # -- documents ----------------------------------------------------------
    def discovery(self):
        return {"issuer": self.discovery_issuer or self.issuer,
                "jwks_uri": self.jwks_uri,
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": sorted({k.alg for k in self.keys})}

    def jwks(self):
        with self._lock:
            return {"keys": [k.jwk() for k in self.keys]}

    # -- keys ---------------------------------------------------------------
    def key(self, kid=None, alg=None):
        with self._lock:
            for k in self.keys + self.retired:
                if (kid is None or k.kid == kid) and (alg is None or k.alg == alg):
                    return k
        raise KeyError(kid or alg)

    def kids(self):
        with self._lock:
            return [k.kid for k in self.keys]

    def rotate(self, alg=None, kid=None):
        """Publishes a new key (first in the set) and returns it; the old keys stay."""
        if alg is None:
            alg = self.keys[0].alg if self.keys else self.default_algs[0]
        k = Key(alg, kid=kid)
        with self._lock:
            self.keys.insert(0, k)
        return k

    def remove_key(self, kid):
        """Stops publishing ``kid``; the key can still sign (a revoked key)."""
        with self._lock:
            for k in list(self.keys):
                if k.kid == kid:
                    self.keys.remove(k)
                    self.retired.append(k)
                    return k
        raise KeyError(kid)

    # -- failure switches and counters ----------------------------------------
    def down(self, mode="error"):
        if mode == "refuse":
            self.stop()
        with self._lock:
            self.mode = mode

    def up(self):
        with self._lock:
            self.mode = "up"
        if self._server is None:
            self.start()

    def count(self, what=None):
        """Requests served: all, or "jwks", "discovery", or an exact path."""
        with self._lock:
            if what is None:
                return sum(self.requests.values())
            path = {"jwks": self.path + self.jwks_suffix,
                    "discovery": self.path + self.discovery_suffix}.get(what, what)
            return self.requests[path]

    def request_times(self, what="jwks"):
        path = {"jwks": self.path + self.jwks_suffix,
                "discovery": self.path + self.discovery_suffix}.get(what, what)
        with self._lock:
            return [t for t, p in self.request_log if p == path]

    def reset_counters(self):
        with self._lock:
            self.requests.clear()
            self.request_log.clear()

    # -- tokens -------------------------------------------------------------
    def sign(self, claims, kid=None, alg=None, header=None):
        return sign_jws(self.key(kid, alg), claims, header)

    def info(self):
        return {"kind": self.kind, "issuer": self.issuer, "jwks_uri": self.jwks_uri,
                "discovery": self.discovery_url, "kids": self.kids(),
                "algs": [k.alg for k in self.keys]}


class AwsIssuer(Issuer):
    """AWS IAM outbound identity federation (sts:GetWebIdentityToken)."""

    kind = "aws"
    default_algs = ("ES384", "RS256")

    def default_path(self):
        return "/" + str(uuid.uuid4())  # stands for the <uuid> host label of the real issuer

    def mint(self, role_arn="arn:aws:iam::123456789012:role/sfn-billing",
             audience="https://gateway.example.com", account="123456789012",
             region="us-east-1", org_id="o-abc1234567", principal_tags=None, lifetime=300,
             alg="ES384", kid=None, now=None, extra=None, ns_extra=None, header=None):
        now = int(time.time() if now is None else now)
        ns = {"aws_account": account, "source_region": region, "org_id": org_id,
              "ou_path": "%s/r-ab12/ou-ab12-11111111/" % org_id,
              "principal_tags": principal_tags if principal_tags is not None else {"team": "billing"}}
        ns.update(ns_extra or {})
        claims = {"iss": self.issuer, "aud": audience, "sub": role_arn, "iat": now,
                  "exp": now + lifetime, "jti": str(uuid.uuid4()), STS_NS: ns}
        claims.update(extra or {})
        hdr = {"typ": "JWT"}
        hdr.update(header or {})
        return self.sign(claims, kid=kid, alg=None if kid else alg, header=hdr)


class CognitoIssuer(Issuer):
    """Amazon Cognito user pool, client-credentials access tokens."""

    kind = "cognito"
    default_algs = ("RS256",)

    def default_path(self):
        return "/us-east-1_" + uuid.uuid4().hex[:9]

    def mint(self, client_id="3q8v1example7clientid", scope="billing/reconcile",
             token_use="access", lifetime=3600, kid=None, now=None, extra=None, header=None):
        now = int(time.time() if now is None else now)
        claims = {"sub": client_id, "token_use": token_use, "scope": scope, "auth_time": now,
                  "iss": self.issuer, "exp": now + lifetime, "iat": now, "version": 2,
                  "jti": str(uuid.uuid4()), "client_id": client_id}
        claims.update(extra or {})
        return self.sign(claims, kid=kid, alg=None if kid else "RS256", header=header)


KINDS = {"aws": AwsIssuer, "cognito": CognitoIssuer}


# -- script mode: serve, and a control port for non-Python tests ----------------

def _control_handler(idp, stop_event):
    class Control(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _reply(self, obj, status=200):
            body = (obj if isinstance(obj, str) else json.dumps(obj)).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _do(self):
            u = urllib.parse.urlsplit(self.path)
            q = dict(urllib.parse.parse_qsl(u.query))
            p = u.path
            try:
                if p == "/info":
                    return self._reply(idp.info())
                if p == "/stats":
                    with idp._lock:
                        reqs = dict(idp.requests)
                    return self._reply({"total": idp.count(), "jwks": idp.count("jwks"),
                                        "discovery": idp.count("discovery"), "requests": reqs,
                                        "jwks_times": idp.request_times("jwks"),
                                        "discovery_times": idp.request_times("discovery")})
                if p == "/reset":
                    idp.reset_counters()
                    return self._reply({"ok": True})
                if p == "/mint":
                    args = {k: v for k, v in q.items() if k in ("kid", "audience", "role_arn",
                                                                "client_id", "scope", "alg")}
                    if "lifetime" in q:
                        args["lifetime"] = int(q["lifetime"])
                    return self._reply({"token": idp.mint(**args)})
                if p == "/rotate":
                    k = idp.rotate(q.get("alg"), q.get("kid"))
                    return self._reply({"kid": k.kid, "alg": k.alg})
                if p == "/remove":
                    idp.remove_key(q["kid"])
                    return self._reply({"ok": True})
                if p == "/mode":
                    if q.get("m", "up") == "up":
                        idp.up()
                    else:
                        idp.down(q["m"])
                    return self._reply({"ok": True})
                if p == "/cache_control":
                    idp.cache_control = q.get("v") or None
                    return self._reply({"ok": True})
                if p == "/discovery_issuer":
                    idp.discovery_issuer = q.get("v") or None
                    return self._reply({"ok": True})
                if p == "/jwks_override":
                    idp.jwks_override = q["v"].encode() if "v" in q else None
                    return self._reply({"ok": True})
                if p == "/quit":
                    stop_event.set()
                    return self._reply({"ok": True})
            except (KeyError, ValueError) as e:
                return self._reply({"error": str(e)}, 400)
            return self._reply({"error": "unknown control %s" % p}, 404)

        do_GET = _do
        do_POST = _do

    return Control


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run stand-ins until stdin closes or SIGTERM")
    s.add_argument("--kind", choices=sorted(KINDS), default="aws")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--control-port", type=int, default=0)
    s.add_argument("--algs", help="comma-separated key algorithms (default per kind)")
    s.add_argument("--cache-control", default="public, max-age=3600")
    s.add_argument("--issuer", action="append", metavar="KIND[:CACHE_CONTROL[:ALGS]]",
                   help="serve several stand-ins from this one process (repeatable; each on "
                        "its own ports, one JSON line each, in order; ALGS comma-separated); "
                        "overrides --kind")
    s.add_argument("--hang-s", type=float, default=30.0)
    s.add_argument("--no-stdin", action="store_true", help="do not stop when stdin closes")
    args = ap.parse_args(argv)

    stop = threading.Event()
    specs = []
    default_algs = args.algs.split(",") if args.algs else None
    for item in args.issuer or []:
        parts = item.split(":")
        if parts[0] not in KINDS or len(parts) > 3:
            ap.error("bad --issuer %s" % item)
        cc = parts[1] if len(parts) > 1 else args.cache_control
        algs = parts[2].split(",") if len(parts) > 2 and parts[2] else default_algs
        specs.append((parts[0], cc, algs, 0, 0))
    if not specs:
        specs = [(args.kind, args.cache_control, default_algs, args.port, args.control_port)]
    running = []
    for kind, cc, algs, port, cport in specs:
        idp = KINDS[kind](algs=algs, port=port, cache_control=cc or None, hang_s=args.hang_s)
        idp.start()
        ctl = _Server(("127.0.0.1", cport), _control_handler(idp, stop))
        threading.Thread(target=ctl.serve_forever, args=(0.05,), daemon=True).start()
        info = idp.info()
        info["control"] = "http://127.0.0.1:%d" % ctl.server_address[1]
        print(json.dumps(info), flush=True)
        running.append((idp, ctl))

    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    if not args.no_stdin:
        def watch_stdin():
            sys.stdin.read()
            stop.set()
        threading.Thread(target=watch_stdin, daemon=True).start()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    for idp, ctl in running:
        ctl.shutdown()
        ctl.server_close()
        idp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

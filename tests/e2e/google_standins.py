"""Loopback stand-ins for the Google endpoints baton calls to mint ID tokens:
the metadata server, the OAuth 2.0 token endpoint and IAM Credentials. One
threaded HTTP server answers all three, as Google does, and checks each
request against what Google's own client libraries send:

  metadata  GET /computeMetadata/v1/instance/service-accounts/default/identity
            ?audience=AUD&format=full   with Metadata-Flavor: Google
            .../default/token, .../default/email (same header)
            GET /computeMetadata/v1/instance/id (same header): `instance_id`
            GET /computeMetadata/v1/project/project-id -> the project id, text
            (endpoint "project"; `project_id`, default "proj")
            every answer carries Metadata-Flavor: Google
  oauth     POST /token  application/x-www-form-urlencoded
            grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT
            the assertion: RS256, typ JWT, kid = the key file's private_key_id,
            signed by the key file's key, iss = client_email, aud = token_uri,
            iat ~ now, exp = iat + 3600, and exactly one of target_audience
            (-> {"id_token"}) or scope = cloud-platform (-> {"access_token"})
  iam       POST /v1/projects/-/serviceAccounts/EMAIL:generateIdToken
            Authorization: Bearer <an access token this stand-in issued, unexpired>
            application/json {"audience": AUD, "includeEmail": true} -> {"token"}

Every request is recorded with the list of its deviations (`problems`); tests
assert there are none. Faults are set per endpoint name ("identity", "mtoken",
"email", "oauth", "iam"): "close" (connection closed without an answer),
"slow" (answer after `slow_s`), "500", "403", "404", "malformed", "oversized"
(2 MiB), "expired", "near_expiry" (exp in 30 s), "no_flavor" (metadata answer
without Metadata-Flavor), "short" (a token valid for `short_life_s`).
stop()/start() take the whole server down and up on the same port.

Issued ID tokens are RS256 JWTs signed by this stand-in's own key (`jwks()`),
with iss https://accounts.google.com, aud, azp, sub, email, email_verified,
iat and exp, so an upstream stand-in can verify what baton forwards.
"""
import base64
import hashlib
import http.server
import json
import socket
import threading
import time
import urllib.parse

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

META = "/computeMetadata/v1/instance/service-accounts/default/"
PROJECT_PATH = "/computeMetadata/v1/project/project-id"
GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
IAM_PREFIX = "/v1/projects/-/serviceAccounts/"
GOOGLE_ISS = "https://accounts.google.com"


def _b64u_int(n):
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def new_rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem_of(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def write_sa_key(path, email, token_uri, key=None, key_id="0123456789abcdef0123456789abcdef01234567",
                 mode=0o600, **overrides):
    """Writes a service-account key file as the Cloud console does; returns the key."""
    import os
    key = key or new_rsa_key()
    doc = {
        "type": "service_account",
        "project_id": "proj",
        "private_key_id": key_id,
        "private_key": pem_of(key),
        "client_email": email,
        "client_id": "123456789012345678901",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/x",
        "universe_domain": "googleapis.com",
    }
    doc.update(overrides)
    doc = {k: v for k, v in doc.items() if v is not None}
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
    os.chmod(path, mode)
    return key


def decode_unverified(token):
    return jwt.decode(token, options={"verify_signature": False})


class GoogleStandins:
    def __init__(self, own_email="baton-runtime@proj.iam.gserviceaccount.com", sa_key=None,
                 sa_key_id=None, sa_email=None, token_uri=None):
        self.key = new_rsa_key()
        self.kid = "standin-google-1"
        self.own_email = own_email
        self.project_id = "proj"
        # service_account_key mode: the public half of the key file's key.
        self.sa_key = sa_key
        self.sa_key_id = sa_key_id
        self.sa_email = sa_email
        self.token_uri = token_uri  # what the assertion's aud must be
        self.instance_id = "00bf4bf02d2a5c3e8a1e7f0c6f0a4d8e9b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c"
        self.lock = threading.Lock()
        self.records = []
        self.faults = {}
        self.slow_s = 3.0
        self.short_life_s = 63
        self.lifetime_s = 3600
        # impersonation: accounts that exist, and those baton may mint for
        self.accounts = set()
        self.token_creator = set()
        self.access_tokens = {}  # token -> expiry
        self.issued = {}  # sha256 hex of each ID token issued -> its claims
        self.port = None
        self.httpd = None
        self.thread = None

    # ---- control
    def start(self, port=0):
        handler = self._handler_class()
        server = http.server.ThreadingHTTPServer
        server.allow_reuse_address = True
        server.daemon_threads = True
        self.httpd = server(("127.0.0.1", port or self.port or 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    @property
    def host(self):
        return "127.0.0.1:%d" % self.port

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def set_fault(self, endpoint, fault):
        with self.lock:
            if fault is None:
                self.faults.pop(endpoint, None)
            else:
                self.faults[endpoint] = fault

    def grant(self, email, token_creator=True):
        with self.lock:
            self.accounts.add(email)
            if token_creator:
                self.token_creator.add(email)
            else:
                self.token_creator.discard(email)

    def calls(self, endpoint=None):
        with self.lock:
            return sum(1 for r in self.records if endpoint is None or r["endpoint"] == endpoint)

    def recorded(self, endpoint=None):
        with self.lock:
            return [dict(r) for r in self.records if endpoint is None or r["endpoint"] == endpoint]

    def problems(self):
        with self.lock:
            return [(r["endpoint"], r["path"], r["problems"]) for r in self.records if r["problems"]]

    def jwks(self):
        pub = self.key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                          "n": _b64u_int(pub.n), "e": _b64u_int(pub.e)}]}

    def verify(self, token, audience):
        """Verifies a token this stand-in issued (signature, aud, exp); returns its claims."""
        return jwt.decode(token, self.key.public_key(), algorithms=["RS256"], audience=audience,
                          issuer=GOOGLE_ISS)

    # ---- tokens
    def id_token(self, audience, email, fault=None):
        now = int(time.time())
        life = {"expired": -10, "near_expiry": 30, "short": self.short_life_s}.get(fault, self.lifetime_s)
        claims = {"iss": GOOGLE_ISS, "aud": audience, "azp": "1234567890", "sub": "1" + str(abs(hash(email)))[:20],
                  "email": email, "email_verified": True, "iat": now, "exp": now + life}
        tok = jwt.encode(claims, pem_of(self.key), algorithm="RS256", headers={"kid": self.kid})
        with self.lock:
            self.issued[hashlib.sha256(tok.encode()).hexdigest()] = claims
        return tok

    def token_valid(self, tok):
        with self.lock:
            return self.access_tokens.get(tok, 0) > time.time()

    def access_token(self):
        tok = "ya29.standin-" + hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:40]
        with self.lock:
            self.access_tokens[tok] = time.time() + 3599
        return tok, 3599

    # ---- request handling
    def _handler_class(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                outer._serve(self)

            def do_POST(self):
                outer._serve(self)

        return Handler

    def _answer(self, h, status, body, ctype="application/json", flavor=False, close=False):
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        if flavor:
            h.send_header("Metadata-Flavor", "Google")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        try:
            h.wfile.write(body)
        except OSError:
            pass

    def _serve(self, h):
        u = urllib.parse.urlsplit(h.path)
        n = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(n) if n else b""
        path = u.path
        if path.startswith(META):
            endpoint = {"identity": "identity", "token": "mtoken", "email": "email"}.get(path[len(META):], "meta?")
        elif path == "/computeMetadata/v1/instance/id":
            endpoint = "instance_id"
        elif path == PROJECT_PATH:
            endpoint = "project"
        elif path == "/token":
            endpoint = "oauth"
        elif path.startswith(IAM_PREFIX) and path.endswith(":generateIdToken"):
            endpoint = "iam"
        else:
            endpoint = "unknown"
        rec = {"endpoint": endpoint, "method": h.command, "path": path, "query": u.query,
               "headers": {k.lower(): v for k, v in h.headers.items()}, "body": body.decode(errors="replace"),
               "problems": [], "t": time.time()}
        with self.lock:
            self.records.append(rec)
            fault = self.faults.get(endpoint)
        problems = rec["problems"]
        if endpoint == "unknown":
            problems.append("unknown path " + path)
            return self._answer(h, 404, {"error": "not found"})

        if fault == "close":
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if fault == "slow":
            time.sleep(self.slow_s)
        meta = endpoint in ("identity", "mtoken", "email", "instance_id", "project")
        flavor = meta and fault != "no_flavor"
        if fault in ("500", "403", "404"):
            code = int(fault)
            status = {500: "INTERNAL", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}[code]
            return self._answer(h, code, {"error": {"code": code, "message": "stand-in fault " + fault,
                                                    "status": status}}, flavor=flavor)
        if fault == "oversized":
            return self._answer(h, 200, "x" * (2 << 20), flavor=flavor)

        if meta:
            self._check_metadata(h, u, endpoint, problems)
            if endpoint == "identity":
                q = urllib.parse.parse_qs(u.query)
                aud = (q.get("audience") or [""])[0]
                if fault == "malformed":
                    return self._answer(h, 200, "not a jwt at all", "text/html", flavor=flavor)
                return self._answer(h, 200, self.id_token(aud, self.own_email, fault), "text/html", flavor=flavor)
            if endpoint == "mtoken":
                if fault == "malformed":
                    return self._answer(h, 200, '{"access_token": 12', flavor=flavor)
                tok, life = self.access_token()
                return self._answer(h, 200, {"access_token": tok, "expires_in": life, "token_type": "Bearer"},
                                    flavor=flavor)
            if endpoint == "instance_id":
                return self._answer(h, 200, self.instance_id, "application/text", flavor=flavor)
            if endpoint == "project":
                return self._answer(h, 200, self.project_id, "application/text", flavor=flavor)
            return self._answer(h, 200, self.own_email, "application/text", flavor=flavor)

        if endpoint == "oauth":
            claims = self._check_oauth(h, body, problems)
            if fault == "malformed":
                return self._answer(h, 200, {"id_token": 42, "access_token": None})
            if claims is None:
                return self._answer(h, 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
            if "target_audience" in claims:
                return self._answer(h, 200, {"id_token": self.id_token(claims["target_audience"], claims["iss"], fault)})
            tok, life = self.access_token()
            return self._answer(h, 200, {"access_token": tok, "expires_in": life, "token_type": "Bearer"})

        # iam
        email = urllib.parse.unquote(path[len(IAM_PREFIX):-len(":generateIdToken")])
        req = self._check_iam(h, body, problems)
        if req is None:
            return self._answer(h, 401, {"error": {"code": 401, "status": "UNAUTHENTICATED",
                                                   "message": "Request had invalid authentication credentials."}})
        if email not in self.accounts:
            return self._answer(h, 404, {"error": {"code": 404, "status": "NOT_FOUND",
                                                   "message": "Not found; Gaia id not found for email " + email}})
        if email not in self.token_creator:
            return self._answer(h, 403, {"error": {"code": 403, "status": "PERMISSION_DENIED",
                                                   "message": "Permission 'iam.serviceAccounts.getOpenIdToken' denied on resource (or it may not exist)."}})
        if fault == "malformed":
            return self._answer(h, 200, {"token": {"nested": True}})
        return self._answer(h, 200, {"token": self.id_token(req["audience"], email, fault)})

    # ---- request checks (as google-auth sends them)
    def _check_metadata(self, h, u, endpoint, problems):
        if h.command != "GET":
            problems.append("metadata: method %s, want GET" % h.command)
        if h.headers.get("Metadata-Flavor") != "Google":
            problems.append("metadata: Metadata-Flavor: Google missing")
        if len(h.headers.get_all("Metadata-Flavor") or []) > 1:
            problems.append("metadata: Metadata-Flavor sent twice")
        if h.headers.get("Authorization"):
            problems.append("metadata: an Authorization header was sent")
        if endpoint == "identity":
            q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
            if q.get("format") != ["full"]:
                problems.append("metadata identity: format=full missing")
            if len(q.get("audience", [])) != 1 or not q["audience"][0]:
                problems.append("metadata identity: exactly one non-empty audience expected")
            extra = set(q) - {"audience", "format", "licenses"}
            if extra:
                problems.append("metadata identity: unexpected parameters %s" % sorted(extra))
        elif u.query:
            problems.append("metadata %s: unexpected query %s" % (endpoint, u.query))

    def _check_oauth(self, h, body, problems):
        if h.command != "POST":
            problems.append("oauth: method %s, want POST" % h.command)
        if (h.headers.get("Content-Type") or "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            problems.append("oauth: Content-Type is %r" % h.headers.get("Content-Type"))
        form = urllib.parse.parse_qs(body.decode(errors="replace"), keep_blank_values=True)
        if set(form) != {"grant_type", "assertion"}:
            problems.append("oauth: form fields %s, want grant_type and assertion" % sorted(form))
        if form.get("grant_type") != [GRANT]:
            problems.append("oauth: grant_type %r" % form.get("grant_type"))
        assertion = (form.get("assertion") or [""])[0]
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError as e:
            problems.append("oauth: assertion is not a JWT: %s" % e)
            return None
        if header.get("alg") != "RS256":
            problems.append("oauth: assertion alg %r" % header.get("alg"))
        if header.get("typ") != "JWT":
            problems.append("oauth: assertion typ %r" % header.get("typ"))
        if self.sa_key_id and header.get("kid") != self.sa_key_id:
            problems.append("oauth: assertion kid %r, want the key file's private_key_id" % header.get("kid"))
        if self.sa_key is None:
            problems.append("oauth: no key configured in the stand-in")
            return None
        try:
            claims = jwt.decode(assertion, self.sa_key.public_key(), algorithms=["RS256"],
                                audience=self.token_uri, options={"require": ["iss", "aud", "iat", "exp"]})
        except jwt.PyJWTError as e:
            problems.append("oauth: assertion does not verify: %s" % e)
            return None
        if claims["iss"] != self.sa_email:
            problems.append("oauth: assertion iss %r, want client_email" % claims["iss"])
        if abs(claims["iat"] - time.time()) > 60:
            problems.append("oauth: assertion iat is not now")
        if claims["exp"] - claims["iat"] != 3600:
            problems.append("oauth: assertion exp - iat = %d, want 3600" % (claims["exp"] - claims["iat"]))
        has_aud, has_scope = "target_audience" in claims, "scope" in claims
        if has_aud == has_scope:
            problems.append("oauth: assertion needs exactly one of target_audience and scope")
        if has_scope and claims["scope"] != SCOPE:
            problems.append("oauth: scope %r" % claims["scope"])
        extra = set(claims) - {"iss", "aud", "iat", "exp", "target_audience", "scope"}
        if extra:
            problems.append("oauth: unexpected assertion claims %s" % sorted(extra))
        return claims

    def _check_iam(self, h, body, problems):
        if h.command != "POST":
            problems.append("iam: method %s, want POST" % h.command)
        if (h.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            problems.append("iam: Content-Type is %r" % h.headers.get("Content-Type"))
        auth = h.headers.get("Authorization") or ""
        tok = auth[7:] if auth.startswith("Bearer ") else None
        with self.lock:
            exp = self.access_tokens.get(tok)
        if exp is None or exp < time.time():
            problems.append("iam: Authorization is not a Bearer access token issued here")
            return None
        try:
            req = json.loads(body)
        except ValueError:
            problems.append("iam: body is not JSON")
            return None
        if not isinstance(req, dict) or set(req) != {"audience", "includeEmail"}:
            problems.append("iam: body members %r, want audience and includeEmail" % (req,))
            return None
        if req.get("includeEmail") is not True:
            problems.append("iam: includeEmail is not true")
        if not isinstance(req.get("audience"), str) or not req["audience"]:
            problems.append("iam: audience is not a non-empty string")
            return None
        return req

"""A loopback stand-in for the two Cloud Storage JSON API calls the audit
witness makes, written from Google's documentation of the protocol
(cloud.google.com/storage/docs/json_api/v1/objects/insert, .../objects/get,
.../request-preconditions):

  simple upload  POST /upload/storage/v1/b/BUCKET/o?uploadType=media&name=NAME
                 [&ifGenerationMatch=G]   body: the object's bytes
                 Authorization: Bearer <an access token the Google stand-in issued>
                 -> 200 and the object resource (kind storage#object, name,
                    bucket, generation, size, md5Hash, ...)
                 ifGenerationMatch=0: succeeds only if no live object has
                 the name, else 412 conditionNotMet (nothing is overwritten)
  media download GET /storage/v1/b/BUCKET/o/NAME?alt=media  (NAME percent-encoded)
                 -> 200 and the bytes, 404 when absent
  without a valid bearer token: 401 (Invalid Credentials); a bucket other
  than the configured one: 404; a caller without read permission
  (`readable=False`, as with roles/storage.objectCreator alone): 403 on GET.

`delay_s` delays every upload (a slow network); `max_active` is the most
uploads seen in progress at once. Faults for outages: `fail_next(n, kind)` makes the next n uploads fail with
kind "503", "500", "429" or "close" (connection closed without an answer).
Every request is recorded with its deviations from the protocol (`problems`).
"""
import base64
import hashlib
import http.server
import json
import socket
import threading
import time
import urllib.parse


class GcsStandin:
    def __init__(self, bucket, token_ok):
        """token_ok(token) -> bool says whether a bearer token is valid."""
        self.bucket = bucket
        self.token_ok = token_ok
        self.lock = threading.Lock()
        self.objects = {}  # name -> (bytes, generation)
        self.records = []
        self.faults = []  # kinds, consumed by uploads one per request
        self.readable = True
        self.generation = 1700000000000000
        self.delay_s = 0.0
        self.active = 0
        self.max_active = 0
        self.httpd = None
        self.port = None

    # ---- control
    def start(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                outer._serve(self)

            def do_POST(self):
                outer._serve(self)

        http.server.ThreadingHTTPServer.daemon_threads = True
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def fail_next(self, n, kind="503"):
        with self.lock:
            self.faults.extend([kind] * n)

    def put(self, name, data):
        with self.lock:
            self.generation += 1
            self.objects[name] = (data, self.generation)

    def get(self, name):
        with self.lock:
            o = self.objects.get(name)
            return o[0] if o else None

    def names(self):
        with self.lock:
            return sorted(self.objects)

    def recorded(self, kind=None):
        with self.lock:
            return [dict(r) for r in self.records if kind is None or r["kind"] == kind]

    def problems(self):
        with self.lock:
            return [(r["kind"], r["path"], r["problems"]) for r in self.records if r["problems"]]

    # ---- protocol
    def _answer(self, h, status, body, ctype="application/json; charset=UTF-8"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        try:
            h.wfile.write(body)
        except OSError:
            pass

    def _error(self, h, code, reason, message):
        self._answer(h, code, {"error": {"code": code, "message": message,
                                         "errors": [{"message": message, "domain": "global",
                                                     "reason": reason}]}})

    def _serve(self, h):
        u = urllib.parse.urlsplit(h.path)
        q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        n = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(n) if n else b""
        up_prefix = "/upload/storage/v1/b/%s/o" % self.bucket
        get_prefix = "/storage/v1/b/%s/o/" % self.bucket
        if h.command == "POST" and u.path.startswith("/upload/storage/v1/b/"):
            kind = "upload"
        elif h.command == "GET" and u.path.startswith("/storage/v1/b/"):
            kind = "get"
        else:
            kind = "unknown"
        rec = {"kind": kind, "path": u.path, "query": q, "body": body, "problems": [],
               "headers": {k.lower(): v for k, v in h.headers.items()}, "t": time.time()}
        with self.lock:
            self.records.append(rec)
            fault = self.faults.pop(0) if kind == "upload" and self.faults else None
        problems = rec["problems"]
        if kind == "unknown":
            problems.append("unknown request %s %s" % (h.command, u.path))
            return self._error(h, 404, "notFound", "Not Found")
        if fault == "close":
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if fault:
            code = int(fault)
            return self._error(h, code, {503: "backendError", 500: "backendError",
                                         429: "rateLimitExceeded"}[code], "stand-in fault %s" % fault)
        auth = h.headers.get("Authorization") or ""
        if not auth.startswith("Bearer ") or not self.token_ok(auth[7:]):
            return self._error(h, 401, "required", "Invalid Credentials")

        if kind == "upload":
            with self.lock:
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            try:
                time.sleep(self.delay_s)
                return self._upload(h, u, q, body, up_prefix, problems)
            finally:
                with self.lock:
                    self.active -= 1
        return self._download(h, u, q, get_prefix, problems)

    def _upload(self, h, u, q, body, up_prefix, problems):
        if True:
            if u.path != up_prefix:
                return self._error(h, 404, "notFound", "The specified bucket does not exist.")
            if q.get("uploadType") != ["media"]:
                problems.append("uploadType=media expected, got %s" % q.get("uploadType"))
            if len(q.get("name", [])) != 1 or not q["name"][0]:
                problems.append("exactly one non-empty name expected")
                return self._error(h, 400, "required", "Required parameter: name")
            if q.get("ifGenerationMatch") != ["0"]:
                problems.append("create-only upload without ifGenerationMatch=0")
            if not h.headers.get("Content-Type"):
                problems.append("no Content-Type")
            if h.headers.get("Content-Length") is None:
                problems.append("no Content-Length")
            name = q["name"][0]
            with self.lock:
                exists = name in self.objects
                match = q.get("ifGenerationMatch", [None])[0]
                if match is not None and int(match) != (self.objects[name][1] if exists else 0):
                    cond_failed = True
                else:
                    cond_failed = False
                    self.generation += 1
                    self.objects[name] = (body, self.generation)
                    gen = self.generation
            if cond_failed:
                return self._error(h, 412, "conditionNotMet",
                                   "At least one of the pre-conditions you specified did not hold.")
            return self._answer(h, 200, {
                "kind": "storage#object", "id": "%s/%s/%d" % (self.bucket, name, gen),
                "name": name, "bucket": self.bucket, "generation": str(gen), "metageneration": "1",
                "contentType": h.headers.get("Content-Type") or "application/octet-stream",
                "size": str(len(body)), "md5Hash": base64.b64encode(hashlib.md5(body).digest()).decode(),
                "timeCreated": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())})

    def _download(self, h, u, q, get_prefix, problems):
        if not u.path.startswith(get_prefix):
            return self._error(h, 404, "notFound", "The specified bucket does not exist.")
        raw = u.path[len(get_prefix):]
        if "/" in raw:
            problems.append("object name not percent-encoded: %s" % raw)
        name = urllib.parse.unquote(raw)
        if q.get("alt") != ["media"]:
            problems.append("alt=media expected")
        if not self.readable:
            return self._error(h, 403, "forbidden",
                               "baton@proj.iam.gserviceaccount.com does not have storage.objects.get "
                               "access to the Google Cloud Storage object.")
        data = self.get(name)
        if data is None:
            return self._error(h, 404, "notFound", "No such object: %s/%s" % (self.bucket, name))
        return self._answer(h, 200, data, "application/json")

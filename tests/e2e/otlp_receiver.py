"""A loopback OTLP/HTTP trace receiver (the OpenTelemetry Collector's otlphttp
receiver, for the JSON encoding), written from the OTLP specification
(opentelemetry-proto docs/specification.md, "OTLP/HTTP" and "JSON Protobuf
Encoding"):

- POST /v1/traces with Content-Type: application/json carries an
  ExportTraceServiceRequest in proto3's JSON mapping: lowerCamelCase keys,
  enums as integers, 64-bit integers (fixed64 times, AnyValue.intValue) as
  decimal strings (numbers are accepted too, as proto3 JSON parsers do), and,
  unlike proto3, traceId/spanId/parentSpanId as hex strings, not base64.
- Success is 200 with an ExportTraceServiceResponse (here `{}`).

Everything a request breaks is recorded in problems(); the tests assert it
stays empty. mode: "ok", "fail" (500, not retryable), "unavailable" (503,
retryable), "hang" (answers after `hang_s`)."""
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")
DIGITS = re.compile(r"[0-9]+")
VALUE_KINDS = {"stringValue", "boolValue", "intValue", "doubleValue", "arrayValue",
               "kvlistValue", "bytesValue"}


def _u64(v):
    if isinstance(v, int):
        return v
    if isinstance(v, str) and DIGITS.fullmatch(v):
        return int(v)
    raise ValueError("not a uint64 in proto3 JSON: %r" % (v,))


def _attrs(lst, where):
    if not isinstance(lst, list):
        raise ValueError("%s.attributes is not a list" % where)
    out = {}
    for kv in lst:
        if set(kv) != {"key", "value"} or not isinstance(kv["key"], str):
            raise ValueError("%s: a KeyValue is {key, value}: %r" % (where, kv))
        v = kv["value"]
        if not isinstance(v, dict) or len(v) != 1 or not set(v) <= VALUE_KINDS:
            raise ValueError("%s: an AnyValue holds exactly one value: %r" % (where, v))
        (kind, val), = v.items()
        if kind == "intValue":
            val = _u64(val)
        elif kind == "stringValue" and not isinstance(val, str):
            raise ValueError("%s: stringValue %r" % (where, val))
        if kv["key"] in out:
            raise ValueError("%s: attribute %s twice" % (where, kv["key"]))
        out[kv["key"]] = val
    return out


def parse_request(doc):
    """Flattens an ExportTraceServiceRequest into spans, each a dict with the
    resource's and scope's names; raises ValueError on anything off-spec."""
    spans = []
    if not isinstance(doc, dict) or not isinstance(doc.get("resourceSpans"), list):
        raise ValueError("no resourceSpans list")
    for rs in doc["resourceSpans"]:
        res = _attrs(rs.get("resource", {}).get("attributes", []), "resource")
        for ss in rs.get("scopeSpans", []):
            scope = ss.get("scope", {})
            for s in ss.get("spans", []):
                tid, sid = s.get("traceId"), s.get("spanId")
                if not isinstance(tid, str) or not HEX32.fullmatch(tid) or tid == "0" * 32:
                    raise ValueError("traceId is not 32 lowercase hex: %r" % (tid,))
                if not isinstance(sid, str) or not HEX16.fullmatch(sid) or sid == "0" * 16:
                    raise ValueError("spanId is not 16 lowercase hex: %r" % (sid,))
                pid = s.get("parentSpanId", "")
                if pid and not HEX16.fullmatch(pid):
                    raise ValueError("parentSpanId is not 16 lowercase hex: %r" % (pid,))
                if not isinstance(s.get("name"), str) or not s["name"]:
                    raise ValueError("a span needs a name")
                kind = s.get("kind", 0)
                if not isinstance(kind, int) or not 0 <= kind <= 5:
                    raise ValueError("kind is an enum integer 0..5: %r" % (kind,))
                for k in ("startTimeUnixNano", "endTimeUnixNano"):
                    if not isinstance(s.get(k), str) or not DIGITS.fullmatch(s[k]):
                        raise ValueError("%s is a decimal string: %r" % (k, s.get(k)))
                start, end = int(s["startTimeUnixNano"]), int(s["endTimeUnixNano"])
                if not (1_600_000_000 * 10**9 < start <= end < 4_000_000_000 * 10**9):
                    raise ValueError("times are Unix nanoseconds, start <= end: %d %d" % (start, end))
                st = s.get("status", {})
                if not isinstance(st, dict) or st.get("code", 0) not in (0, 1, 2):
                    raise ValueError("status.code is 0..2: %r" % (st,))
                spans.append({"resource": res, "scope": scope.get("name"), "traceId": tid,
                              "spanId": sid, "parentSpanId": pid, "name": s["name"],
                              "kind": kind, "start": start, "end": end,
                              "attributes": _attrs(s.get("attributes", []), "span"),
                              "status": st.get("code", 0)})
    return spans


class OtlpReceiver:
    def __init__(self):
        self.mode = "ok"
        self.hang_s = 3.0
        self.lock = threading.Lock()
        self.spans = []
        self.posts = 0
        self._problems = []
        self.server = None
        self.port = None

    def start(self, port=0):
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _answer(self, code, body=b"{}"):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with outer.lock:
                    outer.posts += 1
                    mode = outer.mode
                if self.path != "/v1/traces":
                    outer._problem("POST to %s, not /v1/traces" % self.path)
                    return self._answer(404)
                ctype = self.headers.get("Content-Type", "")
                if ctype.split(";")[0].strip().lower() != "application/json":
                    outer._problem("Content-Type %r" % ctype)
                    return self._answer(415)
                try:
                    spans = parse_request(json.loads(body))
                except ValueError as e:
                    outer._problem(str(e))
                    return self._answer(400)
                if mode == "fail":
                    return self._answer(500)
                if mode == "unavailable":
                    return self._answer(503)
                if mode == "hang":
                    time.sleep(outer.hang_s)
                with outer.lock:
                    outer.spans.extend(spans)
                self._answer(200)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def _problem(self, p):
        with self.lock:
            self._problems.append(p)

    def problems(self):
        with self.lock:
            return list(self._problems)

    def received(self):
        with self.lock:
            return list(self.spans)

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

"""A loopback stand-in for what Cloud Logging does to JSON lines written to
stdout on Cloud Run, and for the two ways reviewers get them back. Written from
Cloud Logging's documentation ("Structured logging: special JSON fields",
the LogEntry and google.protobuf.Struct references), not from baton's code:

- a line that parses as a JSON object becomes `jsonPayload`, a protobuf
  Struct: member order is not kept (shuffled here, at every level), every
  number becomes a double (exported as `12` or `12.0`, `1e+16` for large ones),
  strings are Unicode (exported as UTF-8 or as \\u escapes);
- any other line becomes `textPayload`;
- special members are lifted out of the payload into the entry: severity,
  httpRequest, time / timestamp / timestampSeconds+timestampNanos,
  logging.googleapis.com/{insertId,labels,operation,sourceLocation,spanId,
  trace,trace_sampled};
- Cloud Run sets logName (run.googleapis.com%2Fstdout), resource
  (cloud_run_revision), labels.instanceId, insertId, timestamp and
  receiveTimestamp on every entry;
- `gcloud logging read --format=json` prints one JSON array, newest first,
  pretty-printed; a log sink to Cloud Storage writes newline-delimited
  LogEntry objects in hourly files, in any order, some entries twice.
"""
import json
import random
import uuid
from datetime import datetime, timedelta, timezone

LIFTED = {
    "severity": "severity",
    "httpRequest": "httpRequest",
    "logging.googleapis.com/insertId": "insertId",
    "logging.googleapis.com/labels": "labels",
    "logging.googleapis.com/operation": "operation",
    "logging.googleapis.com/sourceLocation": "sourceLocation",
    "logging.googleapis.com/spanId": "spanId",
    "logging.googleapis.com/trace": "trace",
    "logging.googleapis.com/trace_sampled": "traceSampled",
}


def _struct(value, rng):
    """A JSON value as a protobuf Struct holds it: numbers are doubles, maps unordered."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return [_struct(v, rng) for v in value]
    items = [(k, _struct(v, rng)) for k, v in value.items()]
    rng.shuffle(items)
    return dict(items)


def _rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%06d000Z" % t.microsecond


class Instance:
    """One Cloud Run instance of one revision."""

    def __init__(self, service="baton", revision="baton-00001-abc", project="proj", rng=None):
        self.rng = rng or random.Random()
        self.service, self.revision, self.project = service, revision, project
        self.instance_id = "%064x" % self.rng.getrandbits(256)

    def ingest(self, line, when):
        """The LogEntry Cloud Logging makes of one stdout line (bytes or str)."""
        if isinstance(line, bytes):
            line = line.decode("utf-8", "replace")
        entry = {
            "insertId": uuid.UUID(int=self.rng.getrandbits(128)).hex[:20],
            "logName": "projects/%s/logs/run.googleapis.com%%2Fstdout" % self.project,
            "resource": {"type": "cloud_run_revision", "labels": {
                "service_name": self.service, "revision_name": self.revision,
                "configuration_name": self.service, "location": "europe-west1",
                "project_id": self.project}},
            "labels": {"instanceId": self.instance_id},
            "timestamp": _rfc3339(when),
            "receiveTimestamp": _rfc3339(when + timedelta(milliseconds=self.rng.randint(5, 900))),
        }
        try:
            payload = json.loads(line)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            entry["textPayload"] = line
            return entry
        for member, field in LIFTED.items():
            if member in payload:
                entry[field] = payload.pop(member)
        for t in ("time", "timestamp"):
            if t in payload:
                entry["timestamp"] = payload.pop(t) if isinstance(payload[t], str) else _rfc3339(when)
        if "timestampSeconds" in payload:
            payload.pop("timestampSeconds")
            payload.pop("timestampNanos", None)
        entry["jsonPayload"] = _struct(payload, self.rng)
        if self.rng.random() < 0.5:
            entry["severity"] = entry.get("severity", "DEFAULT")
        items = list(entry.items())
        self.rng.shuffle(items)
        return dict(items)


def ingest_stream(instance, lines, start=None, step_ms=3):
    """LogEntry objects for an instance's stdout lines, in write order."""
    t = start or datetime(2026, 12, 3, 8, 0, tzinfo=timezone.utc)
    out = []
    for line in lines:
        if not line.strip():
            continue
        out.append(instance.ingest(line, t))
        t += timedelta(milliseconds=step_ms)
    return out


class _Encoder:
    """JSON text as an export writes it: doubles as `12` or `12.0` (or 1e+16),
    strings as UTF-8 or \\u escapes."""

    def __init__(self, rng, ensure_ascii):
        self.rng, self.ensure_ascii = rng, ensure_ascii

    def number(self, v):
        if v == int(v) and abs(v) < 1e16:
            return str(int(v)) if self.rng.random() < 0.5 else repr(v)
        return repr(v)

    def encode(self, v, indent=None, level=0):
        nl = "" if indent is None else "\n" + " " * (indent * (level + 1))
        end = "" if indent is None else "\n" + " " * (indent * level)
        sep = ": " if indent is not None else ":"
        if isinstance(v, float):
            return self.number(v)
        if isinstance(v, dict):
            if not v:
                return "{}"
            return "{" + ",".join(nl + json.dumps(k, ensure_ascii=self.ensure_ascii) + sep +
                                  self.encode(x, indent, level + 1) for k, x in v.items()) + end + "}"
        if isinstance(v, list):
            if not v:
                return "[]"
            return "[" + ",".join(nl + self.encode(x, indent, level + 1) for x in v) + end + "]"
        return json.dumps(v, ensure_ascii=self.ensure_ascii)


def gcloud_read_json(entries, rng=None):
    """`gcloud logging read --format=json`: one array, newest first, indented."""
    rng = rng or random.Random()
    ordered = sorted(entries, key=lambda e: (e["timestamp"], e["insertId"]), reverse=True)
    enc = _Encoder(rng, ensure_ascii=rng.random() < 0.5)
    return (enc.encode(ordered, indent=2) + "\n").encode()


def sink_files(entries, nfiles=3, duplicates=0.05, rng=None):
    """A log sink's Cloud Storage objects: newline-delimited LogEntry, any
    order, about `duplicates` of the entries delivered twice; returns a list of
    file contents (bytes)."""
    rng = rng or random.Random()
    pool = list(entries) + [e for e in entries if rng.random() < duplicates]
    rng.shuffle(pool)
    files = [[] for _ in range(nfiles)]
    for e in pool:
        files[rng.randrange(nfiles)].append(e)
    enc = _Encoder(rng, ensure_ascii=False)
    return [("".join(enc.encode(e) + "\n" for e in f)).encode() for f in files]

"""Turns baton JSON Lines logs (one per instance) into what a log sink to
Cloud Storage holds: newline-delimited LogEntry objects, each chain newest
first, every number a double and the record's members shuffled. For
bench/verify_export.sh: built for speed (a million entries in about a
minute), so only the top level of a record is shuffled; the faithful
simulator of the test suites is tests/e2e/cloud_logging.py.

    python3 bench/cloud_export.py OUT_DIR LOG.jsonl...
"""
import json
import pathlib
import random
import sys


def main(out_dir, logs):
    rng = random.Random(1)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for n, log in enumerate(logs):
        head = ('{"insertId":"%%012x","logName":"projects/p/logs/run.googleapis.com%%%%2Fstdout",'
                '"resource":{"type":"cloud_run_revision","labels":{"service_name":"baton",'
                '"revision_name":"baton-%05d-bench"}},"labels":{"instanceId":"%032x"},'
                '"timestamp":"2026-12-03T08:00:00.%%06d000Z","jsonPayload":' % (n, rng.getrandbits(128)))
        lines = pathlib.Path(log).read_bytes().splitlines()
        with open(out / ("stdout-%02d.json" % n), "w") as f:
            for i in range(len(lines) - 1, -1, -1):
                rec = json.loads(lines[i], parse_int=float)
                items = list(rec.items())
                rng.shuffle(items)
                f.write(head % (rng.getrandbits(48), i % 1000000))
                f.write(json.dumps(dict(items), separators=(",", ":")))
                f.write("}\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])

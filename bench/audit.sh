#!/bin/sh
# bench/audit.sh: the audit log's figures in one run (well under a minute):
# for each fsync mode (always, batch, none), records per second at saturation
# and the request-path cost of reserve+submit; at a fixed rate, the latency
# from submit to durable (what a request waits under fsync "always"); then
# the verifier's MB/s. Also prints the disk's raw fsync latency for scale.
#
# Usage (from the build directory, a build WITHOUT --enable-asan):
#   make bench/bench_audit && sh /path/to/src/bench/audit.sh [./bench/bench_audit]
# AUDIT_BENCH_DIR picks the directory (default: a new one under /tmp; put it
# on the disk the audit log would use), AUDIT_BENCH_RECORDS (default 100000),
# AUDIT_BENCH_THREADS (default 4) and AUDIT_BENCH_PACED (records/s, 2000).
set -eu
BIN=${1:-./bench/bench_audit}
if [ ! -x "$BIN" ]; then
    echo "audit.sh: $BIN not found; run: make bench/bench_audit" >&2
    exit 1
fi
if nm "$BIN" 2>/dev/null | grep -q __asan_init; then
    echo "audit.sh: warning: $BIN is built with ASan; the figures are not representative" >&2
fi
DIR=${AUDIT_BENCH_DIR:-}
CLEAN=
if [ -z "$DIR" ]; then
    DIR=$(mktemp -d /tmp/baton-audit-bench.XXXXXX)
    CLEAN=$DIR
fi
trap '[ -n "$CLEAN" ] && rm -rf "$CLEAN"' EXIT
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "disk: $(df -P "$DIR" | awk 'NR == 2 {print $1 " mounted on " $6}')"
# raw fsync latency of 1 KB appends, 100 times, for scale
if command -v /usr/bin/python3 >/dev/null; then
    /usr/bin/python3 - "$DIR" <<'EOF'
import os, sys, time
p = os.path.join(sys.argv[1], "fsync.probe")
fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
ts = []
for _ in range(100):
    os.write(fd, b"x" * 1023 + b"\n")
    t = time.perf_counter()
    os.fsync(fd)
    ts.append(time.perf_counter() - t)
os.close(fd)
os.unlink(p)
ts.sort()
print("raw fsync of a 1 KB append: p50 %.2f ms, p99 %.2f ms" % (ts[50] * 1e3, ts[98] * 1e3))
EOF
fi
timeout 300 "$BIN" "$DIR" "${AUDIT_BENCH_RECORDS:-100000}" "${AUDIT_BENCH_THREADS:-4}" \
    "${AUDIT_BENCH_PACED:-2000}"
rm -f "$DIR"/bench-*.jsonl
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

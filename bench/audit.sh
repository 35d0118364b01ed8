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
#
# AUDIT_BENCH_CALLGRIND=1 instead counts instructions per record, where noise
# cannot reach: fsync none, 2 submitting threads, under valgrind's callgrind
# (every thread), a run of 2,000 records and one of 12,000; the difference
# over 10,000 cancels start-up and close. Prints the total, the worker's part
# (audit_reserve + audit_submit: formatting and queueing), the writer thread's
# part (chaining, writing, checkpoints), what of it all runs in libcrypto, and
# the top functions of the larger run.
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
if [ "${AUDIT_BENCH_CALLGRIND:-}" = 1 ]; then
    # inclusive Ir of function $2 in callgrind output $1 (all threads); the
    # largest line, as a function can be listed under two spellings of its file
    incl() {
        callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$1" 2>/dev/null |
            awk -v f="$2" '$0 ~ (":" f "( |$)") { gsub(",", "", $1); if ($1 + 0 > m) m = $1 + 0 }
                           END { print m + 0 }'
    }
    # self Ir in libcrypto
    crypto() {
        callgrind_annotate --auto=no --threshold=100 "$1" 2>/dev/null |
            awk '/libcrypto/ { gsub(",", "", $1); s += $1 } END { print s + 0 }'
    }
    total() { sed -n 's/^summary: //p' "$1" | head -n 1; }
    per() { awk -v x="$1" -v y="$2" 'BEGIN { printf "%8.0f", (y - x) / 10000 }'; }
    for n in 2000 12000; do
        valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.$n" "$BIN" "$DIR" "$n" 2 1 none \
            >/dev/null 2>"$DIR/cg.$n.log" || { cat "$DIR/cg.$n.log" >&2; exit 1; }
    done
    a=$DIR/cg.2000 b=$DIR/cg.12000
    echo "instructions per record (callgrind, fsync none, (12,000-record run - 2,000-record run) / 10,000):"
    echo "  all threads:             $(per "$(total "$a")" "$(total "$b")")"
    echo "  worker (reserve+submit): $(per "$(($(incl "$a" audit_reserve) + $(incl "$a" audit_submit)))" \
        "$(($(incl "$b" audit_reserve) + $(incl "$b" audit_submit)))")"
    echo "  writer thread:           $(per "$(incl "$a" audit_writer_main)" "$(incl "$b" audit_writer_main)")"
    echo "  of all, in libcrypto:    $(per "$(crypto "$a")" "$(crypto "$b")")"
    echo "top functions of the 12,000-record run (self, all threads):"
    callgrind_annotate --auto=no --threshold=100 "$b" 2>/dev/null | sed -n '/^Ir /,$p' | sed -n '3,17p'
    rm -f "$DIR"/cg.* "$DIR"/bench-*.jsonl
    exit 0
fi
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

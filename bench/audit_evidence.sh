#!/bin/bash
# bench/audit_evidence.sh: what heartbeats and the witness cost a request.
#
#   bench/audit_evidence.sh [BATON_BINARY]   (default: ./baton; build without --enable-asan)
#
# One baton binary, two configs, alternating rounds (BENCH_ROUNDS, 3) so a
# drift of the shared machine favours neither:
#   plain     audit fsync "batch", no signing key, no witness (as bench/proxy.sh)
#   evidence  the same plus a signing key, a heartbeat checkpoint every second
#             and a witness directory
# Each round: `wrk -t1 -c32 -d$BENCH_DURATION` (8s) with an RS256 token through
# one worker to an nginx upstream returning 3 bytes; prints req/s and baton's
# CPU time per request (user+system of every thread, /proc/PID/stat), and the
# witness objects written. Loopback only, about a minute.
set -u
. "$(dirname "$0")/lib.sh"
BATON=$(readlink -f "${1:-./baton}")
DUR=${BENCH_DURATION:-8s}
ROUNDS=${BENCH_ROUNDS:-3}
P_UP=18490 P_BAT=18491 P_ADM=18492
[ -x "$BATON" ] || { echo "bench: no baton binary at $BATON" >&2; exit 2; }
command -v wrk >/dev/null && command -v nginx >/dev/null || apt-get install -y -qq wrk nginx >/dev/null
service nginx stop >/dev/null 2>&1 || true

bench_start evidence
bench_token
"$BATON" audit keygen --out "$T/audit.pem" >/dev/null || exit 2
mkdir -p "$T/policies" "$T/witness"
bench_upstream $P_UP
cat >"$T/policies/bench.json" <<EOF
{ "step": "bench", "route": { "host": "*", "path_prefix": "/" }, "upstream": "up",
  "callers": [{ "issuer": "bench", "claims": { "sub": "arn:aws:iam::123456789012:role/*" } }],
  "allow": [{ "methods": ["GET"], "paths": ["/**"] }] }
EOF
config() { # name audit-extra
    cat >"$T/$1.json" <<EOF
{ "listen": "127.0.0.1:$P_BAT", "admin_listen": "127.0.0.1:$P_ADM", "workers": 1,
  "issuers": [{ "name": "bench", "issuer": "https://issuer.bench", "jwks_file": "jwks.json",
                "audiences": ["https://gateway.bench"], "algorithms": ["RS256"] }],
  "upstreams": [{ "name": "up", "url": "http://127.0.0.1:$P_UP", "identity": "none" }],
  "policies": "policies",
  "audit": { "path": "$1.jsonl", "fsync": "batch", "on_failure": "deny"$2 } }
EOF
}
config plain ""
config evidence ", \"signing_key\": \"audit.pem\", \"checkpoint_interval_s\": 1, \"witness\": { \"dir\": \"witness\" }"

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
run() { # config round
    local pid c0 n d out="$T/wrk-$1-$2.txt"
    "$BATON" serve -c "$T/$1.json" 2>"$T/$1.err" &
    pid=$!
    for _ in $(seq 400); do curl -sf -o /dev/null "http://127.0.0.1:$P_ADM/readyz" && break; sleep 0.025; done
    wrk -t1 -c32 -d1s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$P_BAT/x" >/dev/null 2>&1
    c0=$(cpu_ticks "$pid")
    wrk -t1 -c32 -d"$DUR" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$P_BAT/x" >"$out" 2>&1
    d=$(( $(cpu_ticks "$pid") - c0 ))
    kill -TERM "$pid"; wait "$pid"
    n=$(awk '/requests in/{print $1}' "$out")
    grep -q Non-2xx "$out" && echo "bench: non-2xx answers in $1" >&2
    printf '%-9s round %d  %9s req/s  %5.2f us CPU/request\n' "$1" "$2" \
        "$(awk '/^Requests\/sec/{print $2}' "$out")" \
        "$(awk -v d="$d" -v n="$n" -v hz="$(getconf CLK_TCK)" 'BEGIN{ print d * 1e6 / hz / n }')"
}
for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then run plain "$r"; run evidence "$r"; else run evidence "$r"; run plain "$r"; fi
done
echo "witness objects written: $(find "$T/witness" -name '*.json' | wc -l)" \
     "(checkpoints in the evidence log: $(grep -c '"kind":"checkpoint"' "$T/evidence.jsonl"))"

#!/bin/bash
# bench/ratelimit.sh: a global step (rate on Redis, leased) and a global step
# that asks Redis once per request, against an instance step (in-process
# bucket), in one run, under the same load.
#
#   bench/ratelimit.sh [BATON_BINARY]     (default: ./baton; build without --enable-asan)
#
# Loopback only, about a minute. One baton (1 worker, as bench/proxy.sh), one
# redis-server of our own (no persistence), one upstream (nginx returning 3
# bytes). Three steps: "global" and "instance" differ only in
# limits.rate_scope; their rate and burst (1,000,000) are far above the load,
# so every request is admitted and what is measured is the cost of the
# decision: for "global", a worker's lease of up to 256 tokens per EVALSHA
# (README "Shared limits on Redis", Leases). "exact" is global with a burst of
# 15, under the lease threshold (burst >= 16): one EVALSHA round trip per
# request while the request is parked, what every global step did before
# leases. `wrk -t1 -c32 --latency`, BENCH_ROUNDS rounds (3) of BENCH_DURATION
# (5s) per step, the order rotated every round. Prints, per step, the median
# req/s, p50, p99, CPU time per request of baton and of redis-server
# (/proc/PID/stat), and Redis round trips per request (from baton's own
# baton_redis_round_trips_total), the count of non-2xx answers (decisions past
# timeout_ms, on_failure "deny"), and the global/instance and exact/instance
# throughput ratios of each round.
# Ports BENCH_PORT_BASE (18570) to +3 on 127.0.0.1.
# Needs: redis-server, nginx, wrk (apt-get install redis-server nginx wrk).
set -u
. "$(dirname "$0")/lib.sh"
BATON=${1:-./baton}
BATON=$(readlink -f "$BATON")
DUR=${BENCH_DURATION:-5s}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNECTIONS:-32}
B=${BENCH_PORT_BASE:-18570}
P_UP=$B P_BAT=$((B + 1)) P_ADM=$((B + 2)) P_RED=$((B + 3))

[ -x "$BATON" ] || { echo "bench: no baton binary at $BATON" >&2; exit 2; }
for b in redis-server nginx wrk; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] ||
        { echo "bench: $b missing (apt-get install redis-server nginx wrk)" >&2; exit 2; }
done

bench_start rlbench
bench_token

# ---- upstream, redis -----------------------------------------------------------
bench_upstream $P_UP
redis-server --port $P_RED --bind 127.0.0.1 --save "" --appendonly no --dir "$T" \
    --logfile "$T/redis.log" --daemonize no &
REDIS_PID=$!
PIDS+=($REDIS_PID)

# ---- baton: steps that differ only in rate_scope (and exact's burst) ------------
mkdir -p "$T/policies"
cat >"$T/baton.json" <<EOF
{
  "listen": "127.0.0.1:$P_BAT",
  "admin_listen": "127.0.0.1:$P_ADM",
  "workers": 1,
  "limits": { "max_connections": 20000, "idle_timeout_ms": 600000 },
  "issuers": [{ "name": "bench", "issuer": "https://issuer.bench", "jwks_file": "jwks.json",
                "audiences": ["https://gateway.bench"], "algorithms": ["RS256"] }],
  "upstreams": [{ "name": "up", "url": "http://127.0.0.1:$P_UP", "identity": "none" }],
  "policies": "policies",
  "audit": { "path": "audit.jsonl", "fsync": "batch", "on_failure": "deny" },
  "redis": { "url": "redis://127.0.0.1:$P_RED/0", "timeout_ms": 50, "on_failure": "deny" }
}
EOF
STEPS="global exact instance"
for s in $STEPS; do
    scope=$s burst=1000000
    [ "$s" = exact ] && scope=global burst=15
    cat >"$T/policies/$s.json" <<EOF
{
  "step": "$s",
  "route": { "host": "*", "path_prefix": "/$s/" },
  "upstream": "up",
  "callers": [{ "issuer": "bench", "claims": { "sub": "arn:aws:iam::123456789012:role/*" } }],
  "allow": [{ "methods": ["GET"], "paths": ["/**"] }],
  "limits": { "rate_per_s": 1000000, "burst": $burst, "rate_scope": "$scope" }
}
EOF
done
"$BATON" serve -c "$T/baton.json" 2>"$T/baton.err" &
BATON_PID=$!
PIDS+=($BATON_PID)
ready=""
for _ in $(seq 1000); do
    body=$(curl -s "http://127.0.0.1:$P_ADM/readyz")
    case $body in *'"ready":true'*'"degraded":false'*) ready=1; break ;; esac
    sleep 0.01
done
[ -n "$ready" ] || { echo "bench: baton never ready with redis up: $body" >&2; cat "$T/baton.err" >&2; exit 1; }
for s in $STEPS; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$P_BAT/$s/x")
    [ "$code" = 200 ] || { echo "bench: /$s/ answers $code" >&2; exit 1; }
done

to_ms() {
    awk -v v="$1" 'BEGIN{ n=v; sub(/[a-z]+$/,"",n);
        if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; printf "%.3f", n }'
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
trips() { curl -s "http://127.0.0.1:$P_ADM/metrics" | awk '$1=="baton_redis_round_trips_total"{print $2}'; }
declare -A RPS P50 P99 CPU RCPU RT
declare -A NON=([global]=0 [exact]=0 [instance]=0) TOTAL=([global]=0 [exact]=0 [instance]=0)
run() { # step round
    local out="$T/wrk-$1.txt" c0 r0 t0 n hz
    c0=$(cpu_ticks $BATON_PID); r0=$(cpu_ticks $REDIS_PID); t0=$(trips)
    wrk -t1 -c"$CONNS" -d"$DUR" --latency -H "Authorization: Bearer $TOKEN" \
        "http://127.0.0.1:$P_BAT/$1/x" >"$out" 2>&1
    n=$(awk '/requests in/{print $1}' "$out")
    hz=$(getconf CLK_TCK)
    RPS[$1,$2]=$(awk '/^Requests\/sec/{print $2}' "$out")
    P50[$1,$2]=$(to_ms "$(awk '$1=="50%"{print $2}' "$out")")
    P99[$1,$2]=$(to_ms "$(awk '$1=="99%"{print $2}' "$out")")
    CPU[$1,$2]=$(awk -v d="$(( $(cpu_ticks $BATON_PID) - c0 ))" -v n="$n" -v hz="$hz" \
        'BEGIN{ printf "%.2f", (n > 0 ? d * 1e6 / hz / n : 0) }')
    RCPU[$1,$2]=$(awk -v d="$(( $(cpu_ticks $REDIS_PID) - r0 ))" -v n="$n" -v hz="$hz" \
        'BEGIN{ printf "%.2f", (n > 0 ? d * 1e6 / hz / n : 0) }')
    RT[$1,$2]=$(awk -v a="$t0" -v b="$(trips)" -v n="$n" 'BEGIN{ printf "%.3f", (n > 0 ? (b - a) / n : 0) }')
    NON[$1]=$(( ${NON[$1]} + $(awk '/Non-2xx/{print $NF}' "$out" | grep . || echo 0) ))
    TOTAL[$1]=$(( ${TOTAL[$1]} + n ))
}
median() {
    tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
of_rounds() { local -n a=$1; local r; for r in $(seq "$ROUNDS"); do printf '%s ' "${a[$2,$r]}"; done; }

for s in $STEPS; do # warm-up, not measured
    wrk -t1 -c"$CONNS" -d1s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$P_BAT/$s/x" >/dev/null 2>&1
done
for r in $(seq "$ROUNDS"); do
    case $((r % 3)) in
    1) order="global exact instance" ;;
    2) order="instance global exact" ;;
    0) order="exact instance global" ;;
    esac
    for s in $order; do run "$s" "$r"; done
done

printf '\n%d rounds of %s per step, wrk -t1 -c%s, 1 baton worker; medians:\n' "$ROUNDS" "$DUR" "$CONNS"
printf '| step | req/s | p50 ms | p99 ms | baton CPU us/req | redis CPU us/req | Redis round trips/req | non-2xx / requests |\n'
printf '|---|---:|---:|---:|---:|---:|---:|---:|\n'
for s in $STEPS; do
    printf '| %s | %s | %s | %s | %s | %s | %s | %s / %s |\n' "$s" \
        "$(of_rounds RPS $s | median)" "$(of_rounds P50 $s | median)" "$(of_rounds P99 $s | median)" \
        "$(of_rounds CPU $s | median)" "$(of_rounds RCPU $s | median)" "$(of_rounds RT $s | median)" \
        "${NON[$s]}" "${TOTAL[$s]}"
done
echo "(a global step's non-2xx: decisions that waited past timeout_ms and went to on_failure \"deny\")"
echo
for s in global exact; do
    ratios=""
    for r in $(seq "$ROUNDS"); do
        ratios="$ratios$(awk -v g="${RPS[$s,$r]}" -v i="${RPS[instance,$r]}" 'BEGIN{ printf "%.2f ", (i > 0 ? g / i : 0) }')"
    done
    printf '%s / instance throughput: median %s (rounds: %s)\n' "$s" "$(echo "$ratios" | median)" "$ratios"
done

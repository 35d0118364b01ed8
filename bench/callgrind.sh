#!/bin/bash
# bench/callgrind.sh: instructions per request of baton's whole path beside
# nginx's plain reverse proxy, counted by valgrind's callgrind, which the noise
# of a shared machine does not reach (issue 17's table).
#
#   bench/callgrind.sh [BATON_BINARY]     (default: ./baton; a release build)
#
# Each target runs twice under `valgrind --tool=callgrind --separate-threads=no
# --trace-children=yes` (every thread and every process it starts): once for
# BENCH_SMALL (2,000) and once for BENCH_LARGE (12,000) keep-alive POSTs of
# `ab -k -c 8` with the same RS256 token and `X-Sfn-Execution` header; the
# difference of the two totals divided by the difference of the counts is one
# request's instructions, start-up, the first (cold) token verification and
# shutdown cancelled out. The targets, in front of the same nginx upstream
# returning 3 bytes (not under valgrind):
#   nginx   nginx's plain reverse proxy, keepalive upstream, one process
#           (master_process off: the worker is the process)
#   baton   1 worker, the token from the verified-token cache, one policy
#           requiring X-Sfn-Execution, hash-chained audit (fsync "batch"), forward
# It prints the table (all, of which in libcrypto, outside), each target's
# cost per object (library), baton's top BENCH_TOP (25) functions by self cost
# per request, and the ratios against the issue's targets. Costs are read from
# callgrind's output files directly (ob=/fn= records, self cost lines), as
# callgrind_annotate would sum them, but with inlined lines kept on their
# function and object (callgrind_annotate lists those by source file and
# without the object). BENCH_KEEP=DIR keeps the callgrind files and cost
# tables there, for callgrind_annotate --tree=caller. Loopback only; 2 to 5
# minutes on a 2-core machine. Needs valgrind and apache2-utils (ab; both in
# scripts/deps.sh), nginx, python3-jwt.
set -u
. "$(dirname "$0")/lib.sh"
BATON=$(readlink -f "${1:-./baton}")
SMALL=${BENCH_SMALL:-2000}
LARGE=${BENCH_LARGE:-12000}
TOP=${BENCH_TOP:-25}
B=${BENCH_PORT_BASE:-18590}
P_UP=$B P_NGX=$((B + 1)) P_BAT=$((B + 2)) P_ADM=$((B + 3))
EXEC="arn:aws:states:us-east-1:123456789012:execution:bench:run-1"

[ -x "$BATON" ] || { echo "bench: no baton binary at $BATON" >&2; exit 2; }
for b in valgrind callgrind_annotate nginx ab; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] ||
        { echo "bench: $b missing (apt-get install valgrind nginx apache2-utils)" >&2; exit 2; }
done
[ "$LARGE" -gt "$SMALL" ] || { echo "bench: BENCH_LARGE must exceed BENCH_SMALL" >&2; exit 2; }
service nginx stop >/dev/null 2>&1 || true

bench_start callgrind
bench_token
bench_upstream $P_UP
bench_nginx_proxy_conf $P_NGX $P_UP
bench_baton_conf $P_BAT $P_ADM $P_UP '["POST"]' \
    ", \"require_headers\": { \"X-Sfn-Execution\": \"arn:aws:states:*\" }"
printf '{"input":{"run":"bench","items":[1,2,3]}}' >"$T/body.json"
bench_wait_port $P_UP || exit 1

# cost FILE...: "object<TAB>function<TAB>self instructions" for every function
# of the callgrind output files, then "<TAB><TAB>total" from their "totals:"
# lines (each file also has the same figure as "summary:"). Names are
# compressed as "(id) name" at first use, "(id)" after; a cost line right
# after "calls=" is the callee's inclusive cost, not self.
cost() {
    awk -F'\t' '
    function nm(s, map,   id) {
        if (match(s, /^\([0-9]+\)/)) {
            id = substr(s, 2, RLENGTH - 2)
            s = substr(s, RLENGTH + 1)
            sub(/^ /, "", s)
            if (s != "") map[id] = s
            return map[id]
        }
        return s
    }
    FNR == 1 { ob = ""; fn = ""; skip = 0 }
    /^ob=/  { ob = nm(substr($0, 4), obs); next }
    /^cob=/ { nm(substr($0, 5), obs); next }
    /^fn=/  { fn = nm(substr($0, 4), fns); sub(/\047[0-9]+$/, "", fn); next }
    /^cfn=/ { nm(substr($0, 5), fns); next }
    /^calls=/ { skip = 1; next }
    /^totals:/ { split($0, a, " "); total += a[2]; next }
    /^[0-9+*-]/ {
        if (skip) { skip = 0; next }
        n = split($0, a, " ")
        self[ob "\t" fn] += a[n]
        next
    }
    END {
        for (k in self) print k "\t" self[k]
        print "\t\t" total
    }' "$@"
}

# measure NAME N: NAME under callgrind, N requests, the cost table in $T/cost.NAME.N
measure() {
    local name=$1 n=$2 pid out port log="$T/ab.$1.$2"
    rm -f "$T"/cg."$name".*
    case $name in
    nginx)
        port=$P_NGX
        valgrind --tool=callgrind --separate-threads=no --trace-children=yes \
            --callgrind-out-file="$T/cg.$name.%p" \
            nginx -c "$T/nginx-px.conf" -p "$T" -g "daemon off; master_process off;" \
            2>"$T/vg.$name.$n" &
        pid=$!
        bench_wait_port $port || return 1
        ;;
    baton)
        port=$P_BAT
        valgrind --tool=callgrind --separate-threads=no --trace-children=yes \
            --callgrind-out-file="$T/cg.$name.%p" \
            "$BATON" serve -c "$T/baton.json" 2>"$T/vg.$name.$n" &
        pid=$!
        bench_wait_ready $P_ADM 120 || { tail -n 20 "$T/vg.$name.$n" >&2; return 1; }
        ;;
    esac
    PIDS+=("$pid")
    ab -k -c 8 -n "$n" -p "$T/body.json" -T application/json \
        -H "Authorization: Bearer $TOKEN" -H "X-Sfn-Execution: $EXEC" \
        "http://127.0.0.1:$port/bench/run" >"$log" 2>&1
    case $name in nginx) kill -QUIT "$pid" ;; baton) kill -TERM "$pid" ;; esac
    wait "$pid"
    if ! grep -q "^Complete requests: *$n\$" "$log" || ! grep -q "^Failed requests: *0\$" "$log" ||
        grep -q "Non-2xx" "$log"; then
        echo "bench: $name did not answer $n requests with 2xx:" >&2
        grep -E "Complete|Failed|Non-2xx" "$log" >&2
        return 1
    fi
    cost "$T"/cg."$name".* >"$T/cost.$name.$n"
    [ -n "${BENCH_KEEP:-}" ] && mkdir -p "$BENCH_KEEP" && cp "$T"/cg."$name".* "$T/cost.$name.$n" "$BENCH_KEEP/"
    return 0
}

t0=$(date +%s)
for t in nginx baton; do
    for n in $SMALL $LARGE; do
        measure $t "$n" || exit 1
    done
done

# per NAME KEYFIELDS: "key<TAB>instructions per request", keyed by object
# (KEYFIELDS 1) or object and function (1,2), large run minus small run
per() {
    awk -F'\t' -v d=$((LARGE - SMALL)) -v k="$2" '
    function key() { return k == 1 ? $1 : $1 "\t" $2 }
    FNR == NR { small[key()] += $3; next }
    { large[key()] += $3 }
    END {
        for (x in large) printf "%s\t%.1f\n", x, (large[x] - small[x]) / d
        for (x in small) if (!(x in large)) printf "%s\t%.1f\n", x, -small[x] / d
    }' "$T/cost.$1.$SMALL" "$T/cost.$1.$LARGE"
}
for t in nginx baton; do
    per $t 1 >"$T/per.$t.obj"
    per $t 1,2 | grep -v '^	' >"$T/per.$t.fn"
done
total() { awk -F'\t' '$1 == "" { print $2 }' "$T/per.$1.obj"; }
crypto() { awk -F'\t' '$1 ~ /libcrypto/ { s += $2 } END { printf "%.1f\n", s }' "$T/per.$1.obj"; }
N_ALL=$(total nginx) N_CRY=$(crypto nginx) B_ALL=$(total baton) B_CRY=$(crypto baton)

echo
echo "Instructions per request under callgrind, every thread: (run of $LARGE - run of $SMALL)"
echo "/ $((LARGE - SMALL)); \`ab -k -c 8\` POSTs, the same RS256 token and X-Sfn-Execution header."
echo
echo "| | instructions per request | of which in libcrypto | outside libcrypto |"
echo "|---|---:|---:|---:|"
for t in nginx baton; do
    case $t in nginx) a=$N_ALL c=$N_CRY l="nginx plain proxy" ;; baton) a=$B_ALL c=$B_CRY l=baton ;; esac
    awk -v l="$l" -v a="$a" -v c="$c" 'function f(x,   s, r) { s = sprintf("%.0f", x); r = "";
        while (length(s) > 3 && substr(s, length(s) - 3, 1) ~ /[0-9]/) {
            r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) }
        return s r }
        BEGIN { printf "| %s | %s | %s | %s |\n", l, f(a), f(c), f(a - c) }'
done
for t in nginx baton; do
    echo
    echo "$t per object (instructions per request, self):"
    grep -v '^	' "$T/per.$t.obj" | sort -t'	' -k2,2gr |
        awk -F'\t' '{ s += $2 } $2 >= 5 || $2 <= -5 { printf "  %10.0f  %s\n", $2, $1 }
            END { printf "  %10.0f  (sum of every object)\n", s }' | sed 's|  /[^ ]*/|  |'
done
echo
echo "baton's top $TOP functions, instructions per request (self cost):"
sort -t'	' -k3,3gr "$T/per.baton.fn" | head -n "$TOP" |
    awk -F'\t' '{ o = $1; sub(/.*\//, "", o); sub(/\.so[.0-9]*$/, "", o); printf "  %8.0f  %-44s %s\n", $3, $2, o }'
echo
awk -v na="$N_ALL" -v nc="$N_CRY" -v ba="$B_ALL" -v bc="$B_CRY" 'BEGIN {
    out = (ba - bc) / (na - nc); all = ba / na
    printf "baton / nginx: outside libcrypto %.2fx (target <= 1.2x: %s), in all %.2fx (target <= 1.8x: %s)\n",
        out, (out <= 1.2 ? "met" : "NOT met"), all, (all <= 1.8 ? "met" : "NOT met") }'
echo "($(( $(date +%s) - t0 )) s under callgrind; $(basename "$BATON"): $BATON)"

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
# per request, the ratios against the issue's targets, and what libcrypto is
# spent on: the audit lines appended during each run (their bytes and the
# SHA-256 blocks that hash each line once) times one block's instructions,
# calibrated on `openssl dgst -sha256` under callgrind. Costs are read from
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

# audit_lines FILE: how many lines FILE has (0 when absent).
audit_lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }

# audit_delta BEFORE FILE: "lines bytes blocks" of the lines appended to FILE
# since it had BEFORE's count of lines. blocks: SHA-256 compression-function
# calls to hash each appended line once as one message (without its newline,
# as the writer chains it): ceil((len + 9) / 64), the padding's 0x80 byte and
# 64-bit length included (FIPS 180-4, 5.1.1).
audit_delta() {
    tail -n +"$(($(cat "$1") + 1))" "$2" |
        awk '{ n++; b += length($0) + 1; k += int((length($0) + 9 + 63) / 64) }
            END { printf "%d %d %d\n", n, b, k }'
}

# sha256_block_cost: instructions of one SHA-256 block in this libcrypto under
# callgrind, libcrypto's cost alone: `openssl dgst -sha256` of 4 MiB minus
# that of 1 MiB, over the 49,152 blocks between them.
sha256_block_cost() {
    local f
    head -c $((4 << 20)) /dev/zero >"$T/z4"
    head -c $((1 << 20)) /dev/zero >"$T/z1"
    for f in z1 z4; do
        valgrind --tool=callgrind --callgrind-out-file="$T/cg.sha.$f" \
            openssl dgst -sha256 "$T/$f" >/dev/null 2>&1 || return 1
        cost "$T/cg.sha.$f" | awk -F'\t' '$1 ~ /libcrypto/ { s += $3 } END { print s }' >"$T/sha.$f"
    done
    awk -v a="$(cat "$T/sha.z1")" -v b="$(cat "$T/sha.z4")" \
        'BEGIN { printf "%.1f\n", (b - a) / (3 * 16384) }'
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
        audit_lines "$T/audit.jsonl" >"$T/audit.before"
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
    [ "$name" = baton ] && audit_delta "$T/audit.before" "$T/audit.jsonl" >"$T/audit.$n"
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
# What libcrypto is spent on: the audit lines' SHA-256 (one pass per line, the
# hash chain) against the rest. Every other hash on the request path and the
# writer (token fingerprints, cache keys) is done once per token, not per request.
read -r AL_S AB_S AK_S <"$T/audit.$SMALL"
read -r AL_L AB_L AK_L <"$T/audit.$LARGE"
BLK=$(sha256_block_cost) || { echo "bench: openssl dgst under callgrind failed" >&2; exit 1; }
echo
awk -v d=$((LARGE - SMALL)) -v ls="$AL_S" -v ll="$AL_L" -v bs="$AB_S" -v bl="$AB_L" \
    -v ks="$AK_S" -v kl="$AK_L" -v blk="$BLK" -v bc="$B_CRY" -v na="$N_ALL" 'BEGIN {
    lines = (ll - ls) / d; bytes = (bl - bs) / d; blocks = (kl - ks) / d; sha = blocks * blk
    printf "libcrypto, accounted: %.2f audit lines of %.0f bytes a request, %.2f SHA-256 blocks\n", lines, bytes, blocks
    printf "  to hash each once; one block is %.0f instructions under callgrind (openssl dgst -sha256,\n", blk
    printf "  4 MiB - 1 MiB): %.0f a request, %.2f of libcrypto'"'"'s %.0f; the rest %.0f.\n", sha, sha / bc, bc, bc - sha
    printf "  (valgrind runs SHA-256 without SHA-NI: openssl speed -evp sha256 on this CPU is the real cost)\n"
}'
echo "($(( $(date +%s) - t0 )) s under callgrind; $(basename "$BATON"): $BATON)"

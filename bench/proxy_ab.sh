#!/bin/bash
# bench/proxy_ab.sh BASE NEW [ROUNDS] [DURATION]: two baton binaries (say one built
# from main and one from a branch) with the same config, keys, policy and nginx
# upstream as bench/proxy.sh (bench/lib.sh), loaded at the same time by two
# `wrk -t1 -c32` per round, so whatever else a shared machine does weighs on
# both alike. Prints each round's CPU time per request (every thread,
# /proc/PID/stat: user + system, and the two apart) and request count, then the
# medians and the median of the per-round ratios new/base.
# Loopback only, bounded: ROUNDS (6) x DURATION (5s) plus start-up.
set -u
. "$(dirname "$0")/lib.sh"
A=$(readlink -f "$1"); B=$(readlink -f "$2"); ROUNDS=${3:-6}; DUR=${4:-5s}
P=${BENCH_PORT_BASE:-27720}
P_UP=$P PA=$((P + 1)) PAA=$((P + 2)) PB=$((P + 3)) PBA=$((P + 4))
for x in "$A" "$B"; do [ -x "$x" ] || { echo "bench: no baton binary at $x" >&2; exit 2; }; done

bench_start ab
bench_token
bench_upstream $P_UP
# one config per binary, each in its own directory (its own audit log)
for t in a b; do
    case $t in a) port=$PA adm=$PAA ;; b) port=$PB adm=$PBA ;; esac
    bench_baton_conf "$port" "$adm" $P_UP
    mkdir -p "$T/$t"
    sed -e 's|"jwks_file": "jwks.json"|"jwks_file": "../jwks.json"|' \
        -e 's|"policies": "policies"|"policies": "../policies"|' "$T/baton.json" >"$T/$t/baton.json"
done
"$A" serve -c "$T/a/baton.json" 2>"$T/a.err" & APID=$!; PIDS+=($APID)
"$B" serve -c "$T/b/baton.json" 2>"$T/b.err" & BPID=$!; PIDS+=($BPID)
bench_wait_ready $PAA || { cat "$T/a.err" >&2; exit 1; }
bench_wait_ready $PBA || { cat "$T/b.err" >&2; exit 1; }
for p in $PA $PB; do
    c=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$p/x")
    [ "$c" = 200 ] || { echo "bench: port $p answers $c" >&2; cat "$T"/*.err >&2; exit 1; }
done
ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
for p in $PA $PB; do wrk -t1 -c32 -d1s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$p/x" >/dev/null 2>&1; done
: >"$T/res"
# one result line: NAME, CPU us/request (user + system), requests, user us, system us
res() { # NAME PID_TICKS_BEFORE(user sys) PID WRK_OUT
    local n
    n=$(awk '/requests in/{print $1}' "$4")
    read -r u1 s1 <<<"$(ticks "$3")"
    awk -v name="$1" -v u0="${2% *}" -v s0="${2#* }" -v u1="$u1" -v s1="$s1" -v n="$n" -v hz="$HZ" \
        'BEGIN { u = (u1 - u0) * 1e6 / hz / n; s = (s1 - s0) * 1e6 / hz / n
                 printf "%s %.3f %d %.3f %.3f\n", name, u + s, n, u, s }' | tee -a "$T/res"
}
for r in $(seq "$ROUNDS"); do
    a0=$(ticks $APID) b0=$(ticks $BPID)
    wrk -t1 -c32 -d"$DUR" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PA/x" >"$T/wa.txt" 2>&1 &
    wp=$!
    wrk -t1 -c32 -d"$DUR" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PB/x" >"$T/wb.txt" 2>&1
    wait $wp
    grep -q Non-2xx "$T/wa.txt" "$T/wb.txt" && echo "bench: non-2xx answers" >&2
    res base "$a0" $APID "$T/wa.txt"
    res new "$b0" $BPID "$T/wb.txt"
done
med() { sort -g | awk '{v[NR]=$1} END{ if (NR%2) print v[(NR+1)/2]; else printf "%.3f\n",(v[NR/2]+v[NR/2+1])/2 }'; }
col() { awk -v n="$1" -v c="$2" '$1 == n { print $c }' "$T/res" | med; }
cb=$(col base 2) cn=$(col new 2) rb=$(col base 3) rn=$(col new 3)
# paired per-round ratio new/base
pr=$(awk '{ if ($1=="base") b[++i]=$2; else n[++j]=$2 } END{ for (k=1;k<=i;k++) printf "%.3f\n", n[k]/b[k] }' "$T/res" | med)
echo "median CPU us/request: base $cb, new $cn (new/base $(awk -v a="$cn" -v b="$cb" 'BEGIN{printf "%.3f",a/b}'); median of per-round ratios $pr); requests per round base $rb new $rn"
echo "of which user: base $(col base 4), new $(col new 4); system: base $(col base 5), new $(col new 5)"

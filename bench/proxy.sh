#!/bin/bash
# bench/proxy.sh: baton against reference proxies, in one run, on one upstream.
#
#   bench/proxy.sh [BATON_BINARY]     (default: ./baton; build without --enable-asan)
#
# Loopback only, bounded in time (about three minutes). Every server runs on its
# own high port with its own config under a temp dir, 1 worker / 1 thread
# each, in front of the same upstream (nginx returning a 3-byte body):
#   direct      wrk -> upstream
#   nginx       plain reverse proxy, keepalive upstream
#   haproxy     HAProxy 2.6 verifying the RS256 JWT with jwt_verify
#   apache      Apache + mod_auth_openidc verifying the same JWT (static key)
#   baton       1 worker, the same RS256 token (verified-token cache), one
#               policy, audit with fsync "batch"
#   assert      the same baton config plus the signed caller assertion
#               ("assertion", README "Caller assertion"): on / off in one run,
#               and again paired (both loaded at once, ROUNDS times)
# and prints req/s, p50 and p99 from `wrk -t1 -c32 -d10s --latency`, the ratio
# of each to baton, baton's RSS holding 10,000 idle keep-alive connections,
# and the time from exec to /readyz true.
# The machine is shared and noisy: every target runs BENCH_ROUNDS times (3),
# the order reversed every other round so a drift does not favour one side;
# the table shows medians, ratios are taken within a round, and the CPU time
# per request of the nginx proxy and of baton (from /proc/PID/stat, every
# thread) is printed too, the steadier measure of the two.
# Needs (installed with apt-get when missing): nginx haproxy apache2
# libapache2-mod-auth-openidc wrk; python3-jwt for the token.
set -u
. "$(dirname "$0")/lib.sh"
BATON=${1:-./baton}
BATON=$(readlink -f "$BATON")
DUR=${BENCH_DURATION:-10s}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNECTIONS:-32}
IDLE=${BENCH_IDLE_CONNECTIONS:-10000}
PY=$BENCH_PY
P_UP=18480 P_NGX=18481 P_HAP=18482 P_APA=18483 P_BAT=18484 P_ADM=18485 P_JWKS=18486
P_BAS=18487 P_BAS_ADM=18488

[ -x "$BATON" ] || { echo "bench: no baton binary at $BATON" >&2; exit 2; }
need=""
for b in nginx:nginx haproxy:haproxy apache2:apache2 wrk:wrk; do
    command -v "${b%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${b%%:*}" ] || need="$need ${b#*:}"
done
[ -e /usr/lib/apache2/modules/mod_auth_openidc.so ] || need="$need libapache2-mod-auth-openidc"
if [ -n "$need" ]; then
    echo "bench: installing$need" >&2
    apt-get install -y $need >/dev/null || { echo "bench: apt-get failed" >&2; exit 2; }
fi
# Debian starts the packaged services on install: stop them, we use our own.
for s in nginx haproxy apache2; do service "$s" stop >/dev/null 2>&1 || true; done

bench_start bench
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# ---- keys and token; upstream: nginx returning 3 bytes (bench/lib.sh) -------
bench_token
bench_upstream $P_UP

# ---- nginx plain reverse proxy (keepalive upstream) ------------------------
bench_nginx_proxy_conf $P_NGX $P_UP
nginx -c "$T/nginx-px.conf" -p "$T" || exit 2

# ---- HAProxy 2.6 with jwt_verify --------------------------------------------
cat >"$T/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend fe
    bind 127.0.0.1:$P_HAP
    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
    http-request deny unless { var(txn.alg) -m str RS256 }
    http-request deny unless { var(txn.bearer),jwt_verify(txn.alg,"$T/pub.pem") -m int 1 }
    default_backend be
backend be
    http-reuse always
    server up 127.0.0.1:$P_UP
EOF
haproxy -f "$T/haproxy.cfg" >"$T/haproxy.log" 2>&1 &
PIDS+=($!)

# ---- Apache + mod_auth_openidc ----------------------------------------------
M=/usr/lib/apache2/modules
cat >"$T/apache.conf" <<EOF
ServerRoot $T
Listen 127.0.0.1:$P_APA
PidFile $T/apache.pid
ErrorLog $T/apache.err
LogLevel warn
Mutex file:$T
User www-data
Group www-data
LoadModule mpm_event_module $M/mod_mpm_event.so
LoadModule authz_core_module $M/mod_authz_core.so
LoadModule authz_user_module $M/mod_authz_user.so
LoadModule authn_core_module $M/mod_authn_core.so
LoadModule proxy_module $M/mod_proxy.so
LoadModule proxy_http_module $M/mod_proxy_http.so
LoadModule auth_openidc_module $M/mod_auth_openidc.so
ServerLimit 1
StartServers 1
ThreadsPerChild 64
ThreadLimit 64
MaxRequestWorkers 64
MinSpareThreads 1
MaxSpareThreads 64
KeepAlive On
MaxKeepAliveRequests 0
OIDCCryptoPassphrase bench-passphrase
OIDCOAuthVerifyCertFiles bench#$T/cert.pem
<Location />
    AuthType oauth20
    Require valid-user
    ProxyPass http://127.0.0.1:$P_UP/ keepalive=On
</Location>
EOF
chmod 755 "$T"
apache2 -f "$T/apache.conf" -k start >"$T/apache.out" 2>&1

# ---- baton ---------------------------------------------------------------------
bench_baton_conf $P_BAT $P_ADM $P_UP
t0=$(date +%s%N)
"$BATON" serve -c "$T/baton.json" 2>"$T/baton.err" &
BATON_PID=$!
PIDS+=($BATON_PID)
ready_ms=""
for _ in $(seq 1000); do
    if curl -sf -o /dev/null "http://127.0.0.1:$P_ADM/readyz"; then
        ready_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
        break
    fi
    sleep 0.005
done
[ -n "$ready_ms" ] || { echo "bench: baton never became ready" >&2; cat "$T/baton.err" >&2; exit 1; }

# The same baton with the caller assertion on (a generated key), for on/off.
mkdir -p "$T/assert"
sed -e "s/127.0.0.1:$P_BAT/127.0.0.1:$P_BAS/" -e "s/127.0.0.1:$P_ADM/127.0.0.1:$P_BAS_ADM/" \
    -e 's|"policies": "policies"|"policies": "../policies"|' -e 's|"jwks_file": "jwks.json"|"jwks_file": "../jwks.json"|' \
    -e 's|^}$|  ,"assertion": { "issuer": "https://gateway.bench" }\n}|' "$T/baton.json" >"$T/assert/baton.json"
"$BATON" serve -c "$T/assert/baton.json" 2>"$T/assert.err" &
ASSERT_PID=$!
PIDS+=($ASSERT_PID)
for _ in $(seq 1000); do
    curl -sf -o /dev/null "http://127.0.0.1:$P_BAS_ADM/readyz" && break
    sleep 0.005
done

for p in $P_UP $P_NGX $P_HAP $P_APA $P_BAT $P_BAS; do
    bench_wait_port $p || { tail -n 5 "$T"/*.err "$T"/*.log "$T"/*.out 2>/dev/null >&2; exit 1; }
done

# Every target must answer 200 with the token (and refuse without, for the verifiers).
check() { # name port
    local ok bad
    ok=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$2/x")
    bad=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$2/x")
    echo "  $1: with token $ok, without $bad"
    [ "$ok" = 200 ] || { echo "bench: $1 does not answer 200" >&2; return 1; }
}
echo "targets:"
check direct $P_UP && check nginx $P_NGX && check haproxy $P_HAP && check apache $P_APA &&
    check baton $P_BAT && check assert $P_BAS || exit 1

# wrk prints latency with units; normalise to ms.
to_ms() {
    awk -v v="$1" 'BEGIN{ n=v; sub(/[a-z]+$/,"",n);
        if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; printf "%.3f", n }'
}
declare -A RPS P50 P99 CPU USR
cpu_ticks() { # pid: user+system clock ticks of every thread
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}
usr_ticks() { # pid: user clock ticks of every thread
    awk '{ print $14 }' "/proc/$1/stat"
}
NGX_WORKER=$(pgrep -P "$(cat "$T/nginx-px.pid")" | head -n 1)
run() { # name port round
    local out pid="" c0=0 u0=0 n
    case $1 in nginx) pid=$NGX_WORKER ;; baton) pid=$BATON_PID ;; assert) pid=$ASSERT_PID ;; esac
    [ -n "$pid" ] && c0=$(cpu_ticks "$pid") u0=$(usr_ticks "$pid")
    wrk -t1 -c"$CONNS" -d"$DUR" --latency -H "Authorization: Bearer $TOKEN" \
        "http://127.0.0.1:$2/x" >"$T/wrk-$1.txt" 2>&1
    out="$T/wrk-$1.txt"
    RPS[$1,$3]=$(awk '/^Requests\/sec/{print $2}' "$out")
    P50[$1,$3]=$(to_ms "$(awk '$1=="50%"{print $2}' "$out")")
    P99[$1,$3]=$(to_ms "$(awk '$1=="99%"{print $2}' "$out")")
    if [ -n "$pid" ]; then
        n=$(awk '/requests in/{print $1}' "$out")
        CPU[$1,$3]=$(awk -v d="$(( $(cpu_ticks "$pid") - c0 ))" -v n="$n" \
            -v hz="$(getconf CLK_TCK)" 'BEGIN{ printf "%.2f", (n > 0 ? d * 1e6 / hz / n : 0) }')
        USR[$1,$3]=$(awk -v d="$(( $(usr_ticks "$pid") - u0 ))" -v n="$n" \
            -v hz="$(getconf CLK_TCK)" 'BEGIN{ printf "%.2f", (n > 0 ? d * 1e6 / hz / n : 0) }')
    fi
    if grep -q "Non-2xx" "$out"; then echo "bench: $1 had non-2xx answers: $(grep Non-2xx "$out")" >&2; fi
}
median() { # of the numbers on stdin
    tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
of_rounds() { # array-name target: the values of every round
    local -n a=$1
    local r
    for r in $(seq "$ROUNDS"); do printf '%s ' "${a[$2,$r]:-}"; done
}
ratios() { # target: baton / target within each round
    local r
    for r in $(seq "$ROUNDS"); do
        awk -v b="${RPS[baton,$r]:-0}" -v x="${RPS[$1,$r]:-0}" \
            'BEGIN{ printf "%.2f ", (x > 0 ? b / x : 0) }'
    done
}
ORDER="direct:$P_UP nginx:$P_NGX haproxy:$P_HAP apache:$P_APA baton:$P_BAT assert:$P_BAS"
if [ -n "${BENCH_TARGETS:-}" ]; then # e.g. "baton assert": only these are measured
    ORDER=$(for t in $ORDER; do case " $BENCH_TARGETS " in *" ${t%%:*} "*) printf '%s ' "$t" ;; esac; done)
fi
for t in $ORDER; do # warm-up, not measured: connections, pools, caches
    wrk -t1 -c"$CONNS" -d1s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:${t#*:}/x" >/dev/null 2>&1
done
for r in $(seq "$ROUNDS"); do
    [ $((r % 2)) -eq 0 ] && order=$(echo $ORDER | tr ' ' '\n' | tac | tr '\n' ' ') || order=$ORDER
    for t in $order; do
        run "${t%%:*}" "${t#*:}" "$r"
    done
done

# The caller assertion on / off, paired: both batons loaded at the same time by
# two wrk, so whatever else the shared machine does weighs on both alike.
PAIRED=""
if case " $ORDER " in *" baton:"*) true ;; *) false ;; esac &&
   case " $ORDER " in *" assert:"*) true ;; *) false ;; esac; then
    for r in $(seq "$ROUNDS"); do
        b0=$(cpu_ticks "$BATON_PID") a0=$(cpu_ticks "$ASSERT_PID")
        wrk -t1 -c"$CONNS" -d"$DUR" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$P_BAT/x" \
            >"$T/wrk-paired-off.txt" 2>&1 &
        wp=$!
        wrk -t1 -c"$CONNS" -d"$DUR" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$P_BAS/x" \
            >"$T/wrk-paired-on.txt" 2>&1
        wait "$wp"
        PAIRED="$PAIRED $(awk -v b="$(( $(cpu_ticks "$BATON_PID") - b0 ))" -v a="$(( $(cpu_ticks "$ASSERT_PID") - a0 ))" \
            -v nb="$(awk '/requests in/{print $1}' "$T/wrk-paired-off.txt")" \
            -v na="$(awk '/requests in/{print $1}' "$T/wrk-paired-on.txt")" \
            'BEGIN{ printf "%.3f/%.3f", (nb > 0 ? na / nb : 0), (a > 0 && na > 0 ? (b / nb) / (a / na) : 0) }')"
    done
fi

# RSS with idle keep-alive connections: each connection makes one request, then idles.
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
rss_before=$(rss_kb $BATON_PID)
$PY - "$P_BAT" "$TOKEN" "$IDLE" "$BATON_PID" <<'EOF' >"$T/idle.txt" 2>&1
import socket, sys, time
port, tok, n, pid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
req = ("GET /idle HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer %s\r\n\r\n" % tok).encode()
socks, t0 = [], time.monotonic()
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(req)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    socks.append(s)
    if not data.startswith(b"HTTP/1.1 200"):
        break  # baton's descriptor cap (max_connections within RLIMIT_NOFILE) is reached
    if time.monotonic() - t0 > 90:
        break
time.sleep(0.5)
rss = [l.split()[1] for l in open("/proc/%s/status" % pid) if l.startswith("VmRSS")][0]
print(len(socks), rss)
for s in socks:
    s.close()
EOF
read -r idle_n rss_idle <"$T/idle.txt" || { idle_n=0; rss_idle=0; }

printf '\n%d rounds of %s each; medians:\n' "$ROUNDS" "$DUR"
printf '%-8s %12s %10s %10s %14s   %s\n' target "req/s" "p50 ms" "p99 ms" "baton / this" "per round"
declare -A MED_RATIO
for t in direct nginx haproxy apache baton assert; do
    case " $ORDER " in *" $t:"*) ;; *) continue ;; esac
    rs=$(ratios "$t")
    MED_RATIO[$t]=$(echo "$rs" | median)
    printf '%-8s %12.0f %10.3f %10.3f %14.2f   %s\n' "$t" "$(of_rounds RPS "$t" | median)" \
        "$(of_rounds P50 "$t" | median)" "$(of_rounds P99 "$t" | median)" "${MED_RATIO[$t]}" "$rs"
done
CPU_N=$(of_rounds CPU nginx | median)
CPU_B=$(of_rounds CPU baton | median)
echo
CPU_R=$(awk -v n="$CPU_N" -v b="$CPU_B" 'BEGIN{ printf "%.2f", (b > 0 ? n / b : 0) }')
echo "CPU per request (median; rounds): nginx ${CPU_N} us ($(of_rounds CPU nginx)), \
baton ${CPU_B} us ($(of_rounds CPU baton)); nginx / baton ${CPU_R}"
echo "  of which user (median): nginx $(of_rounds USR nginx | median) us, baton $(of_rounds USR baton | median) us; \
the rest is the kernel's (system)"
CPU_A=$(of_rounds CPU assert | median)
echo "caller assertion on / off: throughput $(awk -v r="${MED_RATIO[assert]:-0}" 'BEGIN{ printf "%.3f", (r > 0 ? 1 / r : 0) }') \
(rounds: $(for r in $(seq "$ROUNDS"); do awk -v a="${RPS[assert,$r]:-0}" -v b="${RPS[baton,$r]:-0}" \
'BEGIN{ printf "%.3f ", (b > 0 ? a / b : 0) }'; done)), CPU per request off / on \
$(awk -v a="$CPU_A" -v b="$CPU_B" 'BEGIN{ printf "%.3f", (a > 0 ? b / a : 0) }') \
(${CPU_B} us off, ${CPU_A} us on; rounds on: $(of_rounds CPU assert))"
if [ -n "$PAIRED" ]; then
    echo "caller assertion on / off, paired (both loaded at once): throughput on/off \
$(for x in $PAIRED; do echo "${x%/*}"; done | median), CPU per request off/on \
$(for x in $PAIRED; do echo "${x#*/}"; done | median) (medians; rounds thr/cpu:$PAIRED)"
fi
echo "baton RSS: ${rss_before} kB after the load runs; ${rss_idle} kB holding ${idle_n} idle keep-alive connections"
echo "baton exec to /readyz true: ${ready_ms} ms"
echo "targets (issue 5): baton >= 1.5x haproxy, >= 0.8x nginx, p99 < 2 ms (medians)"
P99_B=$(of_rounds P99 baton | median)
awk -v h="${MED_RATIO[haproxy]:-0}" -v n="${MED_RATIO[nginx]:-0}" -v p="$P99_B" 'BEGIN{
    printf "  vs haproxy %.2fx (%s), vs nginx %.2fx (%s), p99 %.3f ms (%s)\n",
        h, ((h >= 1.5) ? "met" : "NOT met"), n, ((n >= 0.8) ? "met" : "NOT met"),
        p, ((p < 2) ? "met" : "NOT met") }'
kill -TERM $BATON_PID $ASSERT_PID
wait $BATON_PID 2>/dev/null
echo "baton exit status after SIGTERM: $?"

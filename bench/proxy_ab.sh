#!/bin/bash
# bench/proxy_ab.sh BASE NEW [ROUNDS] [DURATION]: two baton binaries (say one built
# from main and one from a branch) with the same config, keys, policy and nginx
# upstream as bench/proxy.sh, loaded at the same time by two `wrk -t1 -c32` per
# round, so whatever else a shared machine does weighs on both alike. Prints
# each round's CPU time per request (every thread, /proc/PID/stat) and request
# count, then the medians and the median of the per-round ratios new/base.
# Loopback only, bounded: ROUNDS (6) x DURATION (5s) plus start-up.
set -u
A=$(readlink -f "$1"); B=$(readlink -f "$2"); ROUNDS=${3:-6}; DUR=${4:-5s}
PY=/usr/bin/python3; SRC=$(cd "$(dirname "$0")/.." && pwd)
P_UP=27720 PA=27721 PAA=27722 PB=27723 PBA=27724
T=$(mktemp -d /tmp/baton-ab.XXXXXX); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; [ -f "$T/up.pid" ] && kill "$(cat "$T/up.pid")"; sleep 0.3; rm -rf "$T"; }
trap cleanup EXIT
$PY "$SRC/bench/mint_token.py" "$T" || exit 2
TOKEN=$(cat "$T/token")
cat >"$T/up.conf" <<EOF
worker_processes 1; pid $T/up.pid; error_log $T/up.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; client_header_buffer_size 4k;
  server { listen 127.0.0.1:$P_UP; location / { return 200 "ok\n"; } } }
EOF
nginx -c "$T/up.conf" -p "$T" || exit 2
mkdir -p "$T/policies"
cat >"$T/policies/bench.json" <<EOF
{ "step": "bench", "route": { "host": "*", "path_prefix": "/" }, "upstream": "up",
  "callers": [{ "issuer": "bench", "claims": { "sub": "arn:aws:iam::123456789012:role/*" } }],
  "allow": [{ "methods": ["GET"], "paths": ["/**"] }] }
EOF
mk() { # dir port admin
mkdir -p "$T/$1"; cat >"$T/$1/baton.json" <<EOF
{ "listen": "127.0.0.1:$2", "admin_listen": "127.0.0.1:$3", "workers": 1,
  "limits": { "max_connections": 20000, "idle_timeout_ms": 600000 },
  "issuers": [{ "name": "bench", "issuer": "https://issuer.bench", "jwks_file": "../jwks.json",
                "audiences": ["https://gateway.bench"], "algorithms": ["RS256"] }],
  "upstreams": [{ "name": "up", "url": "http://127.0.0.1:$P_UP", "identity": "none" }],
  "policies": "../policies", "audit": { "path": "audit.jsonl", "fsync": "batch", "on_failure": "deny" } }
EOF
}
mk a $PA $PAA; mk b $PB $PBA
"$A" serve -c "$T/a/baton.json" 2>"$T/a.err" & APID=$!; PIDS+=($APID)
"$B" serve -c "$T/b/baton.json" 2>"$T/b.err" & BPID=$!; PIDS+=($BPID)
for adm in $PAA $PBA; do for _ in $(seq 1000); do curl -sf -o /dev/null "http://127.0.0.1:$adm/readyz" && break; sleep 0.01; done; done
for p in $PA $PB; do c=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$p/x"); [ "$c" = 200 ] || { echo "port $p answers $c"; cat "$T"/*.err; exit 1; }; done
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
for t in a b; do wrk -t1 -c32 -d1s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$([ $t = a ] && echo $PA || echo $PB)/x" >/dev/null 2>&1; done
: >"$T/res"
# paired: both loaded at once by two wrk, so whatever else the machine does weighs on both
for r in $(seq "$ROUNDS"); do
  a0=$(ticks $APID) b0=$(ticks $BPID)
  wrk -t1 -c32 -d"$DUR" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PA/x" >"$T/wa.txt" 2>&1 &
  wp=$!
  wrk -t1 -c32 -d"$DUR" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PB/x" >"$T/wb.txt" 2>&1
  wait $wp
  da=$(( $(ticks $APID) - a0 )) db=$(( $(ticks $BPID) - b0 ))
  na=$(awk '/requests in/{print $1}' "$T/wa.txt") nb=$(awk '/requests in/{print $1}' "$T/wb.txt")
  grep -q Non-2xx "$T/wa.txt" "$T/wb.txt" && echo "non-2xx" >&2
  awk -v d=$da -v n=$na -v hz=$HZ 'BEGIN{ printf "base %.3f %d\n", d*1e6/hz/n, n }' | tee -a "$T/res"
  awk -v d=$db -v n=$nb -v hz=$HZ 'BEGIN{ printf "new %.3f %d\n", d*1e6/hz/n, n }' | tee -a "$T/res"
done
med() { sort -g | awk '{v[NR]=$1} END{ if (NR%2) print v[(NR+1)/2]; else printf "%.3f\n",(v[NR/2]+v[NR/2+1])/2 }'; }
cb=$(awk '$1=="base"{print $2}' "$T/res" | med); cn=$(awk '$1=="new"{print $2}' "$T/res" | med)
rb=$(awk '$1=="base"{print $3}' "$T/res" | med); rn=$(awk '$1=="new"{print $3}' "$T/res" | med)
# paired per-round ratio new/base
pr=$(awk '{ if ($1=="base") b[++i]=$2; else n[++j]=$2 } END{ for (k=1;k<=i;k++) printf "%.3f\n", n[k]/b[k] }' "$T/res" | med)
echo "median CPU us/request: base $cb, new $cn (new/base $(awk -v a=$cn -v b=$cb 'BEGIN{printf "%.3f",a/b}'); median of per-round ratios $pr); requests per round base $rb new $rn"

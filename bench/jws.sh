#!/bin/sh
# bench/jws.sh: JWS verification rates per core, in one run (about a minute):
# `openssl speed` (verify column) for rsa2048, ecdsap256, ecdsap384, ed25519,
# then bench_jws (raw signature, cold authn_verify, warm cache hit, libjwt
# 1.10.2 jwt_decode for RS256), then a table of the ratios.
#
# Usage (from the build directory, a build WITHOUT --enable-asan):
#   make bench/bench_jws && sh /path/to/src/bench/jws.sh [./bench/bench_jws]
# BENCH_SECONDS (default 0.75) scales bench_jws's measurement time (CPU seconds;
# both openssl speed and bench_jws divide by CPU time, so figures are per core).
#
# Ratios: "vs openssl" divides by `openssl speed`'s verify/s measured a few
# seconds earlier; "vs speed (interleaved)" divides by bench_jws's in-process
# openssl-speed-style loop run in alternating 50 ms slices with raw and cold,
# which stays fair when neighbours load the machine. PS256 is compared with
# rsa2048 (openssl speed has no PSS figure; the RSA public operation dominates).
set -eu
BIN=${1:-./bench/bench_jws}
SECS=${BENCH_SECONDS:-0.75}
if [ ! -x "$BIN" ]; then
    echo "jws.sh: $BIN not found; run: make bench/bench_jws" >&2
    exit 1
fi
if nm "$BIN" 2>/dev/null | grep -q __asan_init; then
    echo "jws.sh: warning: $BIN is built with ASan; the figures are not representative" >&2
fi
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== openssl speed -seconds 3 rsa2048 ecdsap256 ecdsap384 ed25519"
SPEED=$(timeout 120 openssl speed -seconds 3 rsa2048 ecdsap256 ecdsap384 ed25519 2>/dev/null)
echo "$SPEED" | grep -E 'verify/s|^rsa 2048|nistp256|nistp384|Ed25519'
rsa=$(echo "$SPEED" | awk '/^rsa 2048 bits/ {print $NF}')
p256=$(echo "$SPEED" | awk '/ecdsa \(nistp256\)/ {print $NF}')
p384=$(echo "$SPEED" | awk '/ecdsa \(nistp384\)/ {print $NF}')
ed=$(echo "$SPEED" | awk '/EdDSA \(Ed25519\)/ {print $NF}')
echo "== $BIN $SECS"
OUT=$(timeout 120 "$BIN" "$SECS")
echo "$OUT"
get() { echo "$OUT" | awk -v k="$1" '$1 == k {print $2}'; }
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "== verifications per second per core"
printf '%-6s %10s %10s %10s %10s %10s %8s %8s %8s %8s %8s %8s\n' alg openssl speed raw cold warm \
    raw/ossl cold/ossl raw/spd cold/spd hit_ns beyond
for row in "RS256 $rsa" "PS256 $rsa" "ES256 $p256" "ES384 $p384" "EdDSA $ed"; do
    set -- $row
    alg=$1 ossl=$2
    awk -v a="$alg" -v o="$ossl" -v s="$(get ${alg}_speed_per_s)" -v r="$(get ${alg}_raw_per_s)" \
        -v c="$(get ${alg}_cold_per_s)" -v w="$(get ${alg}_warm_per_s)" \
        -v h="$(get ${alg}_hit_ns)" -v b="$(get ${alg}_hit_beyond_hash_ns)" 'BEGIN {
        printf "%-6s %10.0f %10.0f %10.0f %10.0f %10.0f %8.2f %8.2f %8.2f %8.2f %8.0f %8.0f\n",
            a, o, s, r, c, w, r / o, c / o, r / s, c / s, h, b }'
done
awk -v l="$(get libjwt_RS256_per_s)" -v c="$(get RS256_cold_per_s)" 'BEGIN {
    printf "\nlibjwt 1.10.2 jwt_decode RS256: %.0f/s; baton cold RS256 is %.1fx that\n", l, c / l }'

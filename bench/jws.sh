#!/bin/sh
# bench/jws.sh: JWS verification rates per core, in one run (about a minute):
# `openssl speed` (verify column) for rsa2048, ecdsap256, ecdsap384, ed25519,
# then bench_jws (raw signature, cold authn_verify, warm cache hit, libjwt
# 1.10.2 jwt_decode for RS256), then a table of the ratios, then (when
# valgrind is installed; a few more minutes, mostly RSA key generation under
# valgrind) callgrind's instructions per RS256 verification.
#
# Usage (from the build directory, a build WITHOUT --enable-asan):
#   make bench/bench_jws && sh /path/to/src/bench/jws.sh [./bench/bench_jws [BASELINE]]
# BASELINE: another bench_jws (say, built from main) measured in the same run,
# in turns with the first, and printed beside it.
# BENCH_SECONDS (default 0.75) scales bench_jws's measurement time (CPU seconds;
# both openssl speed and bench_jws divide by CPU time, so figures are per core).
# BENCH_CALLGRIND=0 skips the instruction counts.
#
# Ratios: "vs openssl" divides by `openssl speed`'s verify/s measured a few
# seconds earlier; "vs speed (interleaved)" divides by bench_jws's in-process
# openssl-speed-style loop run in alternating 50 ms slices with raw and cold,
# which stays fair when neighbours load the machine. PS256 is compared with
# rsa2048 (openssl speed has no PSS figure; the RSA public operation dominates).
#
# Instructions: `bench_jws --count N MODE RS256` under callgrind, counting only
# its count_loop, for two N; the difference divided by the difference of N is
# the cost of one operation (setup and the first call cancel): cold (a full
# authn_verify, no cache), warm (a cache hit found by lookup), hint (a cache
# hit found through the connection's hint), each with the part in libcrypto.
# Valgrind runs SHA-256 without the CPU's SHA extensions, so hashing weighs
# more in these counts than on the real CPU.
set -eu
BIN=${1:-./bench/bench_jws}
BASE=${2:-}
SECS=${BENCH_SECONDS:-0.75}
for b in "$BIN" $BASE; do
    if [ ! -x "$b" ]; then
        echo "jws.sh: $b not found; run: make bench/bench_jws" >&2
        exit 1
    fi
    if nm "$b" 2>/dev/null | grep -q __asan_init; then
        echo "jws.sh: warning: $b is built with ASan; the figures are not representative" >&2
    fi
done
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
BOUT=
if [ -n "$BASE" ]; then
    echo "== $BASE $SECS (baseline)"
    BOUT=$(timeout 120 "$BASE" "$SECS")
    echo "$BOUT"
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "== verifications per second per core"
# hit_ns: one cache hit; sha_ns: one SHA-256 of the token (what a hit paid
# before the cache kept fingerprints, and what a miss pays once)
printf '%-15s %10s %10s %10s %10s %10s %8s %8s %8s %8s %8s %8s\n' alg openssl speed raw cold warm \
    raw/ossl cold/ossl raw/spd cold/spd hit_ns sha_ns
row() { # label output
    label=$1 out=$2
    for r in "RS256 $rsa" "PS256 $rsa" "ES256 $p256" "ES384 $p384" "EdDSA $ed"; do
        set -- $r
        alg=$1 ossl=$2
        get() { echo "$out" | awk -v k="$1" '$1 == k {print $2}'; }
        awk -v a="$alg$label" -v o="$ossl" -v s="$(get ${alg}_speed_per_s)" \
            -v r="$(get ${alg}_raw_per_s)" -v c="$(get ${alg}_cold_per_s)" \
            -v w="$(get ${alg}_warm_per_s)" -v h="$(get ${alg}_hit_ns)" \
            -v b="$(get ${alg}_sha256_ns)" 'BEGIN {
            printf "%-15s %10.0f %10.0f %10.0f %10.0f %10.0f %8.2f %8.2f %8.2f %8.2f %8.0f %8.0f\n",
                a, o, s, r, c, w, r / o, c / o, r / s, c / s, h, b }'
    done
}
row "" "$OUT"
[ -z "$BASE" ] || row " (baseline)" "$BOUT"
awk -v l="$(echo "$OUT" | awk '$1 == "libjwt_RS256_per_s" {print $2}')" \
    -v c="$(echo "$OUT" | awk '$1 == "RS256_cold_per_s" {print $2}')" 'BEGIN {
    printf "\nlibjwt 1.10.2 jwt_decode RS256: %.0f/s; baton cold RS256 is %.1fx that\n", l, c / l }'

[ "${BENCH_CALLGRIND:-1}" != 0 ] || exit 0
if ! command -v valgrind >/dev/null 2>&1 || ! command -v callgrind_annotate >/dev/null 2>&1; then
    echo "(valgrind not installed: no instruction counts)"
    exit 0
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# total and libcrypto instructions of one callgrind run of `bin --count n mode RS256`
count() { # bin mode n
    timeout 300 valgrind --tool=callgrind --collect-atstart=no --toggle-collect=count_loop \
        --callgrind-out-file="$TMP/cg" "$1" --count "$3" "$2" RS256 >/dev/null 2>&1
    callgrind_annotate --inclusive=no "$TMP/cg" 2>/dev/null | awk '
        /PROGRAM TOTALS/ { gsub(",", "", $1); t = $1 }
        /\[.*libcrypto[^]]*\]$/ { v = $1; gsub(",", "", v); c += v }
        END { printf "%d %d\n", t, c }'
}
echo
echo "== callgrind instructions per RS256 operation (difference of two run lengths)"
printf '%-22s %12s %14s\n' operation instructions "in libcrypto"
for b in "$BIN" $BASE; do
    label=
    [ "$b" = "$BIN" ] || label=" (baseline)"
    for spec in "cold 20 120" "warm 500 3000" "hint 500 3000"; do
        set -- $spec
        a=$(count "$b" "$1" "$2")
        z=$(count "$b" "$1" "$3")
        echo "$a $z" | awk -v op="$1$label" -v n="$(($3 - $2))" '{
            printf "%-22s %12.0f %14.0f\n", op, ($3 - $1) / n, ($4 - $2) / n }'
    done
done

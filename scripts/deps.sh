#!/bin/sh
# Installs what baton needs to build and test on Debian 12, from Debian's archive.
# Idempotent; run as root. BATON_DEPS_EXTRA adds packages (the benchmark peers).
set -eu
PKGS="autoconf automake libtool pkg-config make gcc clang curl ca-certificates
      libevent-dev libssl-dev libcurl4-openssl-dev libjansson-dev libjwt-dev
      python3 python3-pytest python3-jwt python3-cryptography python3-requests
      nodejs npm lcov prometheus ${BATON_DEPS_EXTRA:-}"
missing=""
# global rate limits: hiredis (src/redis.c) and the redis-server the e2e tests start
PKGS="$PKGS libhiredis-dev redis-server"
# bench/callgrind.sh: valgrind's callgrind, and ab (apache2-utils) for its load
PKGS="$PKGS valgrind apache2-utils"
# scripts/format.sh: the C layout of .clang-format (written for clang-format 14)
PKGS="$PKGS clang-format"
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# nodejs may come from elsewhere on a developer machine; a working node is enough.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    missing=$(echo "$missing" | tr ' ' '\n' | grep -vx -e nodejs -e npm | tr '\n' ' ')
fi
if [ -n "$(echo "$missing" | tr -d ' ')" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing
fi

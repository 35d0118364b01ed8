#!/bin/sh
# Installs the dependencies, builds baton, and runs the fully local demo
# (scripts/demo.py): a loopback issuer, baton with conf/demo/baton.json and
# "local" Google credentials, and a demo upstream, with allow/401/403/404 calls
# and their audit records. Bounded: it stops everything it started, unless
# --keep (arguments go to demo.py: --keep, --ports, --token, --stop).
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh
if [ ! -x ./baton ] || [ ! -f Makefile ]; then
    autoreconf -fi >/dev/null 2>&1
    ./configure >/dev/null
fi
make -j"$(nproc)" baton >/dev/null
exec /usr/bin/python3 scripts/demo.py "$@"

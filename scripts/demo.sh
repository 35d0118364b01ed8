#!/bin/sh
# Installs the dependencies, builds baton (release flags, in build/demo), and
# runs the fully local demo (scripts/demo.py): a loopback issuer, baton with
# conf/demo/baton.json and "local" Google credentials, and a demo upstream, with
# allow/401/403/404 calls and their audit records. Bounded: it stops everything
# it started, unless --keep (arguments go to demo.py: --keep, --ports, --token,
# --stop).
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh
. scripts/build.sh
build_dir build/demo
make -C build/demo -j"$(nproc)" baton >/dev/null
BATON_BIN=$(pwd)/build/demo/baton exec /usr/bin/python3 scripts/demo.py "$@"

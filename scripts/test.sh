#!/bin/sh
# Installs the dependencies, builds baton with AddressSanitizer,
# UndefinedBehaviorSanitizer and -Werror, and runs every test (`make check`:
# the unit suites, the fuzz seed-corpus replays, and the end-to-end tests of
# the real binary), then prints one closing line with the counts.
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh
autoreconf -fi >/dev/null 2>&1
./configure --enable-asan --enable-werror >/dev/null
make -j"$(nproc)" >/dev/null
status=0
make -j"$(nproc)" check || status=$?
[ $status -eq 0 ] || tail -n 60 tests/e2e/run.log 2>/dev/null || true
# TAP assertions (one :test-result: line each in the .trs files of the unit and
# fuzz-replay suites) plus pytest's own counts from the e2e log.
sh scripts/summary.sh
exit $status

#!/bin/sh
# Installs the dependencies, then:
# 1. checks the source layout .editorconfig declares (scripts/style.sh) and
#    the C layout .clang-format declares (scripts/format.sh --check);
# 2. builds baton with AddressSanitizer, UndefinedBehaviorSanitizer and -Werror
#    in its own build directory (build/check, whatever else was built before,
#    e.g. by scripts/demo.sh) and runs every test (`make check`: the unit suites,
#    the fuzz seed-corpus replays, and the end-to-end tests of the real binary);
# 3. builds the unit suites with ThreadSanitizer (build/tsan) and runs them and
#    the fuzz-corpus replays (`make check-unit`);
# 4. builds the release binary with configure's default flags and -Werror
#    (build/release) and checks the hardening it carries;
# then prints one closing line with the counts.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
sh scripts/deps.sh
. scripts/build.sh
status=0
sh scripts/style.sh || status=1
sh scripts/format.sh --check || status=1
build_dir build/check --enable-asan --enable-werror
make -C build/check -j"$(nproc)" >/dev/null
make -C build/check -j"$(nproc)" check || status=1
[ $status -eq 0 ] || tail -n 60 build/check/tests/e2e/run.log 2>/dev/null || true
build_dir build/tsan --enable-tsan --enable-werror
make -C build/tsan -j"$(nproc)" check-unit >build/tsan/check-unit.log 2>&1 || {
    status=1
    grep -E '^(FAIL|ERROR)|ThreadSanitizer' build/tsan/check-unit.log | head -n 40
}
build_dir build/release --enable-werror
make -C build/release -j"$(nproc)" baton >/dev/null
mkdir -p build/release/tests/e2e
BATON_SRCDIR=$top BATON_BUILDDIR=$top/build/release /usr/bin/python3 -m pytest -q -p no:cacheprovider \
    tests/e2e/test_build_hardening.py >build/release/tests/e2e/run.log 2>&1 || status=1
# TAP assertions (one :test-result: line each in the .trs files of the unit and
# fuzz-replay suites, ASan and TSan builds) plus pytest's own counts from the
# e2e logs (ASan build, release hardening).
sh scripts/summary.sh build/check build/tsan build/release
exit $status

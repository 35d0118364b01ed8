#!/bin/sh
# Prints "tests: N passed, M failed" over every suite of the last `make check`
# in each build directory given (default: this checkout): the TAP results in
# its .trs files (unit suites, fuzz-corpus replays) plus the counts pytest
# printed last in its tests/e2e/run.log.
top=$(cd "$(dirname "$0")/.." && pwd)
[ $# -gt 0 ] || set -- "$top"
pass=0 fail=0
for dir in "$@"; do
    case "$dir" in /*) ;; *) dir=$top/$dir ;; esac
    [ -d "$dir" ] || continue
    tap=$(find "$dir/tests" -name '*.trs' ! -path '*/tests/e2e/*' -exec cat {} + 2>/dev/null |
          awk '/^:test-result: (PASS|SKIP|XFAIL)/{p++} /^:test-result: (FAIL|ERROR|XPASS)/{f++} END{print p+0, f+0}')
    e2e=$(grep -E '^[0-9]+ (passed|failed)|in [0-9.]+s' "$dir/tests/e2e/run.log" 2>/dev/null | tail -n 1 |
          awk '{for(i=2;i<=NF;i++){if($i ~ /^passed/)p=$(i-1); if($i ~ /^(failed|errors?)/)f+=$(i-1)}} END{print p+0, f+0}')
    set -- $tap $e2e
    pass=$((pass + $1 + $3)) fail=$((fail + $2 + $4))
done
echo "tests: $pass passed, $fail failed"

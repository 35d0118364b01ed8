#!/bin/sh
# Prints "tests: N passed, M failed" over every suite of the last `make check`.
cd "$(dirname "$0")/.."
tap=$(find tests -name '*.trs' ! -path 'tests/e2e/*' -exec cat {} + 2>/dev/null |
      awk '/^:test-result: (PASS|SKIP|XFAIL)/{p++} /^:test-result: (FAIL|ERROR|XPASS)/{f++} END{print p+0, f+0}')
e2e=$(grep -E '^[0-9]+ (passed|failed)|in [0-9.]+s' tests/e2e/run.log 2>/dev/null | tail -n 1 |
      awk '{for(i=2;i<=NF;i++){if($i ~ /^passed/)p=$(i-1); if($i ~ /^(failed|errors?)/)f+=$(i-1)}} END{print p+0, f+0}')
set -- $tap $e2e
echo "tests: $(($1 + $3)) passed, $(($2 + $4)) failed"  # unit and fuzz-replay assertions plus e2e tests

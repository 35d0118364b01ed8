#!/bin/sh
# Prints src/reason.h's outcome table as Markdown (README's "Status codes" table).
cd "$(dirname "$0")/.."
echo "| reason | status | stage |"
echo "|---|---:|---|"
awk '/^ *\/\* .*\*\/ *\\$/ { s=$0; sub(/^ *\/\* */,"",s); sub(/ *\*\/.*$/,"",s); stage=s }
     /X\([A-Z_]+, "/ { match($0, /"[a-z_0-9]+"/); code=substr($0, RSTART+1, RLENGTH-2);
                       rest=substr($0, RSTART+RLENGTH); match(rest, /[0-9]+/);
                       printf "| `%s` | %s | %s |\n", code, substr(rest, RSTART, RLENGTH), stage }' src/reason.h

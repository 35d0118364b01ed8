#!/bin/sh
# Verifies a Cloud Logging export of CHAINS instances x RECORDS records
# (sink-style newline-delimited LogEntry, members shuffled, numbers doubles,
# newest first) and reports throughput and peak RSS (GNU time).
#   make && make tests/unit/test_audit_writer && sh bench/verify_export.sh
# Environment: CHAINS (8), RECORDS (125000 per chain), DIR (a temp dir).
set -eu
CHAINS=${CHAINS:-8}
RECORDS=${RECORDS:-125000}
DIR=${DIR:-$(mktemp -d)}
B=$(pwd)
mkdir -p "$DIR/logs"
"$B/baton" audit keygen --out "$DIR/k.pem" | sed -n '/BEGIN/,/END/p' > "$DIR/pub.pem"
i=0
while [ $i -lt "$CHAINS" ]; do
    "$B/tests/unit/test_audit_writer" write "$DIR/logs/c$i.jsonl" --key "$DIR/k.pem" \
        --count "$RECORDS" --threads 2 --fsync none --queue 1048576 > /dev/null
    i=$((i + 1))
done
nice /usr/bin/python3 "$B/bench/cloud_export.py" "$DIR/export" "$DIR"/logs/c*.jsonl
du -sb "$DIR/export"
/usr/bin/time -v "$B/baton" audit verify "$DIR"/export/stdout-*.json --pubkey "$DIR/pub.pem" \
    > "$DIR/out.txt" 2> "$DIR/time.txt" || { cat "$DIR/out.txt" "$DIR/time.txt"; exit 1; }
head -2 "$DIR/out.txt"
grep -E "Elapsed|Maximum resident|User time|System time" "$DIR/time.txt"
echo "files in $DIR"

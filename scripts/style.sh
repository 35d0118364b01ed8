#!/bin/sh
# Checks what .editorconfig declares for the project's own source files (C,
# Python, shell, autotools, JavaScript): LF line ends, a final newline, no
# trailing white space, and no tab indentation outside Makefile.am. Prints each
# offending file:line and exits 1; test data (tests/vectors, fuzz corpora) is
# not checked.
cd "$(dirname "$0")/.." || exit 2
files=$(git ls-files -- '*.c' '*.h' '*.py' '*.sh' '*.mjs' '*.ac' '*.am' '.ci/run' 2>/dev/null |
        grep -v -e '^tests/vectors/' -e '^tests/fuzz/corpus/')
[ -n "$files" ] || { echo "style: no files (not a git checkout?)" >&2; exit 2; }
bad=0
for f in $files; do
    [ -f "$f" ] || continue
    if grep -nI "$(printf '\r')" "$f" /dev/null | head -n 3 | sed 's/$/  (CR line end)/' | grep .; then bad=1; fi
    if grep -nI '[[:blank:]]$' "$f" /dev/null | head -n 3 | sed 's/$/  (trailing white space)/' | grep .; then bad=1; fi
    case "$f" in
    *.am) ;;
    *) if grep -nI "^$(printf '\t')" "$f" /dev/null | head -n 3 | sed 's/$/  (tab indentation)/' | grep .; then bad=1; fi ;;
    esac
    if [ -s "$f" ] && [ "$(tail -c 1 "$f" | od -An -c | tr -d ' ')" != '\n' ]; then
        echo "$f: no newline at end of file"; bad=1
    fi
done
[ $bad -eq 0 ] && echo "style: $(echo "$files" | wc -l) files follow .editorconfig"
exit $bad

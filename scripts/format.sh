#!/bin/sh
# Formats baton's own C (src/, tests/unit/, tests/fuzz/, bench/) with
# clang-format and the repository's .clang-format, in place.
#   scripts/format.sh [FILE...]          format these files (default: all of them)
#   scripts/format.sh --check [FILE...]  change nothing; name each file that
#                                        differs with the count of its lines that
#                                        would change, and exit 1 if any does
# Exit 2: clang-format missing (scripts/deps.sh installs it) or a bad argument.
# .clang-format is written for clang-format 14 (Debian 12); another major
# version may lay out a few constructs differently, so CI checks with 14.
cd "$(dirname "$0")/.." || exit 2
cf=${CLANG_FORMAT:-clang-format}
style="--style=file:$(pwd)/.clang-format" # wherever the files are
check=0
if [ "${1:-}" = "--check" ]; then
    check=1
    shift
fi
case "${1:-}" in
-*) echo "usage: scripts/format.sh [--check] [FILE...]" >&2; exit 2 ;;
esac
command -v "$cf" >/dev/null 2>&1 || {
    echo "format: $cf not found (scripts/deps.sh installs clang-format)" >&2
    exit 2
}
if [ $# -gt 0 ]; then
    files="$*"
elif git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    files=$(git ls-files -- 'src/*.[ch]' 'tests/unit/*.[ch]' 'tests/fuzz/*.[ch]' 'bench/*.[ch]')
else # a release tarball: no git
    files=$(find src tests/unit tests/fuzz bench -maxdepth 1 -name '*.[ch]' 2>/dev/null | sort)
fi
[ -n "$files" ] || { echo "format: no files" >&2; exit 2; }

if [ $check -eq 0 ]; then
    # shellcheck disable=SC2086
    exec "$cf" -i "$style" $files
fi
bad=0
tmp=$(mktemp) || exit 2
trap 'rm -f "$tmp"' EXIT
for f in $files; do
    [ -f "$f" ] || { echo "format: $f: no such file" >&2; bad=2; continue; }
    "$cf" "$style" "$f" >"$tmp" || { echo "format: $cf failed on $f" >&2; bad=2; continue; }
    if ! cmp -s "$f" "$tmp"; then
        echo "$f: $(diff "$f" "$tmp" | grep -c '^<') lines differ from .clang-format"
        [ $bad -eq 2 ] || bad=1
    fi
done
[ $bad -eq 0 ] && echo "format: $(echo "$files" | wc -w) files follow .clang-format ($("$cf" --version | sed 's/.*version //'))"
[ $bad -eq 1 ] && echo "format: run scripts/format.sh to fix" >&2
exit $bad

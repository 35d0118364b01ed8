#!/bin/sh
# Runs the end-to-end suite (pytest on Debian's /usr/bin/python3) against the
# real binary built in $BATON_BUILDDIR.
set -e
: "${BATON_SRCDIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${BATON_BUILDDIR:=$BATON_SRCDIR}"
export BATON_SRCDIR BATON_BUILDDIR
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider "$BATON_SRCDIR/tests/e2e" ${PYTEST_ARGS:-}

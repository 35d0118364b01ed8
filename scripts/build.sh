# Sourced by scripts/test.sh and scripts/demo.sh: build_dir DIR CONFIGURE-ARGS...
# makes DIR an out-of-tree (VPATH) build of this checkout configured with exactly
# those arguments, reconfiguring when they changed, so that a sanitizer build and
# a release build live side by side and neither script tests what the other built.
build_dir() {
    dir=$1
    shift
    if [ -f config.status ]; then
        echo "this checkout is configured in place (./config.status); VPATH builds under build/ need it clean: run 'make distclean' first" >&2
        exit 2
    fi
    [ -x configure ] && [ configure -nt configure.ac ] && [ configure -nt Makefile.am ] ||
        autoreconf -fi >/dev/null 2>&1
    mkdir -p "$dir"
    want="$*"
    have=$(sed -n 's/^ac_cs_config=.\(.*\).$/\1/p' "$dir/config.status" 2>/dev/null | sed "s/'//g")
    if [ ! -f "$dir/Makefile" ] || [ "$have" != "$want" ]; then
        src=$(pwd)
        (cd "$dir" && "$src/configure" "$@" >/dev/null)
    fi
}

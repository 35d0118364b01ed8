"""The built binary carries the hardening configure turns on by default
(Debian's dpkg-buildflags set): position-independent executable, full RELRO
(relro + bind now), stack protector, and _FORTIFY_SOURCE in builds without a
sanitizer or coverage. Read from the ELF itself with binutils' readelf."""
import re
import subprocess

import pytest

from conftest import BATON, BUILDDIR


def configure_args():
    status = (BUILDDIR / "config.status").read_text()
    m = re.search(r"^ac_cs_config='(.*)'$", status, re.M)
    return m.group(1) if m else ""


def readelf(*flags):
    return subprocess.run(["readelf", "-W", *flags, str(BATON)], capture_output=True,
                          text=True, check=True).stdout


@pytest.fixture(scope="module")
def hardened():
    args = configure_args()
    if "--disable-hardening" in args:
        pytest.skip("configured with --disable-hardening")
    return args


def test_pie(hardened):
    assert re.search(r"Type:\s+DYN", readelf("-h")), "baton is not a position-independent executable"


def test_full_relro(hardened):
    assert "GNU_RELRO" in readelf("-l"), "no GNU_RELRO segment"
    dyn = readelf("-d")
    assert re.search(r"\(FLAGS\)\s+BIND_NOW", dyn) or re.search(r"\(FLAGS_1\).*\bNOW\b", dyn), \
        "no BIND_NOW: RELRO is partial"


def test_stack_protector(hardened):
    assert "__stack_chk_fail" in readelf("--dyn-syms"), "no stack protector"


def test_fortify_source(hardened):
    if any(a in hardened for a in ("--enable-asan", "--enable-tsan", "--enable-coverage")):
        pytest.skip("_FORTIFY_SOURCE is left out of sanitizer and coverage builds")
    assert re.search(r"__\w+_chk@", readelf("--dyn-syms")), "no fortified (_chk) calls"

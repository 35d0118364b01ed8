"""scripts/format.sh: --check changes nothing, names each file that differs from
.clang-format and exits 1; without --check it formats in place, after which the
check passes; the repository's .clang-format applies wherever the file is; a
missing clang-format is exit 2, never a silent pass."""
import shutil
import subprocess

import pytest

from conftest import SRCDIR

FORMAT = SRCDIR / "scripts" / "format.sh"

# Laid out as .clang-format wants (4-space indent, Linux braces, case at the
# switch's indentation, right-aligned pointers).
CLEAN = """static int f(const char *s, int n)
{
    switch (n) {
    case 0:
        return s[0];
    default:
        break;
    }
    return -1;
}
"""
# The same code as LLVM's default style would lay it out: what a file outside
# the repository gets when the repository's .clang-format is not the one used.
MESSY = """static int f(const char* s,int n) {
  switch(n){
    case 0: return s[0];
    default: break;
  }
  return -1;
}
"""


def run(*args, env=None):
    return subprocess.run(["sh", str(FORMAT), *args], capture_output=True, text=True,
                          timeout=60, env=env)


@pytest.fixture(scope="module")
def clang_format():
    if not shutil.which("clang-format"):
        pytest.skip("clang-format is not installed (scripts/deps.sh installs it)")


def test_check_passes_a_formatted_file(clang_format, tmp_path):
    f = tmp_path / "clean.c"
    f.write_text(CLEAN)
    r = run("--check", str(f))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 files follow .clang-format" in r.stdout
    assert f.read_text() == CLEAN


def test_check_names_a_file_that_differs_and_changes_nothing(clang_format, tmp_path):
    clean, messy = tmp_path / "clean.c", tmp_path / "messy.c"
    clean.write_text(CLEAN)
    messy.write_text(MESSY)
    r = run("--check", str(clean), str(messy))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{messy}: " in r.stdout and "lines differ" in r.stdout
    assert str(clean) not in r.stdout
    assert messy.read_text() == MESSY, "--check must not write"


def test_format_in_place_then_check_passes(clang_format, tmp_path):
    f = tmp_path / "messy.c"
    f.write_text(MESSY)
    r = run(str(f))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f.read_text() == CLEAN
    assert run("--check", str(f)).returncode == 0


def test_missing_clang_format_is_an_error(tmp_path):
    f = tmp_path / "clean.c"
    f.write_text(CLEAN)
    r = run("--check", str(f), env={"PATH": "/usr/bin:/bin", "CLANG_FORMAT": "no-such-clang-format"})
    assert r.returncode == 2
    assert "not found" in r.stderr


def test_unknown_option_is_a_usage_error(tmp_path):
    r = run("--fix")
    assert r.returncode == 2 and "usage" in r.stderr

"""The command dispatcher: version, help and unknown commands."""
from conftest import run_baton


def test_version_prints_name_and_version_and_exits_0():
    r = run_baton("version")
    assert r.returncode == 0
    assert r.stdout.startswith("baton ")
    assert r.stdout.strip().split()[1][0].isdigit()


def test_unknown_command_exits_2_with_usage_on_stderr():
    r = run_baton("frobnicate")
    assert r.returncode == 2
    assert 'unknown command "frobnicate"' in r.stderr
    assert "usage:" in r.stderr


def test_no_arguments_exits_2():
    assert run_baton().returncode == 2


def test_help_exits_0_and_lists_every_command():
    r = run_baton("--help")
    assert r.returncode == 0
    for cmd in ("serve", "check", "explain", "audit verify", "version"):
        assert "baton " + cmd in r.stdout

"""Shared fixtures of the end-to-end suite: where the real binary and the
sample files are. Every e2e test runs the built `baton` as a subprocess."""
import os
import pathlib
import subprocess

import pytest

SRCDIR = pathlib.Path(os.environ.get("BATON_SRCDIR", pathlib.Path(__file__).resolve().parents[2]))
BUILDDIR = pathlib.Path(os.environ.get("BATON_BUILDDIR", SRCDIR))
BATON = BUILDDIR / "baton"


def run_baton(*args, env=None, timeout=30, input=None):
    """Runs `baton ARGS...` and returns the CompletedProcess (text mode)."""
    full_env = dict(os.environ)
    full_env.pop("BATON_CONFIG", None)
    if env:
        full_env.update(env)
    return subprocess.run([str(BATON), *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, input=input)


@pytest.fixture
def baton():
    return run_baton


@pytest.fixture(scope="module")
def up():
    """An echoing upstream (tests/e2e/upstream.py) shared by a test module;
    a module that needs another kind defines its own `up`."""
    from upstream import Upstream
    u = Upstream().start()
    yield u
    u.stop()

"""Helpers shared by test_check.py and test_explain.py: a temporary config
directory built from the sample conf/baton.json with its own policies/, and
positions of substrings in a text (1-based line and column, as baton prints
them), so that expected file:line:column values are computed from the fixture
text, not copied from baton's output."""
import json
import pathlib

from conftest import SRCDIR

SAMPLE_CONFIG = SRCDIR / "conf" / "baton.json"
SAMPLE_POLICIES = SRCDIR / "policies"


def sample_config():
    return json.loads(SAMPLE_CONFIG.read_text())


def issuer_iss(name):
    """The `iss` of the sample config's issuer `name`."""
    for i in sample_config()["issuers"]:
        if i["name"] == name:
            return i["issuer"]
    raise KeyError(name)


def make_config_dir(tmp_path, policies):
    """Writes tmp_path/baton.json (the sample config, policies: "policies")
    and tmp_path/policies/<name> for each (name, text) in `policies`.
    Returns the config path."""
    cfg = sample_config()
    cfg["policies"] = "policies"
    pdir = tmp_path / "policies"
    pdir.mkdir(exist_ok=True)
    for name, text in policies.items():
        (pdir / name).write_text(text)
    path = tmp_path / "baton.json"
    path.write_text(json.dumps(cfg, indent=2))
    return path


def pos(text, needle, occurrence=1):
    """'line:col' of the `occurrence`-th `needle` in `text` (1-based)."""
    i = -1
    for _ in range(occurrence):
        i = text.index(needle, i + 1)
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    return f"{line}:{col}"


def minimal_policy(step="s", prefix="/s/", host="*", mode="enforce", upstream="billing"):
    return json.dumps({
        "step": step,
        "mode": mode,
        "route": {"host": host, "path_prefix": prefix},
        "upstream": upstream,
        "callers": [{"issuer": "aws", "claims": {"sub": "arn:aws:iam::123456789012:role/x"}}],
        "allow": [{"methods": ["GET"], "paths": [prefix.rstrip("/") + "/**"]}],
    }, indent=2)

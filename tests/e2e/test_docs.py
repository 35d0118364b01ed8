"""Docs that work when pasted (issue 13): every JSON block in README.md and
docs/*.md is a fenced block whose info string says what it is, and is checked:

  ```json            a complete JSON text. A main config (it has "issuers") or a
                     step policy (it has "step") goes through `baton check` in a
                     temp directory with the files it references; anything else
                     (an audit record: "seq" and "kind") through the JSON parser.
  ```json fragment   members of an object: `{` + block + `}` must parse; when
                     every member is a main-config key, the members are merged
                     into conf/baton.json and the result goes through `baton check`.
  ```jsonc           an annotated example (docs/spec.md, the contract): the line
                     before says so; without its `//` comments it must parse.

An indented code block that starts like JSON is refused: it cannot be marked.
Also checks README's install paragraph against `make install DESTDIR=...`."""
import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import BATON, BUILDDIR, SRCDIR, run_baton

DOCS = [SRCDIR / "README.md"] + sorted((SRCDIR / "docs").glob("*.md"))
SAMPLE_CONFIG = SRCDIR / "conf" / "baton.json"


def blocks(path):
    """(line, info, text, previous non-blank line) of every fenced block, and
    the line of every indented block that starts with {, [ or "."""
    lines = path.read_text().split("\n")
    fenced, indented = [], []
    i = 0
    prev_text = ""
    while i < len(lines):
        m = re.match(r"^(\s*)```(.*)$", lines[i])
        if m:
            indent, info = len(m.group(1)), m.group(2).strip()
            j = i + 1
            while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
                j += 1
            body = "\n".join(l[indent:] for l in lines[i + 1:j])
            fenced.append((i + 1, info, body, prev_text))
            i = j + 1
            continue
        if (lines[i].startswith("    ") and (i == 0 or lines[i - 1].strip() == ""
                                             or lines[i - 1].startswith("#"))
                and lines[i].strip()[:1] in ('{', '[', '"')
                and not re.match(r"^\s*([-*]|\d+\.)\s", prev_text)):
            indented.append(i + 1)
        if lines[i].strip():
            prev_text = lines[i]
        i += 1
    return fenced, indented


def json_blocks():
    out = []
    for path in DOCS:
        fenced, _ = blocks(path)
        for line, info, body, prev in fenced:
            if info.split(" ")[0] in ("json", "jsonc"):
                out.append(pytest.param(path, line, info, body, prev,
                                        id="%s:%d" % (path.name, line)))
    return out


def strip_comments(text):
    """Removes // comments outside JSON strings."""
    out = []
    for line in text.split("\n"):
        res, in_str, k = [], False, 0
        while k < len(line):
            c = line[k]
            if in_str:
                res.append(c)
                if c == "\\" and k + 1 < len(line):
                    res.append(line[k + 1])
                    k += 1
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
                res.append(c)
            elif line.startswith("//", k):
                break
            else:
                res.append(c)
            k += 1
        out.append("".join(res))
    return "\n".join(out)


def jwks_doc():
    key = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    import base64

    def b64(n):
        return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()
    return json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": "docs", "alg": "ES256",
                                 "x": b64(key.x), "y": b64(key.y)}]})


def check_config(tmp, cfg, policies=None):
    """Writes cfg (a dict) as tmp/baton.json with what it references, runs check."""
    for iss in cfg.get("issuers", []):
        if "jwks_file" in iss:
            f = tmp / iss["jwks_file"]
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(jwks_doc())
    pdir = tmp / cfg.get("policies", "policies")
    if policies is None:
        shutil.copytree(SRCDIR / "policies", pdir, dirs_exist_ok=True)
    else:
        pdir.mkdir(parents=True, exist_ok=True)
        for name, text in policies.items():
            (pdir / name).write_text(text)
    (tmp / "baton.json").write_text(json.dumps(cfg, indent=2))
    return run_baton("check", "-c", tmp / "baton.json")


def sample_config():
    cfg = json.loads(SAMPLE_CONFIG.read_text())
    cfg["policies"] = "policies"
    return cfg


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_no_unmarked_json_block(path):
    _, indented = blocks(path)
    assert not indented, ("%s: indented code blocks at lines %s look like JSON; make them fenced "
                          "```json (a complete file), ```json fragment or ```jsonc (annotated)"
                          % (path.name, indented))


def test_the_docs_have_json_blocks_to_check():
    infos = [p.values[2] for p in json_blocks()]
    assert infos.count("json") >= 3 and "json fragment" in infos and "jsonc" in infos, infos


@pytest.mark.parametrize("path,line,info,body,prev", json_blocks())
def test_json_block_is_valid(tmp_path, path, line, info, body, prev):
    where = "%s:%d" % (path.name, line)
    if info == "jsonc":
        assert "annotated" in prev.lower(), where + ": a ```jsonc block is introduced as annotated"
        json.loads(strip_comments(body))
        return
    if info == "json fragment":
        members = json.loads("{" + body + "}")
        base = sample_config()
        if set(members) <= set(base) | {"access_log", "drain_timeout_ms"}:
            base.update(members)
            r = check_config(tmp_path, base)
            assert r.returncode == 0, where + ": merged into conf/baton.json: " + r.stderr
        return
    assert info == "json", where + ": unknown info string " + info
    doc = json.loads(body)
    if isinstance(doc, dict) and "issuers" in doc:
        r = check_config(tmp_path, doc)
        assert r.returncode == 0, where + ": " + r.stderr
    elif isinstance(doc, dict) and "seq" in doc and "kind" in doc:
        pass  # an audit record: the parser was the check
    elif isinstance(doc, dict) and "step" in doc:
        r = check_config(tmp_path, sample_config(), {"doc.json": body})
        assert r.returncode == 0, where + ": " + r.stderr
        assert r.stderr == "", where + ": warnings: " + r.stderr


def test_a_broken_block_would_be_caught(tmp_path):
    """The checker itself: a // comment in a ```json block, an unmarked
    indented block, and a policy naming an unknown upstream all fail."""
    doc = tmp_path / "x.md"
    doc.write_text('Text.\n\n```json\n{"a": 1, // no\n "b": 2}\n```\n\n'
                   'More.\n\n    {"indented": true}\n')
    fenced, indented = blocks(doc)
    assert indented == [10]
    with pytest.raises(ValueError):
        json.loads(fenced[0][2])
    pol = json.dumps({"step": "x", "route": {"path_prefix": "/x/"}, "upstream": "nope",
                      "callers": [{"issuer": "aws", "claims": {"sub": "x"}}],
                      "allow": [{"methods": ["GET"], "paths": ["/x/*"]}]})
    r = check_config(tmp_path, sample_config(), {"doc.json": pol})
    assert r.returncode == 1


def test_make_install_puts_the_one_binary_where_readme_says(tmp_path):
    readme = (SRCDIR / "README.md").read_text()
    assert "make install" in readme and "/usr/local/bin/baton" in readme
    makefile = BUILDDIR / "Makefile"
    if not makefile.exists():
        pytest.skip("no configured build tree")
    prefix = re.search(r"^prefix = (.*)$", makefile.read_text(), re.M).group(1)
    env = dict(os.environ)
    env.pop("MAKEFLAGS", None)  # not the jobserver of an enclosing `make check`
    env.pop("MFLAGS", None)
    stage = tmp_path / "stage"
    r = subprocess.run(["make", "-C", str(BUILDDIR), "install", "DESTDIR=" + str(stage)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file())
    assert files == [prefix.lstrip("/") + "/bin/baton"], files
    installed = stage / prefix.lstrip("/") / "bin" / "baton"
    assert os.access(installed, os.X_OK)
    v = subprocess.run([str(installed), "version"], capture_output=True, text=True, timeout=30)
    assert v.returncode == 0 and v.stdout.startswith("baton ")
    if prefix == "/usr/local":
        assert "DESTDIR=/tmp/stage" in readme and "/tmp/stage/usr/local/bin/baton" in readme
    r = subprocess.run(["make", "-C", str(BUILDDIR), "uninstall", "DESTDIR=" + str(stage)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and not installed.exists(), "make uninstall removes it"


def test_the_samples_copied_as_readme_says_pass_check(tmp_path):
    """README: copy conf/baton.json and policies/ into /etc/baton (here a temp
    dir), set "policies": "policies", run check."""
    etc = tmp_path / "etc" / "baton"
    etc.mkdir(parents=True)
    cfg = json.loads(SAMPLE_CONFIG.read_text())
    assert cfg["policies"] == "../policies", "README describes the sample's policies path"
    cfg["policies"] = "policies"
    (etc / "baton.json").write_text(json.dumps(cfg))
    shutil.copytree(SRCDIR / "policies", etc / "policies")
    r = run_baton("check", "-c", etc / "baton.json")
    assert r.returncode == 0, r.stderr

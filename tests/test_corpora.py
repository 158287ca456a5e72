"""The shipped corpora: the same documents and split on every Python, and refused when altered."""

from __future__ import annotations

import glob
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from offloadbench import corpora
from offloadbench.config import load_config


def interpreters() -> dict[str, str]:
    """CPython 3.11, 3.12 and 3.13 found on this machine (pyenv or PATH), by minor version."""
    found = {platform.python_version_tuple()[1]: sys.executable}
    for minor in ("11", "12", "13"):
        candidates = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/3.{minor}.*/bin/python3")))
        candidates.append(shutil.which(f"python3.{minor}") or "")
        for exe in candidates:
            if exe and "/shims/" not in exe:  # a pyenv shim answers only for the active version
                found.setdefault(minor, exe)
    return found


def default_fractions() -> set[float]:
    config = load_config()
    return {config["dataset"]["validation_fraction"], config["model"]["pretrain"]["dataset"]["validation_fraction"]}


@pytest.mark.parametrize("fraction", sorted(default_fractions()))
def test_corpus_step_gives_the_same_bytes_on_every_interpreter(fraction):
    pythons = interpreters()
    if len(pythons) < 2:
        pytest.skip(f"only Python 3.{next(iter(pythons))} here; install pyenv's 3.12/3.13 to compare")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    outputs = {}
    for minor, exe in sorted(pythons.items()):
        done = subprocess.run(
            [exe, "-m", "offloadbench.corpora", "check", str(fraction)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{exe}: {done.stderr}"
        outputs[minor] = json.loads(done.stdout)
    print({m: o["python"] for m, o in outputs.items()})
    splits = {m: o["splits"] for m, o in outputs.items()}
    assert len({json.dumps(s, sort_keys=True) for s in splits.values()}) == 1, splits
    assert splits[platform.python_version_tuple()[1]] == corpora.check(fraction)


def test_the_shipped_text_is_what_cpython_3_11_7_extracts():
    """Provenance: the files are exactly the extraction the manifest names, not an edited copy."""
    manifest = corpora.manifest()
    assert {e["extracted_from"] for e in manifest.values()} == {"CPython 3.11.7"}
    if platform.python_version() != "3.11.7":
        pytest.skip(f"this is Python {platform.python_version()}; the shipped text comes from 3.11.7")
    assert corpora.extract_pydoc() == corpora.load("pydoc")
    assert corpora.extract_stdlib_docstrings() == corpora.load("stdlib_docstrings")


def test_a_corpus_that_is_not_its_manifests_text_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "corpora"
    shutil.copytree(Path(corpora.__file__).parent, copy)
    monkeypatch.setattr(corpora, "HERE", copy)
    monkeypatch.setattr(corpora, "MANIFEST", copy / "manifest.json")
    docs = corpora.load("pydoc")
    docs[sorted(docs)[0]] += " edited"
    import gzip

    (copy / corpora.FILES["pydoc"]).write_bytes(gzip.compress(corpora._canonical(docs)))
    with pytest.raises(corpora.CorpusError, match=r"pydoc-topics\.json\.gz: sha256 .* its manifest says"):
        corpora.load("pydoc")
    (copy / corpora.FILES["stdlib_docstrings"]).unlink()
    with pytest.raises(corpora.CorpusError, match=r"stdlib-docstrings\.json\.gz cannot be read"):
        corpora.load("stdlib_docstrings")
    with pytest.raises(corpora.CorpusError, match="no shipped corpus 'wiki'"):
        corpora.load("wiki")


def test_the_corpora_module_needs_only_the_standard_library():
    imported = subprocess.run(
        [sys.executable, "-S", "-c", "import offloadbench.corpora, sys; print(sorted(sys.modules))"],
        env={"PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for heavy in ("yaml", "numpy", "torch", "datasets"):
        assert f"'{heavy}'" not in imported

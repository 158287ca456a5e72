"""environment.yml (conda, for users without Docker) agrees with the lock, the Makefile and the
Dockerfile: the same requirements.lock, the project itself, and the same Python."""

from __future__ import annotations

import json
import re
import sys

import pytest
import yaml
from conftest import REPO
from dockerfile_parse import DockerfileParser

ENV_FILE = REPO / "environment.yml"
LOCK = REPO / "requirements.lock"
# conda packages that the lock cannot provide (not Python packages on PyPI's side of the lock)
CONDA_ONLY = {"python", "pip", "libaio"}


@pytest.fixture(scope="module")
def env() -> dict:
    return yaml.safe_load(ENV_FILE.read_text())


def conda_deps(env: dict) -> dict[str, str | None]:
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            name, _, version = dep.partition("=")
            out[name.strip()] = version.lstrip("=").strip() or None
    return out


def pip_section(env: dict) -> list[str]:
    sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "one pip section"
    return sections[0]


def lock_names() -> set[str]:
    return {
        line.split("==")[0].strip().lower().replace("_", "-")
        for line in LOCK.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }


def test_pip_section_installs_the_lock_and_the_project(env):
    pip = pip_section(env)
    assert pip == ["-r requirements.lock", "-e ."], pip
    # conda runs the pip section in the environment file's folder: the same lock file as the Makefile's.
    assert (ENV_FILE.parent / "requirements.lock").resolve() == LOCK.resolve()
    assert "-r requirements.lock" in (REPO / "Makefile").read_text()
    # editable, as in `make setup`: offloadbench.config finds configs/ and workflow/ beside src/
    assert (ENV_FILE.parent / "pyproject.toml").is_file()


def test_conda_adds_nothing_the_lock_pins(env):
    deps = conda_deps(env)
    assert {"python", "pip"} <= set(deps)
    assert set(deps) <= CONDA_ONLY, f"{sorted(set(deps) - CONDA_ONLY)}: Python packages come from the lock only"
    assert not (set(deps) - {"python", "pip"}) & lock_names()
    assert "conda-forge" in env["channels"] and "defaults" not in env["channels"]


def test_libaio_for_nvme_offload(env):
    assert "libaio" in conda_deps(env), "DeepSpeed's async_io (NVMe offload) links against libaio"


def test_one_python_for_conda_docker_the_lock_and_the_references(env):
    conda_python = conda_deps(env)["python"]
    assert conda_python and re.fullmatch(r"3\.11\.\d+", conda_python), "an exact 3.11 release"
    # The image uses its base's own Python (apt): the corpus is shipped text (offloadbench.corpora),
    # the same on every Python, so no particular release has to be built from source.
    dockerfile = DockerfileParser(path=str(REPO / "Dockerfile"))
    assert "PYTHON_VERSION" not in dockerfile.args and "python3-venv" in dockerfile.content
    # the reference results were recorded with this Python
    recorded = {
        json.loads(p.read_text()).get("versions", {}).get("python")
        for p in (REPO / "results" / "reference").rglob("*.json")
    } - {None}
    assert recorded <= {conda_python}, recorded
    # the lock was resolved for (and the tests run on) the same minor release
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == conda_python.rsplit(".", 1)[0]
    makefile = (REPO / "Makefile").read_text()
    assert not re.search(r"python3\.(?!11\b)\d+", makefile), "the Makefile names no other Python"
    readme = (REPO / "README.md").read_text()
    assert "Python 3.11" in readme


def test_rules_conda_environment_is_the_same_python_and_lock_seen_from_snakemakes_copy(env):
    """Snakemake copies a rule's env file to .snakemake/conda/<hash>.yaml and conda runs pip there:
    the rules' file must reach the same lock and project from that folder."""
    rules_env = yaml.safe_load((REPO / "workflow" / "envs" / "offloadbench.yaml").read_text())
    assert conda_deps(rules_env) == conda_deps(env)
    copied_to = REPO / ".snakemake" / "conda"
    requirement, project = pip_section(rules_env)
    assert requirement.startswith("-r ") and project.startswith("-e ")
    assert (copied_to / requirement[3:]).resolve() == LOCK
    assert (copied_to / project[3:]).resolve() == REPO
    for rules in (REPO / "workflow" / "rules").glob("*.smk"):
        text = rules.read_text()
        assert text.count('conda:\n        "../envs/offloadbench.yaml"') == text.count("\nrule "), rules.name


def test_snakemake_of_the_virtualenv_runs_its_jobs_without_activation(tmp_path):
    """`env -i PATH=/usr/bin:/bin .venv/bin/snakemake`: the jobs' `python -m offloadbench...` must
    be the interpreter Snakemake runs in, not whatever python PATH has (none with offloadbench)."""
    import subprocess

    from conftest import BIN, REPO

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--cores", "1"]
    proc = subprocess.run([*cmd, "results/corpus/pydoc-topics"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "results" / "corpus" / "pydoc-topics" / "manifest.json").is_file()
    # What Snakemake says after a kill needs no --cores either.
    unlock = subprocess.run([*cmd[:-2], "--unlock"], capture_output=True, text=True, env=env, timeout=300)
    assert unlock.returncode == 0, unlock.stderr[-2000:]

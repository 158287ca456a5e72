"""The workflow deletes only what it created: swap folders with their owner's marker, its own
results/<step>/ folders; a user's folder, file or results/reference/ survives everything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from offloadbench import owned
from offloadbench.config import load_config
from offloadbench.errors import ConfigError

CANARY = "the user's file: must survive\n"


def canary(folder: Path, name: str = "canary.txt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(CANARY)
    return folder / name


def test_a_claimed_folder_is_removed_with_what_it_created_and_nothing_else(tmp_path):
    user = tmp_path / "nvme"
    keep = canary(user)
    owner = owned.owner_record("zero3_offload_nvme", tmp_path / "results" / "runs" / "zero3_offload_nvme")
    swap = owned.swap_dir(user / "deep" / "er", "zero3_offload_nvme", owner["run_folder"])
    owned.claim(swap, owner, "nvme_dir")
    (swap / "zero_stage_3" / "fp32params").mkdir(parents=True)
    (swap / "zero_stage_3" / "fp32params" / "0.tensor.swp").write_bytes(b"x" * 100)
    assert owned.remove_owned(swap, owner)
    assert not swap.exists() and not (user / "deep").exists(), "the parents it made go while empty"
    assert keep.read_text() == CANARY and user.is_dir()


def test_a_parent_that_a_user_filled_meanwhile_stays(tmp_path):
    owner = owned.owner_record("r", tmp_path / "runs" / "r")
    swap = owned.claim(owned.swap_dir(tmp_path / "made" / "by-run", "r", owner["run_folder"]), owner, "nvme_dir")
    keep = canary(tmp_path / "made")
    assert owned.remove_owned(swap, owner)
    assert keep.read_text() == CANARY


def test_a_resumed_run_takes_its_own_folder_back(tmp_path):
    owner = owned.owner_record("r", tmp_path / "runs" / "r")
    swap = owned.swap_dir(tmp_path, "r", owner["run_folder"])
    owned.claim(swap, owner, "nvme_dir")
    (swap / "state.swp").write_bytes(b"1")
    assert owned.claim(swap, owner, "nvme_dir") == swap and (swap / "state.swp").exists()


@pytest.mark.parametrize("marker", [None, "other run", "other checkout", "not json"])
def test_a_folder_the_run_did_not_create_is_neither_used_nor_removed(tmp_path, marker):
    owner = owned.owner_record("r", tmp_path / "runs" / "r")
    swap = owned.swap_dir(tmp_path, "r", owner["run_folder"])
    keep = canary(swap)
    if marker == "other run":
        (swap / owned.MARKER).write_text(json.dumps({**owner, "run": "s"}))
    elif marker == "other checkout":
        (swap / owned.MARKER).write_text(json.dumps({**owner, "run_folder": "/elsewhere/results/runs/r"}))
    elif marker == "not json":
        (swap / owned.MARKER).write_text("{")
    with pytest.raises(owned.OwnershipError, match=r"nvme_dir.*already exists.*canary.txt"):
        owned.claim(swap, owner, "nvme_dir")
    assert not owned.remove_owned(swap, owner)
    assert keep.read_text() == CANARY


def test_a_symlinked_swap_folder_is_not_followed(tmp_path):
    owner = owned.owner_record("r", tmp_path / "runs" / "r")
    target = tmp_path / "target"
    owned.claim(target, owner, "nvme_dir")
    keep = canary(target)
    link = tmp_path / "link"
    link.symlink_to(target)
    assert not owned.remove_owned(link, owner)
    assert keep.read_text() == CANARY
    with pytest.raises(owned.OwnershipError, match="not a folder"):
        owned.claim(link, owner, "nvme_dir")


def test_ranks_claiming_at_once_get_one_folder(tmp_path):
    """Every rank of a run claims the same swap folder; the one rename makes that safe."""
    script = (
        "import sys; from offloadbench import owned; "
        "owner = owned.owner_record('r', sys.argv[1]); "
        "owned.claim(owned.swap_dir(sys.argv[2], 'r', sys.argv[1]), owner, 'nvme_dir')"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "runs" / "r"), str(tmp_path / "nvme")])
        for _ in range(6)
    ]
    assert [p.wait(60) for p in procs] == [0] * 6
    (swap,) = (tmp_path / "nvme").iterdir()
    assert [p.name for p in swap.iterdir()] == [owned.MARKER]


def _nvme_run(nvme_dir) -> dict:
    return {
        "runs": [
            {
                "name": "z",
                "method": "full",
                "deepspeed": "configs/deepspeed/zero3_offload_nvme.json",
                "nvme_dir": str(nvme_dir),
            }
        ],
        "baseline_run": "z",
    }


@pytest.mark.parametrize(
    "where, says",
    [
        ("/", "file system root"),
        ("~", "home directory"),
        (".", "working directory"),
        ("REPO", "the repository"),
        ("results", "results folder itself"),
        ("results/reference", "results/reference/"),
        ("results/reference/default", "results/reference/"),
        ("results/runs/z", "inside results/runs/"),
        ("results/data", "inside results/data/"),
    ],
)
def test_folders_no_run_may_write_in_are_refused_before_any_job(where, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = {"~": str(Path.home()), "REPO": str(REPO)}.get(where, where)
    with pytest.raises(ConfigError, match=rf"runs\[0\] \(z\)\.nvme_dir.*{says}"):
        load_config(overrides=_nvme_run(path))


def test_a_full_nvme_dir_of_the_user_is_fine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    canary(tmp_path / "fast-disk")
    load_config(overrides=_nvme_run(tmp_path / "fast-disk"))


def test_a_foreign_folder_where_the_swap_folder_would_go_is_refused_before_any_job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    swap = owned.swap_dir(tmp_path / "fast-disk", "z", tmp_path / "results" / "runs" / "z")
    canary(swap)
    with pytest.raises(ConfigError, match=rf"nvme_dir.*{swap.name} already exists.*canary.txt"):
        load_config(overrides=_nvme_run(tmp_path / "fast-disk"))


def test_clean_results_removes_only_what_the_workflow_wrote(tmp_path):
    """make clean-results on a results/ mounted from outside: the step folders, the claims, the
    swap folders that carry a marker (in results/nvme/ and anywhere a run's pointer names) go; the
    user's files, results/reference/ and a user's folder inside results/nvme/ stay."""
    results = tmp_path / "results"
    keep = [
        canary(results),
        canary(results / "reference" / "default"),
        canary(results / "nvme" / "mine"),
        canary(tmp_path / "fast-disk"),
    ]
    for step in owned.STEP_FOLDERS:
        (results / step / "x").mkdir(parents=True)
    (results / "claims.md").write_text("# Claims\n")
    owner = owned.owner_record("a", results / "runs" / "a")
    inside = owned.claim(owned.swap_dir(results / "nvme" / "a", "a", owner["run_folder"]), owner, "nvme_dir")
    owner_b = owned.owner_record("b", results / "runs" / "b")
    outside = owned.claim(owned.swap_dir(tmp_path / "fast-disk", "b", owner_b["run_folder"]), owner_b, "nvme_dir")
    (results / "runs" / "b").mkdir(parents=True)
    (results / "runs" / "b" / owned.SWAP_POINTER).write_text(json.dumps({"path": str(outside)}))
    (tmp_path / ".snakemake").mkdir()
    proc = subprocess.run(
        ["make", "--no-print-directory", "-C", str(tmp_path), "-f", str(REPO / "Makefile"), "clean-results"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert all(p.read_text() == CANARY for p in keep)
    assert not inside.exists() and not outside.exists() and not (results / "nvme" / "a").exists()
    assert sorted(p.name for p in results.iterdir()) == ["canary.txt", "nvme", "reference"]
    assert not (tmp_path / ".snakemake").exists()


@pytest.mark.parametrize("where", ["results/data/mine", "results/runs"])
def test_input_files_inside_a_folder_the_workflow_replaces_are_refused(tmp_path, monkeypatch, where):
    """Dataset files and a local model folder of the user's must not lie where the workflow writes
    (results/<step>/): `make clean-results` and every rerun would remove them."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / where
    keep = canary(folder)
    (folder / "train.txt").write_text("some text\n")
    files = {"format": "text", "train": f"{where}/train.txt", "validation": f"{where}/train.txt"}
    with pytest.raises(ConfigError, match=rf"dataset.files.train: {where}/train.txt is inside results/"):
        load_config(overrides={"dataset": {"source": "files", "files": files}})
    (folder / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=rf"model.hub.id: {where} is inside results/"):
        load_config(overrides={"model": {"source": "hub", "hub": {"id": where, "revision": "main"}}})
    assert keep.read_text() == CANARY


def test_input_folders_of_the_user_survive_the_data_step_and_clean_results(tmp_path, monkeypatch):
    """A files dataset in a folder of the user's (with their own file beside it): preparing the
    corpus reads it, `make clean-results` removes the corpus, the user's folder stays as it was."""
    from offloadbench.data import build_corpus

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "my-texts"
    keep = canary(folder)
    (folder / "train.txt").write_text("one document\n\nanother document\n" * 20)
    (folder / "valid.txt").write_text("a validation document\n" * 5)
    before = sorted(p.name for p in folder.iterdir())
    files = {"format": "text", "train": str(folder / "train.txt"), "validation": str(folder / "valid.txt")}
    ds = load_config(overrides={"dataset": {"source": "files", "files": files, "name": "mine"}})["dataset"]
    build_corpus(ds, tmp_path / "results" / "corpus" / "mine")
    assert (tmp_path / "results" / "corpus" / "mine").is_dir()
    make = ["make", "-C", str(tmp_path), "-f", str(REPO / "Makefile"), "clean-results"]
    proc = subprocess.run(make, capture_output=True)
    assert proc.returncode == 0
    assert not (tmp_path / "results" / "corpus").exists()
    assert sorted(p.name for p in folder.iterdir()) == before and keep.read_text() == CANARY


def test_every_folder_the_rules_write_is_one_that_clean_results_removes():
    """A rule writing results/<x>/ that STEP_FOLDERS lacks leaves stale outputs behind every
    `make clean-results` (results/specs/ did, until this test)."""
    import re

    rules = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    written = set(re.findall(r'"results/([^"/{]+)/', rules))
    files = set(re.findall(r'"results/([^"/{]+\.\w+)"', rules))
    assert {"runs", "specs", "benchmarks", "logs"} <= written
    assert written <= set(owned.STEP_FOLDERS), sorted(written - set(owned.STEP_FOLDERS))
    assert files <= set(owned.RESULT_FILES), sorted(files - set(owned.RESULT_FILES))

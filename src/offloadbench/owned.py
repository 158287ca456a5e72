"""Folders the workflow creates, and the only ones it ever deletes.

Every deletion in the package goes through one of two doors:

- ``remove_owned`` for a folder inside a folder the user named (today: a run's NVMe swap folder
  inside ``nvme_dir``). The folder is created by :func:`claim` with a marker file naming its owner
  (the run and its run folder); it is removed only when that marker is there and names the same
  owner. Folders the run had to create above it are removed afterwards only while they are empty.
- Paths under ``results/<step>/`` that a rule declared or the training job writes into its own run
  folder (checkpoints, the final model); ``clean`` removes those steps' folders and nothing else.

Paths a user could name by mistake (``/``, a home directory, the repository or working
directory, ``results/`` itself or ``results/reference/``) are refused before any job
(:func:`refuse_dangerous`). This module imports nothing beyond the standard library, so
``make clean-results`` needs no environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
from pathlib import Path

MARKER = ".offloadbench-owner.json"
REPO = Path(__file__).resolve().parents[2]

# results/<step>/ folders and results/ files that only the workflow writes (make clean-results
# removes them). results/nvme/ is not among them: it may hold a user's nvme_dir, so only swap
# folders whose marker says they are ours are removed there.
STEP_FOLDERS = (
    "corpus",
    "data",
    "models",
    "pretrain",
    "runs",
    "specs",
    "logs",
    "benchmarks",
    "tables",
    "figures",
    "memory",
    "compare",
    "eval",
    "hub",
)
RESULT_FILES = ("claims.json", "claims.md", "claims.html", "report.html")
# A run folder's pointer to the swap folder it created (so clean can find one outside results/).
SWAP_POINTER = "nvme_swap.json"


class OwnershipError(ValueError):
    """A folder the workflow would write into or delete is not one it created."""


def owner_record(run: str, run_folder: str | Path) -> dict:
    return {"tool": "offloadbench", "run": run, "run_folder": str(Path(run_folder).resolve())}


def swap_dir(nvme_dir: str | Path, run: str, run_folder: str | Path) -> Path:
    """The run's own swap folder inside the user's nvme_dir: named after the run, and unique per
    run folder, so two checkouts sharing one NVMe drive never meet in the same folder."""
    digest = hashlib.sha256(str(Path(run_folder).resolve()).encode()).hexdigest()[:10]
    return Path(nvme_dir).resolve() / f"offloadbench-{run}-{digest}"


def dangerous_paths(workdir: str | Path = ".") -> dict[Path, str]:
    """Folders that no output, swap folder or cache may be: path -> what it is."""
    workdir = Path(workdir).resolve()
    out = {Path("/"): "the file system root", REPO: "the repository", workdir: "the working directory"}
    out[workdir / "results"] = "the results folder itself"
    homes = {Path.home(), *(Path(os.environ[k]) for k in ("HOME",) if os.environ.get(k))}
    homes |= {Path(p.pw_dir) for p in pwd.getpwall() if p.pw_dir not in ("", "/")}
    for home in homes:
        out.setdefault(home.resolve(), "a home directory")
    return out


def refuse_dangerous(path: str | Path, key: str, workdir: str | Path = ".") -> None:
    """Raise OwnershipError if ``path`` is a folder nobody may hand the workflow to write in."""
    resolved = Path(workdir, path).resolve()
    workdir = Path(workdir).resolve()
    reference = workdir / "results" / "reference"
    if resolved == reference or reference in resolved.parents:
        raise OwnershipError(
            f"config key {key}: {path} is inside results/reference/, the shipped reference results; "
            "name a folder of its own, e.g. results/nvme/<run>"
        )
    what = dangerous_paths(workdir).get(resolved)
    if what:
        raise OwnershipError(
            f"config key {key}: {path} resolves to {resolved}, {what}; name a folder of its own, "
            "e.g. /mnt/nvme/offloadbench or results/nvme/<run>"
        )
    refuse_inside_steps(path, key, workdir, "use results/nvme/<run> or a folder outside results/")


def refuse_inside_steps(path: str | Path, key: str, workdir: str | Path = ".", instead: str = "") -> None:
    """A folder or file the user names (an input too) must not lie in a results/<step>/ folder:
    the workflow replaces those and `make clean-results` removes them."""
    workdir = Path(workdir).resolve()
    resolved = Path(workdir, path).resolve()
    for step in STEP_FOLDERS:
        folder = workdir / "results" / step
        if resolved == folder or folder in resolved.parents:
            raise OwnershipError(
                f"config key {key}: {path} is inside results/{step}/, which the workflow replaces and "
                f"`make clean-results` removes; {instead or 'keep your files outside results/'}"
            )


def read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def check_claimable(folder: str | Path, owner: dict, key: str) -> None:
    """``folder`` does not exist, or exists and was created for the same owner (a resumed run)."""
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not folder.is_dir():
        raise OwnershipError(f"config key {key}: {folder} exists and is not a folder; remove or rename it")
    marker = read_marker(folder)
    if marker is None or marker.get("run") != owner["run"] or marker.get("run_folder") != owner["run_folder"]:
        held = sorted(p.name for p in folder.iterdir())[:5]
        whose = f"run {marker.get('run')} of {marker.get('run_folder')}" if marker else "nobody the workflow knows"
        raise OwnershipError(
            f"config key {key}: {folder} already exists and belongs to {whose} (it holds {held}); "
            f"the run would write its swap files there and remove it when done. Move it away, or "
            "point nvme_dir at another folder"
        )


def claim(folder: str | Path, owner: dict, key: str) -> Path:
    """Create ``folder`` (and missing parents) for ``owner``, or take it back on a resume.

    Safe when several ranks claim the same folder at once: the folder appears by one rename with
    its marker already inside, so a rank that loses the race finds it complete and owned."""
    folder = Path(folder)
    check_claimable(folder, owner, key)
    if folder.is_dir():
        return folder
    created = []
    parent = folder.parent
    while not parent.exists():
        created.append(str(parent))
        parent = parent.parent
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.claim-{os.getpid()}"
    tmp.mkdir()
    try:
        (tmp / MARKER).write_text(json.dumps({**owner, "created_parents": created}, indent=2) + "\n")
        try:
            tmp.rename(folder)
        except OSError:
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    check_claimable(folder, owner, key)  # a rank that lost the race: the winner's must be ours too
    return folder


def remove_owned(folder: str | Path, owner: dict | None = None) -> bool:
    """Remove ``folder`` if its marker says the workflow created it (for ``owner``, when given),
    then the parents it created while they are empty. Returns whether it removed ``folder``."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return False
    marker = read_marker(folder)
    if marker is None or marker.get("tool") != "offloadbench":
        return False
    if owner is not None and (marker.get("run"), marker.get("run_folder")) != (owner["run"], owner["run_folder"]):
        return False
    shutil.rmtree(folder)
    for parent in marker.get("created_parents", []):
        try:
            Path(parent).rmdir()  # only while empty: a user's file added since keeps it
        except OSError:
            break
    return True


def clean(results: str | Path = "results", snakemake_dir: str | Path = ".snakemake") -> list[Path]:
    """Remove what the workflow wrote: its step folders and files under ``results``, the swap
    folders its runs created (wherever nvme_dir was) and Snakemake's metadata. Returns what went."""
    results = Path(results)
    removed = []
    swap_candidates = [Path(json.loads(p.read_text())["path"]) for p in results.glob(f"runs/*/{SWAP_POINTER}")]
    nvme = results / "nvme"
    if nvme.is_dir():
        swap_candidates += [p.parent for p in nvme.rglob(MARKER)]
    for folder in swap_candidates:
        if remove_owned(folder):
            removed.append(folder)
    for step in STEP_FOLDERS:
        folder = results / step
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
            removed.append(folder)
    for name in RESULT_FILES:
        if (results / name).is_file():
            (results / name).unlink()
            removed.append(results / name)
    if Path(snakemake_dir).is_dir():
        shutil.rmtree(snakemake_dir)
        removed.append(Path(snakemake_dir))
    return removed


def main() -> int:
    import sys

    results = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
    for path in clean(results):
        print(f"removed {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The package's shape: small modules, imports that go one way (no cycles, none hidden inside
functions), training code that never reaches the memory model, and light jobs that start fast."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

SRC = REPO / "src" / "offloadbench"
MODULES = sorted(SRC.rglob("*.py"))
HEAVY = ("torch", "transformers", "peft", "deepspeed", "bitsandbytes", "accelerate")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def offloadbench_imports(path: Path, top_level_only: bool) -> set[str]:
    """The offloadbench modules ``path`` imports (at module level only, or anywhere)."""
    tree = ast.parse(path.read_text())
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("offloadbench"):
                # `from . import owned` names a module; `from .io import write_json` names a member.
                for alias in node.names:
                    sub = f"{mod}.{alias.name}"
                    found.add(sub if is_module(sub) else mod)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("offloadbench")}
    return {m for m in found if m != module_name(path)}


def is_module(name: str) -> bool:
    path = SRC.parent / Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def with_parents(names: set[str]) -> set[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
    out = set()
    for name in names:
        parts = name.split(".")
        out |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
    return out


# The one import inside a function, for order and not to dodge a cycle: the training entry point
# imports the training code after it has read the run's spec, so that the libraries the run does not
# use are hidden before transformers loads (offloadbench.env.hide_libraries, ~1.2 s a job).
ORDERED = {"offloadbench.train": ["offloadbench.training.lifecycle", "offloadbench.training.run"]}
GRAPH = {
    module_name(p): offloadbench_imports(p, top_level_only=True) | set(ORDERED.get(module_name(p), [])) for p in MODULES
}


def reachable(start: str) -> set[str]:
    """Every module that importing ``start`` runs (a package's own sub-modules excepted when a
    sub-module imports its package: that is the package being set up, not a cycle)."""
    seen, todo = set(), [start]
    while todo:
        cur = todo.pop()
        for dep in with_parents(GRAPH.get(cur, set())):
            own_package = dep == cur or cur.startswith(dep + ".") or start.startswith(dep + ".")
            if dep not in seen and dep in GRAPH and not own_package:
                seen.add(dep)
                todo.append(dep)
    return seen


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_is_over_450_lines(path):
    assert len(path.read_text().splitlines()) <= 450


def test_the_import_graph_has_no_cycle():
    cycles = [m for m in GRAPH if m in reachable(m)]
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_no_function_imports_a_module_of_the_package():
    """Imports inside functions are for heavy libraries a job may not need, never to dodge a cycle
    (ORDERED: the one that is there for the order of imports)."""
    hidden = {
        module_name(p): sorted(offloadbench_imports(p, False) - offloadbench_imports(p, True))
        for p in MODULES
        if offloadbench_imports(p, False) - offloadbench_imports(p, True)
    }
    assert hidden == ORDERED


def test_training_never_imports_the_memory_model():
    for start in ("offloadbench.train", "offloadbench.training.run"):
        assert not {m for m in reachable(start) if m.startswith("offloadbench.memory")}, start


def test_the_graph_sees_the_imports_it_checks():
    """The checks above would pass on an empty graph: make sure they see real edges."""
    assert "offloadbench.training.run" in reachable("offloadbench.train")
    assert "offloadbench.memory.counting" in reachable("offloadbench.resolve")
    assert "offloadbench.owned" in reachable("offloadbench.config")


LIGHT = (
    "offloadbench.aggregate",
    "offloadbench.claims",
    "offloadbench.numbers",
    "offloadbench.figures",
    "offloadbench.reference",
    "offloadbench.memory.cli",
    "offloadbench.resolve",
    "offloadbench.config",
    "offloadbench.owned",
)


@pytest.mark.parametrize("module", LIGHT)
def test_light_jobs_import_nothing_heavy(module):
    code = f"import sys, {module}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "", f"{module} imports {out.strip()} at import time"

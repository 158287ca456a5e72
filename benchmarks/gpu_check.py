r"""GPU check: the project's CUDA paths on one CUDA GPU, in a few minutes, on a model built here.

    .venv/bin/python benchmarks/gpu_check.py --out results/gpu_check.json      # `make setup` on a CUDA machine
    docker run --gpus all --ipc=host -v "$PWD/results:/work/results" offloadbench \
        python benchmarks/gpu_check.py --out results/gpu_check.json              # in the image

On a CUDA machine that has torch, transformers, peft and accelerate but not bitsandbytes,
deepspeed or datasets (no network there), carry the locked versions as wheels:

    bash benchmarks/gpu_wheels.sh                 # here, with PyPI: .gpu-wheels/, under 64 MiB
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu-wheels/*.whl   # there
    for f in .gpu-wheels/*.deb; do dpkg -x "$f" /tmp/aio; done     # there, only if libaio-dev is missing
    export CPATH=/tmp/aio/usr/include LIBRARY_PATH=/tmp/aio/usr/lib/x86_64-linux-gnu \
        LD_LIBRARY_PATH=/tmp/aio/usr/lib/x86_64-linux-gnu
    PYTHONPATH=/tmp/site python3 benchmarks/gpu_check.py --out "$OUT/gpu_check.json"

Every check goes through the project's own code, as the workflow runs it: the data and the model
are built with offloadbench.data and offloadbench.model, the runs are specs built by
offloadbench.config.run_spec from configs/config.yaml and launched like the ``train`` rule
(``python -m offloadbench.train``, or torchrun for DeepSpeed), and the 4-bit model is loaded with
offloadbench.training.model.load_model.

  ops                 DeepSpeed's cpu_adam and async_io ops build and load (python -m offloadbench.ops)
  build               corpus (pydoc), tokenizer and a Llama model (~29 M parameters) built locally
  pretrain            full training on CUDA in bf16 (fp16 where the GPU has no bf16); loss decreases
  qlora_paged         QLoRA (NF4 base) with bitsandbytes' paged_adamw_32bit: observed 4-bit weights and,
                      on CUDA, paged optimizer state; loss decreases
  qlora_zero3_offload QLoRA with ZeRO-3: observed params/optimizer on cpu, 4-bit weights under ZeRO-3,
                      activations copied to the host, GPU peak below the no-offload prediction's margin
  zero3_offload_cpu   full fine-tuning, ZeRO-3: observed cpu/cpu and DeepSpeedCPUAdam; GPU peak as above
  zero3_offload_nvme  full fine-tuning, ZeRO-3: observed nvme/nvme, NVMe bytes written within 10% of the
                      memory model's; GPU peak as above
  qlora_4bit          Linear4bit weights packed in uint8 (two values a byte); the quantized model takes
                      less GPU memory than the same model in bf16
  nvml                NVML device name, driver and memory beside torch's counters; for every run
                      torch peak <= NVML peak <= torch reserved peak + 2 GiB (a handle on another card fails)

It prints a table (check, status, seconds, peak GPU GiB from torch, NVML GiB, notes) and, with
--out, writes JSON with the card, driver, CUDA and package versions. Exit status: 0 when every
check passed, 1 when one failed, 2 when it cannot run here (no CUDA GPU, a package missing).
``--allow-cpu`` runs the same harness on the CPU with a tiny model (CUDA-only criteria skipped),
to test the script itself on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
sys.path.insert(0, str(SRC))

GIB = 1024**3
# import name -> distribution, for the message when one is missing
REQUIRED = {
    "torch": "torch",
    "transformers": "transformers",
    "peft": "peft",
    "accelerate": "accelerate",
    "bitsandbytes": "bitsandbytes",
    "deepspeed": "deepspeed",
    "datasets": "datasets",
    "pynvml": "nvidia-ml-py",
    "tokenizers": "tokenizers",
    "safetensors": "safetensors",
    "yaml": "PyYAML",
    "psutil": "psutil",
}
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Model and step counts: "gpu" takes a few minutes on one H100; "tiny" is the CPU harness test.
SIZES = {
    "gpu": {
        "scratch": {
            "vocab_size": 4096,
            "hidden_size": 512,
            "intermediate_size": 1536,
            "num_hidden_layers": 8,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "max_position_embeddings": 256,
        },
        "block_size": 128,
        "pretrain_steps": 50,
        "steps": 12,
        "micro_batch_size": 8,
    },
    # The CPU harness trains the test profile's model (tests/configs/tiny.yaml), read from it.
    "tiny": {
        "profile": REPO / "tests" / "configs" / "tiny.yaml",
        "pretrain_steps": 20,
        "steps": 6,
        "micro_batch_size": 4,
    },
}


def size_for(cuda: bool) -> dict:
    """The check's model and step counts; the CPU harness takes its model and block size from the
    tests' profile instead of a copy of them."""
    size = dict(SIZES["gpu" if cuda else "tiny"])
    if "profile" in size:
        from offloadbench.config import load_config

        profile = load_config(size.pop("profile"))
        size.update(scratch=profile["model"]["scratch"], block_size=profile["dataset"]["block_size"])
    return size


MODEL = "gpu-check-llama"
# Adapters start at zero (LoRA's B): a higher rate than full fine-tuning's moves the loss within a few steps.
LORA_LR = 3.0e-3
RUNS = {
    # name: (run entry of configs/config.yaml's shape, what it checks)
    "qlora_paged": (
        {"method": "qlora", "training": {"optimizer": "paged_adamw_32bit", "learning_rate": LORA_LR}},
        "QLoRA + paged AdamW (bitsandbytes)",
    ),
    "qlora_zero3_offload": (
        {
            "method": "qlora",
            "deepspeed": "configs/deepspeed/zero3_offload_cpu.json",
            "training": {"activation_offload": True, "learning_rate": LORA_LR},
        },
        "QLoRA + ZeRO-3 CPU offload + activation offload",
    ),
    "zero3_offload_cpu": (
        {"method": "full", "deepspeed": "configs/deepspeed/zero3_offload_cpu.json"},
        "ZeRO-3, params + optimizer on CPU (cpu_adam)",
    ),
    "zero3_offload_nvme": (
        {"method": "full", "deepspeed": "configs/deepspeed/zero3_offload_nvme.json"},
        "ZeRO-3, params + optimizer on NVMe (aio)",
    ),
}


class CheckFailed(Exception):
    """A check ran and its result is wrong; ``details`` (log, peaks, summary) still go to the report."""

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.details = details or {}


def log(msg: str) -> None:
    print(f"[gpu-check] {msg}", file=sys.stderr, flush=True)


def gpu_probe() -> dict:
    """Device 0's name and whether it has bf16, asked in a child process."""
    code = (
        "import json, torch; p = torch.cuda.get_device_properties(0); print(json.dumps({'name': p.name, "
        "'capability': f'{p.major}.{p.minor}', 'dtype': 'bf16' if torch.cuda.is_bf16_supported() else 'fp16'}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        print(f"gpu_check: CUDA is visible but device 0 cannot be queried: {proc.stderr[-500:]}", file=sys.stderr)
        raise SystemExit(2)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def missing_packages() -> list[str]:
    return [dist for mod, dist in REQUIRED.items() if importlib.util.find_spec(mod) is None]


# ---------------------------------------------------------------------------------------------
# Configuration: configs/config.yaml with the check's model, data, training and runs merged on.


def dataset_spec(size: dict) -> dict:
    return {
        "name": "gpu-check-pydoc",
        "source": "pydoc",
        "text_column": "text",
        "documents": "row",
        "validation_fraction": 0.1,
        "block_size": size["block_size"],
        "tail": "drop",
        "max_train_blocks": None,
        "max_validation_blocks": 32,
    }


def gpu_check_config(size: dict, nvme_root: Path) -> dict:
    from offloadbench.config import DEFAULT_CONFIG, deep_merge
    from offloadbench.io import read_yaml

    ds = dataset_spec(size)
    steps = size["steps"]
    runs = []
    for name, (entry, _) in RUNS.items():
        run = {"name": name, **entry}
        if "nvme" in entry.get("deepspeed", ""):
            run["nvme_dir"] = str(nvme_root / name)
        runs.append(run)
    override = {
        "profile": "gpu-check",
        "baseline_run": "zero3_offload_cpu",
        "dataset": ds,
        "model": {
            "name": MODEL,
            "source": "scratch",
            "scratch": size["scratch"],
            "pretrain": {
                "steps": size["pretrain_steps"],
                "learning_rate": 3.0e-3,
                "micro_batch_size": 16,
                # the same data under its own name (the config keeps the two datasets apart)
                "dataset": {**ds, "name": f"{ds['name']}-pretrain"},
            },
        },
        "training": {
            "max_steps": steps,
            "micro_batch_size": size["micro_batch_size"],
            "gradient_accumulation_steps": 1,
            "learning_rate": 1.0e-3,
            "warmup_steps": 2,
            "logging_steps": 1,
            "save_steps": steps,
            "dtype": "auto",
            "eval_max_blocks": 16,
        },
        # All projections and a larger rank than the default profile, so that the adapters move
        # the loss visibly within a few steps.
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": ALL_PROJECTIONS},
        "runs": runs,
    }
    return deep_merge(read_yaml(DEFAULT_CONFIG), override)


# ---------------------------------------------------------------------------------------------
# Running jobs as the workflow does.


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def train_command(spec: dict, data_dir: Path, out: Path, save_model: Path | None = None) -> list[str]:
    """The ``train`` rule's command (offloadbench.launch.train_argv, with this interpreter) for the
    spec resolved as the ``resolve`` rule resolves it."""
    from offloadbench.launch import train_argv
    from offloadbench.resolve import resolve_spec

    cmd = train_argv(resolve_spec(spec), data_dir, out)
    if save_model is not None:
        cmd += ["--save-model", str(save_model)]
    return cmd


def run_logged(cmd: list[str], log_path: Path, timeout: int) -> int:
    """Run a job with its output in log_path; past the timeout its whole process group goes
    (torchrun's workers too, which would otherwise keep the GPU)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=subprocess_env(), start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise CheckFailed(f"timed out after {timeout} s; see {log_path}", {"log": str(log_path)}) from None


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def losses(out: Path) -> list[float]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["loss"] for line in path.read_text().splitlines() if line.strip()]


def loss_decreases(values: list[float]) -> tuple[bool, str]:
    """Mean of the last few logged losses below the mean of the first few."""
    if len(values) < 2:
        return False, f"{len(values)} logged losses"
    k = max(1, min(3, len(values) // 3))
    first, last = sum(values[:k]) / k, sum(values[-k:]) / k
    return last < first, f"loss {first:.3f} -> {last:.3f} ({len(values)} steps)"


# ---------------------------------------------------------------------------------------------
# Pass criteria. Pure functions of a run's summary.json (its ``observed``: what was in effect, read
# from the live objects) and the memory model's predictions; each returns the problems it finds
# (empty: it passes), so tests/test_gpu_check.py breaks each one without a GPU.

# NVML counts, beyond torch's reserved peak, the CUDA context, cuBLAS/cuDNN/NCCL workspaces and the
# driver's own reservation: well under this on one card; more means NVML reads another card (or
# another process shares this one) and its figures are not this run's.
NVML_OVER_RESERVED_BYTES = 2 * GIB
NVME_WRITTEN_TOLERANCE = 0.10  # measured NVMe bytes written against the memory model's prediction
# The placement each offload run must show in observed.zero: (params, optimizer).
ZERO3_PLACEMENT = {
    "qlora_zero3_offload": ("cpu", "cpu"),
    "zero3_offload_cpu": ("cpu", "cpu"),
    "zero3_offload_nvme": ("nvme", "nvme"),
}
QLORA_RUNS = ("qlora_paged", "qlora_zero3_offload")


def placement_problems(name: str, summary: dict, cuda: bool) -> list[str]:
    """What summary.json's ``observed`` must show for run ``name``: ZeRO-3's own placement flags
    for the offload runs (and DeepSpeedCPUAdam stepping where the optimizer is in CPU memory), a
    non-zero count of 4-bit base weights for the QLoRA runs (under ZeRO-3 too), and on CUDA paged
    optimizer state for qlora_paged and activations copied to the host for qlora_zero3_offload."""
    obs = summary.get("observed") or {}
    zero, four, opt = obs.get("zero") or {}, obs.get("four_bit") or {}, obs.get("optimizer") or {}
    out = []
    if name in ZERO3_PLACEMENT:
        want = ZERO3_PLACEMENT[name]
        got = (zero.get("params"), zero.get("optimizer"))
        if zero.get("stage") != 3:
            out.append(f"no ZeRO-3 engine observed (observed.zero: {obs.get('zero')})")
        elif got != want:
            out.append(
                f"observed params/optimizer on {got[0]}/{got[1]}, expected {want[0]}/{want[1]}: offload fell back"
            )
    if name == "zero3_offload_cpu" and "DeepSpeedCPUAdam" not in str(zero.get("optimizer_class")):
        out.append(f"the optimizer that stepped is {zero.get('optimizer_class')}, not DeepSpeedCPUAdam")
    if name in QLORA_RUNS and not four.get("count"):
        out.append(f"no 4-bit base weight observed (observed.four_bit: {obs.get('four_bit')})")
    if name == "qlora_paged" and cuda and not opt.get("paged_state_bytes"):
        out.append(
            f"no paged optimizer state on CUDA (paged_state_bytes {opt.get('paged_state_bytes')}, {opt.get('class')})"
        )
    if name == "qlora_zero3_offload" and cuda and (obs.get("offload") or {}).get("activations") != "cpu":
        out.append(f"activation offload copied nothing to the host ({obs.get('activation_bytes_to_host')} bytes)")
    return out


def nvme_problems(summary: dict, prediction: dict, tolerance: float = NVME_WRITTEN_TOLERANCE) -> list[str]:
    """The NVMe bytes the run wrote (rank 0's) within ``tolerance`` of the memory model's
    prediction (offloadbench.memory.predict: nvme_written, per node, divided by its ranks)."""
    written = summary.get("nvme_bytes_written")
    expected = prediction["nvme_written"]["total"] // max(1, prediction.get("ranks_per_node", 1))
    if not expected:
        return ["the memory model predicts no NVMe writes for this run"]
    if written is None or abs(written - expected) > tolerance * expected:
        shown = "nothing measured" if written is None else f"{written / GIB:.3f} GiB written"
        return [f"{shown}, predicted {expected / GIB:.3f} GiB (within {tolerance:.0%})"]
    return []


def without_offload(spec: dict) -> dict:
    """The same run with nothing offloaded: plain ZeRO-3 (configs/deepspeed/zero3.json) where it
    ran DeepSpeed, no activation offload."""
    plain = json.loads(json.dumps(spec))
    plain.pop("deepspeed_config", None)
    if plain.get("deepspeed"):
        plain["deepspeed"] = str(REPO / "configs" / "deepspeed" / "zero3.json")
        plain["nvme_dir"] = None
    plain["training"]["activation_offload"] = False
    return plain


def peak_problems(summary: dict, offloaded: dict, plain: dict) -> list[str]:
    """An offload run's measured GPU training peak (torch allocated) must lie below the midpoint
    between the memory model's peaks for the run as configured (``offloaded``) and for the same
    run without offload (``plain``): a run whose offload silently fell back holds about the plain
    peak, and fails."""
    off, full = offloaded["predicted"]["gpu"]["total"], plain["predicted"]["gpu"]["total"]
    if full <= off:
        return [f"the memory model predicts no saving from offload ({off / GIB:.3f} vs {full / GIB:.3f} GiB)"]
    bound = (off + full) / 2
    measured = summary.get("gpu_allocated_peak_bytes")
    if measured is None or measured >= bound:
        shown = "no GPU peak" if measured is None else f"GPU training peak {measured / GIB:.3f} GiB"
        return [
            f"{shown} not below {bound / GIB:.3f} GiB, halfway between the predicted peaks with offload "
            f"({off / GIB:.3f}) and without ({full / GIB:.3f}): offload did not take effect"
        ]
    return []


def nvml_problems(run: str, summary: dict, bound: int = NVML_OVER_RESERVED_BYTES) -> list[str]:
    """NVML's used-memory peak of a CUDA run covers torch's allocated peak, and exceeds torch's
    reserved peak by no more than ``bound`` (CUDA context and workspaces): an NVML handle opened on
    another card reads that card's memory, which is unrelated to torch's (often far smaller, or far
    larger), and fails one side or the other."""
    alloc, reserved = summary.get("gpu_allocated_peak_bytes"), summary.get("gpu_reserved_peak_bytes")
    nv = summary.get("gpu_nvml_used_peak_bytes")
    if alloc is None or nv is None:
        return [f"{run}: no {'NVML' if nv is None else 'torch'} peak"]
    out = []
    if nv < alloc:
        out.append(f"{run}: NVML peak {nv / GIB:.2f} GiB < torch peak {alloc / GIB:.2f} GiB")
    if reserved is not None and nv - reserved > bound:
        out.append(
            f"{run}: NVML peak {nv / GIB:.2f} GiB exceeds torch's reserved peak {reserved / GIB:.2f} GiB by more "
            f"than {bound / GIB:.1f} GiB (context and workspaces): NVML reads another card or process"
        )
    return out


def run_problems(name: str, spec: dict, summary: dict, model_config: dict, cuda: bool) -> list[str]:
    """Every criterion of one training run beyond finishing with a decreasing loss."""
    from offloadbench.memory.predict import predict

    device = "cuda" if cuda else "cpu"
    problems = placement_problems(name, summary, cuda)
    prediction = predict(spec, model_config, spec["block_size"], device)
    if spec.get("nvme_dir"):
        problems += nvme_problems(summary, prediction)
    offloads = spec.get("deepspeed") or spec["training"].get("activation_offload")
    if cuda and offloads:
        plain = predict(without_offload(spec), model_config, spec["block_size"], device)
        problems += peak_problems(summary, prediction, plain)
    return problems


# ---------------------------------------------------------------------------------------------
# The checks. Each returns a result dict; CheckFailed (or any exception) marks it failed.


class Checker:
    def __init__(self, args, cuda: bool):
        self.args = args
        self.cuda = cuda
        self.size = size_for(cuda)
        self.work = args.workdir
        self.nvme_root = args.nvme_dir or (self.work / "nvme")
        self.logs = self.work / "logs"
        self.config = gpu_check_config(self.size, self.nvme_root.resolve())
        self.data_dir = self.work / "results" / "data" / self.config["dataset"]["name"]
        self.corpus_dir = self.work / "results" / "corpus" / self.config["dataset"]["name"]
        self.init_dir = self.work / "results" / "models" / f"{MODEL}-init"
        self.model_dir = self.work / "results" / "models" / MODEL
        self.summaries: dict[str, dict] = {}
        self.results: list[dict] = []
        # What env.choose_dtype must pick on this GPU (probed in a child process: CUDA is not
        # initialised here before the runs, so that NVML's device-wide readings are the runs' own).
        self.expected_dtype = gpu_probe()["dtype"] if cuda else None

    # -- bookkeeping ---------------------------------------------------------------------------

    def record(self, name: str, fn, needs: tuple[str, ...] = ()) -> dict:
        failed = [n for n in needs if not any(r["check"] == n and r["status"] == "ok" for r in self.results)]
        result = {"check": name, "status": "skip", "seconds": None, "gpu_peak_bytes": None, "nvml_peak_bytes": None}
        if failed:
            result["notes"] = f"needs {', '.join(failed)}"
            self.results.append(result)
            return result
        log(f"{name} ...")
        t0 = time.perf_counter()
        try:
            found = fn() or {}
            result.update(found)
            result["status"] = found.get("status", "ok")
        except Exception as err:  # noqa: BLE001 - one failed check must not hide the others
            result.update(getattr(err, "details", {}))
            result["status"] = "FAIL"
            result["notes"] = f"{type(err).__name__}: {' '.join(str(err).split())}"[:400]
            if not isinstance(err, CheckFailed):
                result["traceback"] = traceback.format_exc()
        result["seconds"] = round(time.perf_counter() - t0, 1)
        log(f"{name}: {result['status']} in {result['seconds']} s  {result.get('notes', '')}")
        self.results.append(result)
        return result

    # -- checks --------------------------------------------------------------------------------

    def ops(self) -> dict:
        log_path = self.logs / "ops.log"
        rc = run_logged([sys.executable, "-m", "offloadbench.ops"], log_path, self.args.timeout)
        text = log_path.read_text(errors="replace")
        if rc != 0:
            raise CheckFailed(f"python -m offloadbench.ops exited {rc}: {log_tail(log_path, 5)}")
        ready = [op for op in ("cpu_adam", "async_io") if f"{op}: ready" in text]
        if ready != ["cpu_adam", "async_io"]:
            raise CheckFailed(f"only {ready or 'no op'} ready; see {log_path}")
        return {"notes": "cpu_adam, async_io ready", "log": str(log_path)}

    def build(self) -> dict:
        from offloadbench.data import build_corpus, tokenize_corpus
        from offloadbench.model import build

        ds = self.config["dataset"]
        build_corpus(ds, self.corpus_dir)
        info = build(
            {"name": MODEL, "scratch": self.size["scratch"], "seed": self.config["seed"]},
            self.corpus_dir,
            self.init_dir,
        )
        manifest = tokenize_corpus(ds, self.corpus_dir, str(self.init_dir), self.data_dir)
        blocks = manifest["splits"]["train"]["blocks"]
        return {
            "notes": f"{info['params'] / 1e6:.1f} M params, {blocks} train blocks of {ds['block_size']}",
            "params": info["params"],
            "train_blocks": blocks,
        }

    def train(self, name: str, spec: dict, save_model: Path | None = None) -> dict:
        out = self.work / "results" / "runs" / name
        log_path = self.logs / f"{name}.log"
        rc = run_logged(train_command(spec, self.data_dir, out, save_model), log_path, self.args.timeout)
        summary_path = out / "summary.json"
        if not summary_path.exists():
            raise CheckFailed(
                f"exit {rc}, no summary.json; {log_path}: {log_tail(log_path, 8)}", {"log": str(log_path)}
            )
        summary = json.loads(summary_path.read_text())
        self.summaries[name] = summary
        result = {
            "gpu_peak_bytes": summary.get("gpu_allocated_peak_bytes"),
            "nvml_peak_bytes": summary.get("gpu_nvml_used_peak_bytes"),
            "log": str(log_path),
            "summary": {
                k: summary.get(k)
                for k in (
                    "status",
                    "method",
                    "offload",
                    "device",
                    "dtype",
                    "steps",
                    "train_loss_final",
                    "eval_loss",
                    "tokens_per_s",
                    "host_rss_peak_bytes",
                    "gpu_reserved_peak_bytes",
                    "nvme_bytes_written",
                    "optimizer_fallback",
                    "error",
                )
            },
        }
        result["losses"] = losses(out)
        if rc != 0 or summary["status"] != "ok":
            raise CheckFailed(f"exit {rc}, status {summary['status']}: {summary.get('error')}", result)
        notes = []
        want_device = "cuda" if self.cuda else "cpu"
        if summary["device"] != want_device:
            raise CheckFailed(f"ran on {summary['device']}, not {want_device}", result)
        if self.cuda and summary["dtype"] != self.expected_dtype:
            raise CheckFailed(f"dtype {summary['dtype']}, expected {self.expected_dtype} for this GPU", result)
        notes.append(summary["dtype"])
        ok, text = loss_decreases(result["losses"])
        if not ok:
            raise CheckFailed(f"loss does not decrease: {text}", result)
        notes.append(text)
        result["notes"] = "; ".join(notes)
        return result

    def pretrain(self) -> dict:
        from offloadbench.spec import pretrain_spec

        return self.train("pretrain", pretrain_spec(self.config), save_model=self.model_dir)

    def run(self, name: str) -> dict:
        from offloadbench.config import check_run
        from offloadbench.spec import run_spec

        spec = run_spec(self.config, name)
        check_run(spec, name)
        result = self.train(name, spec)
        summary = self.summaries[name]
        notes = [result["notes"], summary["offload"]]
        if spec["training"]["optimizer"].startswith("paged_") and self.cuda and summary["optimizer_fallback"]:
            raise CheckFailed(f"the paged optimizer fell back: {summary['optimizer_fallback']}", result)
        if spec.get("nvme_dir"):
            written = summary.get("nvme_bytes_written") or 0
            notes.append(f"{written / GIB:.2f} GiB written")
        from offloadbench.memory.counting import load_model_config

        problems = run_problems(name, spec, summary, load_model_config(spec["model"]["path"]), self.cuda)
        result["observed"] = summary.get("observed")
        if problems:
            raise CheckFailed("; ".join(problems), result)
        result["notes"] = "; ".join(notes)
        return result

    def qlora_4bit(self) -> dict:
        """The project's QLoRA model: packed 4-bit weights, and less GPU memory than bf16."""
        import bitsandbytes as bnb
        import torch
        from transformers import AutoModelForCausalLM

        from offloadbench.env import choose_dtype, torch_dtype
        from offloadbench.spec import run_spec
        from offloadbench.training.model import load_model

        spec = run_spec(self.config, "qlora_paged")
        device, dtype_name = choose_dtype(spec["training"]["dtype"])
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() if self.cuda else 0
        model = load_model(spec, device, dtype_name, zero3=False)
        q_bytes = torch.cuda.memory_allocated() - before if self.cuda else None
        layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        if not layers:
            raise CheckFailed("no bitsandbytes Linear4bit module in the QLoRA model")
        packed = logical = 0
        for layer in layers:
            w = layer.weight
            if w.dtype != torch.uint8 or w.quant_state is None:
                raise CheckFailed(f"a Linear4bit weight is {w.dtype}, not packed uint8")
            if w.quant_state.quant_type != spec["quantization"]["quant_type"]:
                raise CheckFailed(
                    f"quant_type {w.quant_state.quant_type}, config says {spec['quantization']['quant_type']}"
                )
            if self.cuda and w.device.type != "cuda":
                raise CheckFailed(f"a 4-bit weight is on {w.device}")
            packed += w.numel()
            logical += layer.in_features * layer.out_features
        if packed * 2 != logical:
            raise CheckFailed(f"{packed} bytes hold {logical} weights: not two 4-bit values per byte")
        q_footprint = model.get_memory_footprint()
        del model
        if self.cuda:
            torch.cuda.empty_cache()
        dense_dtype = torch_dtype(dtype_name) if self.cuda else torch.bfloat16
        before = torch.cuda.memory_allocated() if self.cuda else 0
        dense = AutoModelForCausalLM.from_pretrained(spec["model"]["path"], dtype=dense_dtype, use_safetensors=True)
        dense = dense.to(device)
        d_bytes = torch.cuda.memory_allocated() - before if self.cuda else None
        d_footprint = dense.get_memory_footprint()
        del dense
        result = {
            "linear4bit_layers": len(layers),
            "packed_bytes": packed,
            "quantized_model_bytes": q_bytes,
            "dense_model_bytes": d_bytes,
            "quantized_footprint_bytes": q_footprint,
            "dense_footprint_bytes": d_footprint,
            "dense_dtype": str(dense_dtype).replace("torch.", ""),
        }
        notes = [f"{len(layers)} Linear4bit, uint8 packed, {spec['quantization']['quant_type']}"]
        if self.cuda:
            torch.cuda.empty_cache()
            result["gpu_peak_bytes"] = torch.cuda.max_memory_allocated()
            if not q_bytes < d_bytes:
                raise CheckFailed(f"4-bit model takes {q_bytes / 2**20:.1f} MiB, bf16 {d_bytes / 2**20:.1f} MiB")
            notes.append(f"GPU {q_bytes / 2**20:.1f} MiB vs {result['dense_dtype']} {d_bytes / 2**20:.1f} MiB")
        else:
            notes.append("GPU memory comparison skipped on CPU")
        result["notes"] = "; ".join(notes)
        return result

    def nvml(self) -> dict:
        if not self.cuda:
            return {"status": "skip", "notes": "no CUDA"}
        import pynvml
        import torch

        pynvml.nvmlInit()
        try:
            index = torch.cuda.current_device()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            driver = pynvml.nvmlSystemGetDriverVersion()
            driver = driver.decode() if isinstance(driver, bytes) else driver
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        finally:
            pynvml.nvmlShutdown()
        free, total = torch.cuda.mem_get_info(index)
        result = {
            "nvml_name": name,
            "torch_name": torch.cuda.get_device_name(index),
            "driver": driver,
            "nvml_used_bytes": int(mem.used),
            "nvml_total_bytes": int(mem.total),
            "torch_used_bytes": int(total - free),
            "torch_total_bytes": int(total),
            "nvml_peak_bytes": int(mem.used),
            "gpu_peak_bytes": torch.cuda.max_memory_allocated(),
        }
        problems = [p for run, summary in self.summaries.items() for p in nvml_problems(run, summary)]
        if problems:
            raise CheckFailed("; ".join(problems))
        result["notes"] = (
            f"{name}, driver {driver}, NVML used {mem.used / GIB:.2f} of {mem.total / GIB:.1f} GiB "
            f"(torch sees {(total - free) / GIB:.2f}); in {len(self.summaries)} runs torch peak <= NVML peak <= "
            f"torch reserved peak + {NVML_OVER_RESERVED_BYTES / GIB:.0f} GiB"
        )
        return result

    def all(self) -> list[dict]:
        self.record("ops", self.ops)
        self.record("build", self.build)
        self.record("pretrain", self.pretrain, needs=("build",))
        for name in RUNS:
            needs = ("pretrain", "ops") if "deepspeed" in RUNS[name][0] else ("pretrain",)
            self.record(name, lambda name=name: self.run(name), needs=needs)
        self.record("qlora_4bit", self.qlora_4bit, needs=("pretrain",))
        self.record("nvml", self.nvml)
        return self.results


# ---------------------------------------------------------------------------------------------
# Report


def gib(value) -> str:
    return "" if value is None else f"{value / GIB:.2f}"


def table(results: list[dict]) -> str:
    rows = [("check", "status", "seconds", "peak GPU GiB", "NVML GiB", "notes")]
    for r in results:
        seconds = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        rows.append(
            (
                r["check"],
                r["status"],
                seconds,
                gib(r.get("gpu_peak_bytes")),
                gib(r.get("nvml_peak_bytes")),
                r.get("notes", ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)) + "  " + row[5])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 5)
    return "\n".join(lines)


def environment(cuda: bool) -> dict:
    import torch

    from offloadbench.env import cpu_model, versions

    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cuda": torch.version.cuda,
        "versions": versions(),
        "card": None,
        "driver": None,
        "bf16_supported": None,
    }
    if cuda:
        props = torch.cuda.get_device_properties(0)
        env.update(
            card=props.name,
            gpu_memory_bytes=props.total_memory,
            compute_capability=f"{props.major}.{props.minor}",
            driver=env["versions"].get("driver"),
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    return env


def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(
        prog="benchmarks/gpu_check.py",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[2:]),
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="folder for data, models and runs (default: a temp dir)"
    )
    parser.add_argument(
        "--nvme-dir", type=Path, default=None, help="swap folder for NVMe offload (default: in workdir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the workdir (logs, models, runs) afterwards")
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed for each job (default: 900)")
    parser.add_argument(
        "--allow-cpu",
        action="store_true",
        help="without CUDA, test this script on the CPU (tiny model, CUDA checks skipped)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("torch") is None:
        print(
            "gpu_check: torch is not installed; run `make setup`, or see the docstring for the wheels", file=sys.stderr
        )
        return 2
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print(
            f"gpu_check: no CUDA GPU visible (torch {torch.__version__}, built for CUDA {torch.version.cuda}); this "
            "check needs one CUDA GPU. In Docker, add --gpus all; --allow-cpu only tests the script itself.",
            file=sys.stderr,
        )
        return 2
    missing = missing_packages()
    if missing:
        print(
            f"gpu_check: missing {', '.join(missing)}; install requirements.lock (make setup) or carry the wheels "
            "that benchmarks/gpu_wheels.sh builds (see this script's docstring)",
            file=sys.stderr,
        )
        return 2

    from offloadbench.env import prepare_process

    prepare_process()  # the same PATH, extension cache and DeepSpeed accelerator as the workflow's jobs
    temp = args.workdir is None
    args.workdir = (Path(tempfile.mkdtemp(prefix="offloadbench-gpu-check-")) if temp else args.workdir).resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(args.workdir)  # the specs' relative paths (results/models/...) are the workflow's, under here
    log(f"workdir {args.workdir}; {'CUDA' if cuda else 'CPU (harness test: CUDA-only criteria skipped)'}")
    t0 = time.perf_counter()
    try:
        checker = Checker(args, cuda)
        results = checker.all()
        report = {
            "ok": not any(r["status"] == "FAIL" for r in results) and any(r["status"] == "ok" for r in results),
            "mode": "cuda" if cuda else "cpu-harness",
            **environment(cuda),
            "dtype": checker.expected_dtype,
            "model": {"name": MODEL, **checker.size["scratch"]},
            "steps": checker.size["steps"],
            "seconds": round(time.perf_counter() - t0, 1),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "workdir": str(args.workdir) if args.keep or not temp else None,
            "checks": results,
        }
    finally:
        os.chdir(cwd)
        if temp and not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    print(table(results))
    print(
        f"\n{report['card'] or 'CPU'} | driver {report['driver']} | CUDA {report['cuda']} | torch "
        f"{report['versions']['torch']} | bitsandbytes {report['versions']['bitsandbytes']} | deepspeed "
        f"{report['versions']['deepspeed']} | {report['seconds']:.0f} s | {'PASS' if report['ok'] else 'FAIL'}"
    )
    if args.out:
        out = args.out if args.out.is_absolute() else Path(cwd) / args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"written: {out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

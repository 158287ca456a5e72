"""The one training entry point: method (full, lora, qlora) and offload are configuration.

Launched by the ``train`` rule for every run in the config, one process per rank:

    python -m offloadbench.train --spec '<run spec JSON>' --data results/data/<dataset> \
        --out results/runs/<run>
    torchrun --standalone --nproc_per_node <world_size> -m offloadbench.train ...   # DeepSpeed runs
    srun ... python -m offloadbench.launch --nnodes N ... -m offloadbench.train ... # several machines

and by the ``pretrain`` rule with ``--save-model results/models/<model>``.

What the switches mean:
- method full: every weight trains (fp32 master weights; bf16/fp16 autocast on CUDA).
- method lora: PEFT LoRA adapters on ``lora.target_modules``; the base stays frozen.
- method qlora: the base is quantized to 4-bit through ``BitsAndBytesConfig`` (NF4, double
  quantization, compute dtype from the hardware) and prepared with ``prepare_model_for_kbit_training``.
- training.optimizer paged_adamw_*: bitsandbytes' paged AdamW (state in CUDA managed memory).
- training.activation_offload: saved activations live in host memory (``save_on_cpu``).
- deepspeed: a ZeRO config; its ``offload_param`` / ``offload_optimizer`` sections move
  parameters and optimizer state to CPU memory or NVMe.

Outputs in ``--out``: ``metrics.jsonl`` (one line per logged step, rank 0's), ``summary.json`` (the
results contract, workflow/schemas/summary.schema.json; rank 0's measurements plus every rank's
memory peaks under ``ranks``), ``model/`` (the final checkpoint: a full model
or a LoRA adapter) and ``checkpoints/`` (resume points, removed after a successful run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

import torch

from . import owned
from .config import PreflightError, canonical_json, load_spec, read_deepspeed_config, spec_sha256
from .env import choose_dtype, git_commit, hardware, prepare_process, torch_dtype, versions
from .io import tree_bytes, write_json, write_text
from .recorder import MemorySampler, MetricsRecorder, gather_ranks, gpu_peaks, rank_entry, tree_rss


def world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def load_deepspeed_config(spec: dict, out: Path) -> dict | None:
    """The run's DeepSpeed config, checked against the run, with the run's own NVMe swap folder
    (created inside nvme_dir, see offloadbench.owned) filled in."""
    ds = read_deepspeed_config(spec)
    if ds is None:
        return None
    zero = ds.get("zero_optimization", {})
    for section in ("offload_param", "offload_optimizer"):
        off = zero.get(section) or {}
        if off.get("device") == "nvme":
            off["nvme_path"] = str(claim_swap_dir(spec, out))
    param = zero.get("offload_param") or {}
    if param.get("buffer_size") == "auto":
        param["buffer_size"] = largest_parameter(spec)
    return ds


def claim_swap_dir(spec: dict, out: Path) -> Path:
    """Create (or, on a resume, take back) the run's swap folder inside nvme_dir; rank 0 leaves a
    pointer to it in the run folder so that `make clean-results` finds it wherever it is."""
    try:
        swap = owned.claim(owned.swap_dir(spec["nvme_dir"], spec["run"], out), _owner(spec, out), "nvme_dir")
    except owned.OwnershipError as err:
        raise PreflightError(f"run {spec['run']}: {err}") from err
    if world()[0] == 0:
        write_json(out / owned.SWAP_POINTER, {"path": str(swap)})
    return swap


def _owner(spec: dict, out: Path) -> dict:
    return owned.owner_record(spec["run"], out)


def release_swap_dir(spec: dict, out: Path) -> None:
    """After a successful run: remove the swap folder this run created, and only that. Every node
    removes its own (nvme_dir is a local disk), once all ranks are done with it."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        swap = owned.swap_dir(spec["nvme_dir"], spec["run"], out)
        if not owned.remove_owned(swap, _owner(spec, out)):
            print(f"[offloadbench] left {swap} in place: it is not marked as this run's", file=sys.stderr)
    if world()[0] == 0:
        (out / owned.SWAP_POINTER).unlink(missing_ok=True)


def largest_parameter(spec: dict) -> int:
    """Elements of the model's largest tensor: the size of DeepSpeed's NVMe parameter buffers
    ("buffer_size": "auto"). Every swapped tensor must fit one buffer, and the pool of
    buffer_count buffers sits in pinned host memory, so DeepSpeed's fixed default (1e8 elements)
    is too small for an 8B model's embedding and 200x too large for the tiny default model."""
    from .memory import largest_tensor, load_model_config

    return largest_tensor(load_model_config(spec["model"]["path"], spec["model"].get("revision")))


def offload_label(spec: dict, ds: dict | None) -> dict:
    """Where each kind of state lives: none, cpu, nvme, or paged (bitsandbytes managed memory)."""
    zero = (ds or {}).get("zero_optimization", {})
    opt = (zero.get("offload_optimizer") or {}).get("device", "none")
    if spec["training"]["optimizer"].startswith("paged_"):
        opt = "paged"
    return {
        "params": (zero.get("offload_param") or {}).get("device", "none"),
        "optimizer": opt,
        "activations": "cpu" if spec["training"]["activation_offload"] else "none",
    }


def offload_summary(off: dict) -> str:
    parts = [f"{k}:{v}" for k, v in off.items() if v != "none"]
    return "+".join(parts) if parts else "none"


def quantization_config(spec: dict, compute_dtype, storage_dtype=None):
    from transformers import BitsAndBytesConfig

    q = spec["quantization"]
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q["quant_type"],
        bnb_4bit_use_double_quant=q["double_quant"],
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=storage_dtype or torch.uint8,
    )


def load_model(spec: dict, device: str, dtype_name: str, zero3: bool):
    """The model for the run's method, with LoRA adapters where the method has them."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, set_seed

    model_ref = spec["model"]
    common = {
        "revision": model_ref.get("revision"),
        "trust_remote_code": spec["trust_remote_code"],
        "use_safetensors": True,
    }
    compute_dtype = torch_dtype(dtype_name)
    gc = spec["training"]["gradient_checkpointing"]
    # Reentrant checkpointing is what ZeRO-3 partitioned parameters need; elsewhere the
    # non-reentrant variant is the one PyTorch recommends.
    gc_kwargs = {"use_reentrant": zero3}
    if spec["method"] == "qlora":
        # ZeRO-3 partitions parameters by their storage dtype, so the packed 4-bit weights are
        # stored in the compute dtype there (bnb_4bit_quant_storage), as PEFT documents.
        storage = compute_dtype if zero3 else None
        kwargs = {"quantization_config": quantization_config(spec, compute_dtype, storage)}
        if zero3:
            kwargs["dtype"] = compute_dtype
        else:
            kwargs["device_map"] = {"": 0 if device == "cuda" else "cpu"}
        model = AutoModelForCausalLM.from_pretrained(model_ref["path"], **common, **kwargs)
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gc, gradient_checkpointing_kwargs=gc_kwargs
        )
        for module in model.modules():
            # On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit weight in place the first
            # time it runs without grad (evaluation); that needs out_features % 32 == 0 and would
            # rewrite a ZeRO-3 partition. Keep one storage format for training and evaluation.
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    else:
        # Full fine-tuning keeps fp32 master weights (Trainer autocasts to bf16/fp16 on CUDA); a
        # frozen LoRA base needs no master copy and is held in the compute dtype, as is usual
        # (the adapters stay fp32: PEFT's autocast_adapter_dtype).
        dtype = compute_dtype if spec["method"] == "lora" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(model_ref["path"], dtype=dtype, **common)
        if gc:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    model.config.use_cache = False
    if spec["method"] in ("lora", "qlora"):
        check_lora_targets(model, spec)
        lora = spec["lora"]
        set_seed(spec["seed"])  # the LoRA A matrices are initialised randomly
        model = get_peft_model(
            model,
            LoraConfig(
                r=lora["r"],
                lora_alpha=lora["alpha"],
                lora_dropout=lora["dropout"],
                target_modules=list(lora["target_modules"]),
                bias="none",
                task_type="CAUSAL_LM",
            ),
        )
        if gc:
            model.enable_input_require_grads()
    return model


def check_lora_targets(model, spec: dict) -> None:
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in spec["lora"]["target_modules"] if t not in names]
    if missing:
        linear = sorted(n for n in names if n.endswith("_proj") or n in ("lm_head",))
        raise PreflightError(
            f"run {spec['run']}: config key lora.target_modules: {missing} match no module of "
            f"{spec['model']['path']}; its projections are {linear}"
        )


def count_params(model) -> tuple[int, int]:
    """(total, trainable) logical parameters; a packed 4-bit weight holds two values per byte."""
    total = trainable = 0
    for p in model.parameters():
        n = p.numel()
        if getattr(p, "quant_state", None) is not None or type(p).__name__ == "Params4bit":
            qs = getattr(p, "quant_state", None)
            n = math.prod(qs.shape) if qs is not None and qs.shape is not None else n * 2 * p.element_size()
        elif hasattr(p, "ds_numel"):  # ZeRO-3 partitioned parameter
            n = p.ds_numel
        total += n
        if p.requires_grad:
            trainable += n
    return total, trainable


def make_trainer(model, data, args, recorder, activation_offload: bool, cuda: bool):
    from transformers import Trainer, default_data_collator

    class OffloadTrainer(Trainer):
        """Trainer whose forward+backward keeps saved activations in host memory when asked."""

        def training_step(self, *a, **kw):
            if not activation_offload:
                return super().training_step(*a, **kw)
            # pin_memory needs an accelerator; on a CPU-only machine it raises.
            with torch.autograd.graph.save_on_cpu(pin_memory=cuda):
                return super().training_step(*a, **kw)

    return OffloadTrainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        data_collator=default_data_collator,
        callbacks=[recorder],
    )


def training_arguments(spec: dict, out: Path, device: str, dtype_name: str, ds: dict | None):
    from transformers import TrainingArguments

    tr = spec["training"]
    return TrainingArguments(
        output_dir=str(out / "checkpoints"),
        max_steps=tr["max_steps"],
        per_device_train_batch_size=tr["micro_batch_size"],
        per_device_eval_batch_size=tr["micro_batch_size"],
        gradient_accumulation_steps=tr["gradient_accumulation_steps"],
        learning_rate=tr["learning_rate"],
        lr_scheduler_type=tr["lr_scheduler"],
        warmup_steps=tr["warmup_steps"],
        weight_decay=tr["weight_decay"],
        max_grad_norm=tr["max_grad_norm"],
        optim=tr["optimizer"],
        bf16=dtype_name == "bf16",
        fp16=dtype_name == "fp16",
        use_cpu=device == "cpu",
        logging_steps=tr["logging_steps"],
        save_strategy="steps",
        save_steps=tr["save_steps"],
        # Two resume points: a kill while the newer one is being written leaves the older intact.
        save_total_limit=2,
        eval_strategy="no",
        seed=spec["seed"],
        data_seed=spec["seed"],
        dataloader_drop_last=True,
        dataloader_num_workers=0,
        report_to="none",
        disable_tqdm=True,
        deepspeed=ds,
        ddp_backend="gloo" if device == "cpu" and spec["world_size"] > 1 else None,
    )


def last_checkpoint(out: Path) -> str | None:
    """The newest complete resume point, or None; incomplete ones (a kill while saving) go.

    Trainer writes trainer_state.json last, so a checkpoint whose state file parses is complete.
    """
    ckpt_dir = out / "checkpoints"
    found = (
        sorted(
            (int(p.name.split("-")[-1]), p) for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
        )
        if ckpt_dir.is_dir()
        else []
    )
    for _, path in reversed(found):
        try:
            json.loads((path / "trainer_state.json").read_text())
            return str(path)
        except (OSError, json.JSONDecodeError):
            print(f"[offloadbench] removing incomplete checkpoint {path}", file=sys.stderr)
            shutil.rmtree(path, ignore_errors=True)
    return None


def publish_metrics(out: Path) -> None:
    """Copy the metrics written during training to OUT/metrics.jsonl, atomically."""
    partial = out / "checkpoints" / "metrics.jsonl"
    write_text(out / "metrics.jsonl", partial.read_text() if partial.exists() else "")


def trim_metrics(path: Path, upto_step: int) -> None:
    """Drop metric lines after the checkpoint we resume from (they are logged again)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= upto_step]
    path.write_text("".join(line + "\n" for line in keep))


def evaluate(trainer, data, max_blocks: int | None) -> float:
    """Mean token cross-entropy on the validation blocks, the same for every method.

    Every block has the same length, so the mean over blocks equals the mean over tokens.
    """
    ev = data["validation"]
    if max_blocks:
        ev = ev.select(range(min(max_blocks, len(ev))))
    return float(trainer.evaluate(eval_dataset=ev)["eval_loss"])


def run(spec: dict, data_dir: Path, out: Path, save_model: Path | None = None) -> dict:
    import datasets

    t0 = time.perf_counter()
    rank, world_size = world()
    is_main = rank == 0
    out.mkdir(parents=True, exist_ok=True)
    device, dtype_name = choose_dtype(spec["training"]["dtype"])
    if world_size != spec["world_size"]:
        raise PreflightError(
            f"run {spec['run']}: world_size={spec['world_size']} in the config but {world_size} processes were "
            "launched; start it with torchrun --nproc_per_node <world_size>"
        )
    ds = load_deepspeed_config(spec, out)
    zero3 = bool(ds) and ds.get("zero_optimization", {}).get("stage") == 3
    off = offload_label(spec, ds)
    if is_main and last_checkpoint(out) is None:
        check_disk(spec, out, device)
    torch.manual_seed(spec["seed"])
    if device == "cpu" and ds:
        # DeepSpeed on CPU communicates through gloo; with zero.Init it must be up before the
        # model is built, or ZeRO computes its world size before torch.distributed exists.
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")

    data = datasets.load_from_disk(str(data_dir))
    data.set_format("torch")
    block = len(data["train"][0]["input_ids"])
    tr = spec["training"]
    # TrainingArguments before from_pretrained: it registers the DeepSpeed config so that a
    # ZeRO-3 model is built partitioned (zero.Init) instead of whole on one process.
    args = training_arguments(spec, out, device, dtype_name, ds)
    # The runtime's own host memory (interpreter, torch, transformers, peft, DeepSpeed, CUDA
    # context), measured after the imports every run makes and before the model loads.
    import peft  # noqa: F401
    from transformers import Trainer  # noqa: F401

    host_rss_baseline = tree_rss()
    with phase("load model"):
        model = load_model(spec, device, dtype_name, zero3)
    params_total, params_trainable = count_params(model)

    # Metrics are written beside the resume points while training (Snakemake removes the declared
    # outputs of an interrupted job, not this folder) and published when the run ends.
    resume = last_checkpoint(out)
    partial = out / "checkpoints" / "metrics.jsonl"
    partial.parent.mkdir(parents=True, exist_ok=True)
    if resume:
        trim_metrics(partial, int(Path(resume).name.split("-")[-1]))
    else:
        partial.unlink(missing_ok=True)
        shutil.rmtree(out / "model", ignore_errors=True)
    sampler = MemorySampler().start()
    tokens_per_step = tr["micro_batch_size"] * tr["gradient_accumulation_steps"] * world_size * block
    recorder = MetricsRecorder(partial, tokens_per_step, sampler, is_main)
    trainer = make_trainer(model, data, args, recorder, tr["activation_offload"], device == "cuda")
    optimizer_fallback = None
    with phase("train"), _capture_warnings() as caught:
        trainer.train(resume_from_checkpoint=resume)
        for w in caught:
            if "paged" in str(w.message).lower():
                optimizer_fallback = str(w.message)
    with phase("evaluate"):
        eval_loss = evaluate(trainer, data, tr["eval_max_blocks"])
    sampler.stop()
    ranks = gather_ranks(rank_entry(rank, sampler, host_rss_baseline))

    final = save_model or out / "model"
    with phase("save"):
        trainer.save_model(str(final))
    if is_main:
        _save_tokenizer(spec, final)
        publish_metrics(out)
        # Resume points are only needed while the run is unfinished.
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    if "nvme" in off.values():  # so are the swap files; the folder the user named stays
        release_swap_dir(spec, out)
    summary = summary_record(
        spec,
        status="ok",
        offload=off,
        device=device,
        dtype=dtype_name,
        world_size=world_size,
        params_total=params_total,
        params_trainable=params_trainable,
        steps=trainer.state.global_step,
        tokens_seen=tokens_per_step * trainer.state.global_step,
        wall_s=time.perf_counter() - t0,
        train_s=recorder.train_s,
        tokens_per_s=recorder.tokens_per_s,
        train_batch_size=train_batch_size(trainer, tr, world_size),
        host_rss_baseline_bytes=host_rss_baseline,
        host_rss_peak_bytes=sampler.host_rss_peak,
        **gpu_peaks(),
        gpu_nvml_used_peak_bytes=sampler.nvml_used_peak,
        nvme_bytes_written=recorder.io_bytes if "nvme" in off.values() else None,
        train_loss_final=recorder.last_loss,
        eval_loss=eval_loss,
        eval_ppl=math.exp(eval_loss),
        checkpoint_bytes=tree_bytes(final) if is_main else None,
        optimizer_fallback=optimizer_fallback,
        resumed_from=resume,
        rng=recorder.rng,
        ranks=ranks,
    )
    if is_main:
        write_json(out / "summary.json", summary)
    return summary


def check_disk(spec: dict, out: Path, device: str) -> None:
    """Refuse a run whose predicted NVMe swap files and checkpoints exceed the free disk, before
    the model loads (src/offloadbench/memory.py predicts the bytes)."""
    from .memory import load_model_config, predicted_disk_bytes

    model = spec["model"]
    need = predicted_disk_bytes(
        spec, load_model_config(model["path"], model.get("revision")), spec["block_size"], device
    )
    places: dict[int, list] = {}  # filesystem -> [folder, bytes needed, what]
    for folder, nbytes, what in (
        (out, need["total"] - need["nvme_swap"], "final model and resume checkpoints"),
        (Path(spec["nvme_dir"]) if need["nvme_swap"] else None, need["nvme_swap"], "NVMe swap files"),
    ):
        if folder is None:
            continue
        existing = folder
        while not existing.exists():
            existing = existing.parent
        entry = places.setdefault(os.stat(existing).st_dev, [existing, 0, []])
        entry[1] += nbytes
        entry[2].append(f"{what} {nbytes / 2**30:.2f} GiB")
    for folder, nbytes, what in places.values():
        free = shutil.disk_usage(folder).free
        if nbytes > free:
            raise PreflightError(
                f"run {spec['run']}: needs about {nbytes / 2**30:.2f} GiB of disk on the filesystem of {folder} "
                f"({', '.join(what)}) but only {free / 2**30:.2f} GiB is free; free space, move nvme_dir or "
                "results/ to a larger disk, or raise training.save_steps (fewer resume checkpoints)"
            )


def train_batch_size(trainer, tr: dict, world_size: int) -> int:
    """Blocks per optimizer step over all ranks: what the DeepSpeed engine used for DeepSpeed runs
    (its config's "auto" filled in by Trainer), else micro-batch x accumulation x world size."""
    engine = trainer.model_wrapped
    if hasattr(engine, "train_batch_size") and callable(engine.train_batch_size):
        return int(engine.train_batch_size())
    return tr["micro_batch_size"] * tr["gradient_accumulation_steps"] * world_size


def summary_record(spec: dict, **fields) -> dict:
    """summary.json (workflow/schemas/summary.schema.json): what was measured, plus provenance.

    Fields not given (a run that failed before measuring them) are null."""
    measured = (
        "params_total",
        "params_trainable",
        "steps",
        "tokens_seen",
        "train_s",
        "tokens_per_s",
        "train_batch_size",
        "host_rss_baseline_bytes",
        "host_rss_peak_bytes",
        "gpu_allocated_peak_bytes",
        "gpu_reserved_peak_bytes",
        "gpu_nvml_used_peak_bytes",
        "nvme_bytes_written",
        "train_loss_final",
        "eval_loss",
        "eval_ppl",
        "checkpoint_bytes",
        "optimizer_fallback",
        "resumed_from",
        "error",
        "rng",
        "ranks",
    )
    off = fields.pop("offload")
    return {
        "run": spec["run"],
        "method": spec["method"],
        "offload": offload_summary(off),
        "offload_detail": off,
        "model": spec["model"]["path"],
        "dataset": spec["dataset"],
        "seed": spec["seed"],
        "optimizer": spec["training"]["optimizer"],
        **{key: None for key in measured},
        **fields,
        "config_sha256": spec_sha256(spec),
        "git_commit": git_commit(),
        "versions": versions(),
        "hardware": hardware(),
        "spec": spec,
    }


def is_out_of_memory(err: BaseException) -> bool:
    text = str(err).lower()
    return (
        isinstance(err, (torch.OutOfMemoryError, MemoryError))
        or "out of memory" in text
        or "can't allocate memory" in text
    )


def record_failure(spec: dict, out: Path, err: BaseException, wall_s: float) -> dict:
    """A run that failed while training: summary.json says so (status oom or failed, and the
    error), so the tables show the row instead of dropping it and the workflow goes on."""
    device, dtype_name = choose_dtype(spec["training"]["dtype"])
    summary = summary_record(
        spec,
        status="oom" if is_out_of_memory(err) else "failed",
        error=f"{type(err).__name__}: {' '.join(str(err).split())}"[:1000],
        offload=offload_label(spec, read_deepspeed_config(spec)),
        device=device,
        dtype=dtype_name,
        world_size=spec["world_size"],
        wall_s=wall_s,
    )
    if world()[0] == 0:
        out.mkdir(parents=True, exist_ok=True)
        publish_metrics(out)  # the steps it made before failing
        write_json(out / "summary.json", summary)
    return summary


def evaluate_base(spec: dict, data_dir: Path, out_json: Path) -> dict:
    """The base model's validation loss, computed exactly as after every run (claim C5)."""
    import tempfile

    import datasets
    from transformers import AutoModelForCausalLM, Trainer, default_data_collator

    device, dtype_name = choose_dtype(spec["training"]["dtype"])
    data = datasets.load_from_disk(str(data_dir))
    data.set_format("torch")
    model_ref = spec["model"]
    model = AutoModelForCausalLM.from_pretrained(
        model_ref["path"],
        revision=model_ref.get("revision"),
        trust_remote_code=spec["trust_remote_code"],
        use_safetensors=True,
        dtype=torch.float32,
    )
    with tempfile.TemporaryDirectory() as tmp:
        args = training_arguments(spec, Path(tmp), device, dtype_name, None)
        trainer = Trainer(model=model, args=args, data_collator=default_data_collator)
        with phase("evaluate"):
            eval_loss = evaluate(trainer, data, spec["training"]["eval_max_blocks"])
    result = {
        "model": model_ref["path"],
        "revision": model_ref.get("revision"),
        "dataset": spec["dataset"],
        "device": device,
        "dtype": dtype_name,
        "eval_loss": eval_loss,
        "eval_ppl": math.exp(eval_loss),
        "config_sha256": spec_sha256(spec),
    }
    write_json(out_json, result)
    return result


def _save_tokenizer(spec: dict, final: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec["model"]["path"], revision=spec["model"].get("revision"))
    tok.save_pretrained(str(final))


@contextlib.contextmanager
def phase(name: str):
    """Log how long each phase of a job takes (start-up, training, evaluation, saving)."""
    t0 = time.perf_counter()
    print(f"[offloadbench] {name} ...", file=sys.stderr, flush=True)
    yield
    print(f"[offloadbench] {name} took {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _capture_warnings():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("once")  # each message once: torch.distributed repeats its own every step
        yield caught
    for w in caught:  # still show them in the log
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offloadbench.train", description=__doc__.split("\n")[0])
    parser.add_argument("--spec", required=True, help="resolved run spec (JSON text or file)")
    parser.add_argument("--data", required=True, type=Path, help="tokenized dataset folder (save_to_disk)")
    parser.add_argument("--out", required=True, type=Path, help="run folder: metrics.jsonl, summary.json, model/")
    parser.add_argument("--save-model", type=Path, default=None, help="write the final model here instead of OUT/model")
    parser.add_argument("--eval-only", action="store_true", help="evaluate the spec's model untrained; write OUT")
    args = parser.parse_args(argv)
    prepare_process()
    # DeepSpeed's ZeRO-3 calls torch.distributed APIs that torch deprecates, once per step; the
    # warning is not actionable here and would bury the log.
    import warnings

    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    spec = load_spec(args.spec)
    print("spec:", canonical_json(spec), file=sys.stderr)
    if args.eval_only:
        print(json.dumps(evaluate_base(spec, args.data, args.out)), file=sys.stderr)
        return 0
    t0 = time.perf_counter()
    try:
        summary = run(spec, args.data, args.out, args.save_model)
    except PreflightError as err:
        # The run cannot work as configured: fail the job, nothing was trained.
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - every training failure is recorded, then the workflow goes on
        traceback.print_exc()
        failed = record_failure(spec, args.out, err, time.perf_counter() - t0)
        print(
            f"[offloadbench] run {spec['run']} ended with status {failed['status']}: {failed['error']} "
            f"(recorded in {args.out / 'summary.json'}; delete {args.out} to try it again)",
            file=sys.stderr,
        )
        return 0
    print(
        json.dumps({k: summary[k] for k in ("run", "steps", "train_loss_final", "eval_loss", "tokens_per_s")}),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

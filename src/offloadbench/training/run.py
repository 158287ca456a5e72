"""One training run from its resolved spec to summary.json, and the base model's evaluation.

Outputs in ``out``: ``metrics.jsonl`` (one line per logged step, rank 0's), ``summary.json`` (the
results contract, workflow/schemas/summary.schema.json; rank 0's measurements plus every rank's
memory peaks under ``ranks``), ``model/`` (the final checkpoint: a full model or a LoRA adapter)
and ``checkpoints/`` (resume points, removed after a successful run).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import torch

from ..env import choose_dtype, libraries_loaded, libraries_needed
from ..errors import PreflightError
from ..io import tree_bytes, write_json
from ..spec import config_spec, spec_sha256
from .lifecycle import (
    check_disk,
    check_locked_memory,
    last_checkpoint,
    phase,
    publish_metrics,
    summary_record,
    trim_metrics,
)
from .model import count_params, load_model
from .observe import ActivationCopies, observed
from .offload import deepspeed_config, offload_label, offload_summary, release_swap_dir
from .procfs import process_age_s, tree_rss
from .recorder import MemorySampler, MetricsRecorder, gather_ranks, gpu_peaks, local_device, rank_entry
from .trainer import capture_warnings, evaluate, make_trainer, train_batch_size, training_arguments
from .watchdog import stop_if_gone
from .world import single_process_rendezvous, world


def run(spec: dict, data_dir: Path, out: Path, save_model: Path | None = None) -> dict:
    import datasets

    t0 = time.perf_counter()
    if spec["deepspeed"] and spec["world_size"] == 1:
        single_process_rendezvous()  # started as plain python (offloadbench.launch): no torchrun agent
    rank, world_size = world()
    is_main = rank == 0
    out.mkdir(parents=True, exist_ok=True)
    device, dtype_name = choose_dtype(spec["training"]["dtype"])
    if world_size != spec["world_size"]:
        raise PreflightError(
            f"run {spec['run']}: world_size={spec['world_size']} in the config but {world_size} processes were "
            "launched; start it with torchrun --nproc_per_node <world_size>"
        )
    ds = deepspeed_config(spec, out)
    zero3 = bool(ds) and ds.get("zero_optimization", {}).get("stage") == 3
    off = offload_label(spec, ds)
    check_locked_memory(spec, device)  # every rank locks its own buffers
    if is_main and last_checkpoint(out) is None:
        check_disk(spec, out, device)
    torch.manual_seed(spec["seed"])
    if device == "cuda":  # this rank's card, before anything allocates on the default one
        torch.cuda.set_device(local_device())
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
    # context), measured after the imports the run makes (env.libraries_needed) and before the
    # model loads.
    if "peft" in libraries_needed(spec):
        import peft  # noqa: F401
    from transformers import Trainer  # noqa: F401

    host_rss_baseline = tree_rss()
    # Interpreter, imports, rendezvous and dataset: what the job spends before its model loads.
    startup_s = process_age_s()
    with phase("load model"):
        model = load_model(spec, device, dtype_name, zero3)
    params_total, params_trainable = count_params(model)
    loaded = time.perf_counter()

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
    # OFFLOADBENCH_RECORDER=off (benchmarks/overhead.py only) trains without the sampling thread and
    # the per-step measurements, to measure what they cost; the summary says so.
    recording = os.environ.get("OFFLOADBENCH_RECORDER", "on") != "off"
    sampler = MemorySampler().start(thread=recording)
    tokens_per_step = tr["micro_batch_size"] * tr["gradient_accumulation_steps"] * world_size * block
    recorder = MetricsRecorder(partial, tokens_per_step, sampler, is_main, per_step=recording)
    # pin_memory needs an accelerator; on a CPU-only machine it raises.
    copies = ActivationCopies(pin_memory=device == "cuda") if tr["activation_offload"] else None
    trainer = make_trainer(model, data, args, recorder, copies)
    optimizer_fallback = None
    with phase("train"), capture_warnings() as caught:
        trainer.train(resume_from_checkpoint=resume)
        for w in caught:
            if "paged" in str(w.message).lower():
                optimizer_fallback = str(w.message)
    with phase("evaluate"):
        eval_loss = evaluate(trainer, data, tr["eval_max_blocks"])
    sampler.stop()
    in_effect = observed(spec, trainer, model, copies)
    ranks = gather_ranks(rank_entry(rank, sampler, host_rss_baseline))

    final = save_model or out / "model"
    stop_if_gone()  # nothing is published for a workflow that is gone
    with phase("save"):
        trainer.save_model(str(final))
    stop_if_gone()  # the resume points below stay for a workflow that is gone
    if is_main:
        _save_tokenizer(spec, final)
        publish_metrics(out)
        # Resume points are only needed while the run is unfinished.
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    if "nvme" in off.values():  # so are the swap files; the folder the user named stays
        release_swap_dir(spec, out)
    summary = summary_record(
        config_spec(spec),
        status="ok",
        offload=off,
        observed=in_effect,
        offload_observed=offload_summary(in_effect["offload"]),
        deepspeed_config=ds,
        device=device,
        dtype=dtype_name,
        world_size=world_size,
        params_total=params_total,
        params_trainable=params_trainable,
        steps=trainer.state.global_step,
        tokens_seen=tokens_per_step * trainer.state.global_step,
        wall_s=time.perf_counter() - t0,
        startup_s=startup_s,
        # Trainer, optimizer and DeepSpeed's engine (partitioning, offload buffers, NVMe swap files)
        # set up: from the model loaded to the first step's callback.
        setup_s=recorder.train_begin - loaded if recorder.train_begin is not None else None,
        train_s=recorder.train_s,
        recorder_cost=recorder.cost(),
        tokens_per_s=recorder.tokens_per_s,
        recorder="on" if recording else "off",
        train_batch_size=train_batch_size(trainer, tr, world_size),
        host_rss_baseline_bytes=host_rss_baseline,
        host_rss_peak_bytes=sampler.host_rss_peak,
        host_locked_peak_bytes=sampler.host_locked_peak,
        host_rss_above_baseline_bytes=sampler.host_rss_peak - host_rss_baseline,
        **gpu_peaks(),
        gpu_nvml_used_peak_bytes=sampler.nvml_used_peak,
        **recorder.load_peaks,
        nvme_bytes_written=recorder.io_bytes if "nvme" in off.values() else None,
        train_loss_final=recorder.last_loss,
        eval_loss=eval_loss,
        eval_ppl=math.exp(eval_loss),
        checkpoint_bytes=tree_bytes(final) if is_main else None,
        optimizer_fallback=optimizer_fallback,
        resumed_from=resume,
        rng=recorder.rng,
        ranks=ranks,
        libraries=libraries_loaded(),
        threads=torch.get_num_threads(),
    )
    stop_if_gone()
    if is_main:
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

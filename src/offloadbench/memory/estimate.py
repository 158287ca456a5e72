"""Training time on a GPU class, a model estimate and not a measurement: the GPU constants (H100),
estimate_time (per run: the larger of compute at an assumed MFU and the host/NVMe traffic of the
offloaded state at assumed bandwidths, for the optimizer steps and for the final evaluation) and
estimate_profile (every run of a profile, the total of those that fit the card, and the NVMe swap
written)."""

from __future__ import annotations

from ..spec import declared_runs, run_spec
from ..speed import MIN_STEPS, WARMUP_STEPS
from .counting import activation_bytes, arch, base_bytes, lora_params, param_counts, trainable_groups
from .measured import gpu_needed
from .predict import precision, predict
from .units import MiB
from .zero import nvme_param_placement, nvme_written_per_step, read_deepspeed, swappable_numel, zero3_settings

# The GPU class of the README's hardware table. These are assumptions for a model estimate, not
# measurements: no GPU run of the paper profile exists in this repository.
H100 = {
    "name": "NVIDIA H100 80GB HBM3 (SXM)",
    "memory_bytes": 81559 * MiB,  # nvidia-smi's total for this card; the CUDA context takes ~0.5 GiB of it
    "bf16_flops": 989e12,  # dense bf16 tensor-core peak, no sparsity
    "mfu": 0.40,  # assumed model-FLOPs utilisation of that peak
    "pcie_bytes_per_s": 50e9,  # host<->GPU, PCIe Gen5 x16 at ~80% of its 64 GB/s
    "nvme_bytes_per_s": 7e9,  # one PCIe Gen4 NVMe SSD, sequential reads and writes
}


# ---------------------------------------------------------------------------------------------
# Time on a GPU class (a model, not a measurement)


def estimate_time(spec: dict, model_config: dict, block_size: int, gpu: dict = H100) -> dict:
    """Seconds for the run's optimizer steps on one GPU of class ``gpu``: the larger of compute
    (FLOPs at the assumed MFU) and host/NVMe traffic (at the assumed bandwidths, fully overlapped).

    FLOPs per token: full fine-tuning 6N (forward 2N, backward 4N) plus attention 12·L·T·d
    (PaLM's count); LoRA and QLoRA 4N (no weight gradients for the frozen base) plus attention;
    gradient checkpointing adds one forward (2N + 4·L·T·d). N counts matmul weights (not the
    embedding). The final evaluation (eval_seconds, not in seconds) is eval_max_blocks //
    micro_batch_size forward passes (2N plus attention per token) with the same parameter traffic
    per pass as a training pass. Not modelled: 4-bit dequantization, the optimizer step (CPU Adam
    for offloaded optimizer state), loading and saving (resume checkpoints included).

    Also: ``nvme_written_bytes``, the swap DeepSpeed writes over the run (nvme_written_per_step x
    max_steps), and ``timed_steps``, the logged steps speed.py judges (every logging_steps-th
    optimizer step is logged, the first WARMUP_STEPS of them left out).
    """
    a, counts = arch(model_config), param_counts(model_config)
    tr, method = spec["training"], spec["method"]
    n = counts["total"] - counts["embed"] - counts["norms"] + (counts["embed"] if a["tied"] else 0)
    attn = 4 * a["L"] * block_size * a["q"]  # forward QK^T and AV per token
    per_token = (6 * n if method == "full" else 4 * n) + 3 * attn
    if tr["gradient_checkpointing"]:
        per_token += 2 * n + attn
    micro = tr["gradient_accumulation_steps"]
    tokens = tr["micro_batch_size"] * micro * block_size
    compute = per_token * tokens / (gpu["bf16_flops"] * gpu["mfu"])
    pcie = nvme = 0.0
    pass_pcie = pass_nvme = 0.0  # parameter traffic of one forward pass (training and evaluation)
    written = 0
    z3 = zero3_settings(read_deepspeed(spec, model_config), model_config)
    p = precision(spec, "cuda", bool(z3))
    trainable = counts["total"] if method == "full" else lora_params(model_config, spec["lora"])
    if z3:
        lp = base_bytes(model_config, spec, p) if p["qlora"] else p["act"] * counts["total"]
        passes = micro * (3 if tr["gradient_checkpointing"] else 2)  # forward, backward (and recompute)
        if z3["params"] != "none":
            pass_pcie = lp  # every pass gathers the parameters from the host
        if z3["params"] == "nvme":  # what lives on NVMe is read into the pinned buffers every pass
            frozen = [] if method == "full" else counts["tensors"]
            on_nvme = nvme_param_placement(trainable_groups(model_config, spec), 1, z3)[1] + frozen
            pass_nvme = p["act"] * swappable_numel(on_nvme, 1, p["act"], z3["min_aio_bytes"])
        pcie += passes * pass_pcie
        nvme += passes * pass_nvme
        if z3["optimizer"] != "none":
            pcie += micro * p["act"] * trainable + (0 if z3["params"] != "none" else lp)  # grads out, params back
        written = nvme_written_per_step(z3, model_config, spec, p["act"])
        nvme += 2 * written  # read before the step, written after it
    if tr["activation_offload"]:
        acts = activation_bytes(model_config, spec, p, block_size)["saved"]
        pcie += 2 * micro * acts  # to the host after forward, back in backward
    times = {"compute": compute, "pcie": pcie / gpu["pcie_bytes_per_s"], "nvme": nvme / gpu["nvme_bytes_per_s"]}
    bound = max(times, key=times.get)
    # Evaluation: forward passes only (no recompute, nothing saved for backward), micro_batch_size
    # blocks each (per_device_eval_batch_size), the last partial batch dropped (trainer.evaluate).
    batches = (tr["eval_max_blocks"] or 0) // tr["micro_batch_size"]
    eval_pass = {
        "compute": (2 * n + attn) * tr["micro_batch_size"] * block_size / (gpu["bf16_flops"] * gpu["mfu"]),
        "pcie": pass_pcie / gpu["pcie_bytes_per_s"],
        "nvme": pass_nvme / gpu["nvme_bytes_per_s"],
    }
    eval_bound = max(eval_pass, key=eval_pass.get)
    logged = tr["max_steps"] // tr["logging_steps"]
    return {
        "seconds": times[bound] * tr["max_steps"],
        "step_seconds": times[bound],
        "bound": bound,
        "eval_seconds": eval_pass[eval_bound] * batches if tr["eval_max_blocks"] else None,
        "eval_bound": eval_bound,
        "eval_batches": batches,
        "flops_per_token": per_token,
        "tokens": tokens * tr["max_steps"],
        "steps": tr["max_steps"],
        "logged_steps": logged,
        "timed_steps": max(0, logged - WARMUP_STEPS),
        "nvme_written_bytes": written * tr["max_steps"],
        "gpu": gpu["name"],
        "assumptions": f"model estimate: {gpu['bf16_flops'] / 1e12:.0f} TFLOPS bf16 at {gpu['mfu']:.0%} MFU, "
        f"PCIe {gpu['pcie_bytes_per_s'] / 1e9:.0f} GB/s, NVMe {gpu['nvme_bytes_per_s'] / 1e9:.0f} GB/s",
    }


# ---------------------------------------------------------------------------------------------
# A whole profile on one GPU (the hardware table's time column and its total)


def estimate_profile(config: dict, model_config: dict, gpu: dict = H100) -> dict:
    """Every declared run of a profile on one ``gpu``, one after another: per run its estimate_time,
    whether it fits (measured.gpu_needed within the card, as the hardware table and
    offloadbench.prediction decide it) and its total (training plus final evaluation);
    for the profile the total seconds of the runs that fit (a run expected to run out of memory
    stops at once), the NVMe swap written, and the runs whose speed speed.py could not judge
    (fewer than MIN_STEPS timed steps). Downloads, the base model's evaluation, loading, saving
    and DeepSpeed's op compilation are not in it."""
    runs = {}
    for name in declared_runs(config):
        spec = run_spec(config, name)
        block = spec["block_size"]
        t = estimate_time(spec, model_config, block, gpu)
        fits = gpu_needed(predict(spec, model_config, block, "cuda")) <= gpu["memory_bytes"]
        runs[name] = {**t, "fits": fits, "total_seconds": t["seconds"] + (t["eval_seconds"] or 0) if fits else 0.0}
    return {
        "gpu": gpu["name"],
        "runs": runs,
        "seconds": sum(r["total_seconds"] for r in runs.values()),
        "nvme_written_bytes": sum(r["nvme_written_bytes"] for r in runs.values() if r["fits"]),
        "too_few_timed_steps": [r for r, t in runs.items() if t["fits"] and t["timed_steps"] < MIN_STEPS],
    }

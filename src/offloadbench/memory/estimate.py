"""Training time on a GPU class, a model estimate and not a measurement: the GPU constants (H100)
and estimate_time, the larger of compute at an assumed MFU and the host/NVMe traffic of the
offloaded state at assumed bandwidths."""

from __future__ import annotations

from .counting import activation_bytes, arch, base_bytes, lora_params, param_counts, trainable_groups
from .predict import precision
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
    embedding). Not modelled: 4-bit dequantization, the optimizer step (CPU Adam for offloaded
    optimizer state), evaluation, loading and saving.
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
    z3 = zero3_settings(read_deepspeed(spec, model_config), model_config)
    p = precision(spec, "cuda", bool(z3))
    trainable = counts["total"] if method == "full" else lora_params(model_config, spec["lora"])
    if z3:
        lp = base_bytes(model_config, spec, p) if p["qlora"] else p["act"] * counts["total"]
        passes = micro * (3 if tr["gradient_checkpointing"] else 2)  # forward, backward (and recompute)
        if z3["params"] != "none":
            pcie += passes * lp  # every pass gathers the parameters from the host
        if z3["optimizer"] != "none":
            pcie += micro * p["act"] * trainable + (0 if z3["params"] != "none" else lp)  # grads out, params back
        if z3["params"] == "nvme":  # what lives on NVMe is read into the pinned buffers every pass
            frozen = [] if method == "full" else counts["tensors"]
            on_nvme = nvme_param_placement(trainable_groups(model_config, spec), 1, z3)[1] + frozen
            nvme += passes * p["act"] * swappable_numel(on_nvme, 1, p["act"], z3["min_aio_bytes"])
        written = nvme_written_per_step(z3, model_config, spec, p["act"])
        nvme += 2 * written  # read before the step, written after it
    if tr["activation_offload"]:
        acts = activation_bytes(model_config, spec, p, block_size)["saved"]
        pcie += 2 * micro * acts  # to the host after forward, back in backward
    times = {"compute": compute, "pcie": pcie / gpu["pcie_bytes_per_s"], "nvme": nvme / gpu["nvme_bytes_per_s"]}
    bound = max(times, key=times.get)
    return {
        "seconds": times[bound] * tr["max_steps"],
        "step_seconds": times[bound],
        "bound": bound,
        "flops_per_token": per_token,
        "tokens": tokens * tr["max_steps"],
        "gpu": gpu["name"],
        "assumptions": f"model estimate: {gpu['bf16_flops'] / 1e12:.0f} TFLOPS bf16 at {gpu['mfu']:.0%} MFU, "
        f"PCIe {gpu['pcie_bytes_per_s'] / 1e9:.0f} GB/s, NVMe {gpu['nvme_bytes_per_s'] / 1e9:.0f} GB/s",
    }

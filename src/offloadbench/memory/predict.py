"""The prediction: peak memory of a run per device (GPU, host, NVMe) and component, the GPU peak
of loading the model (predicted_load, see load_peak), the assumptions it rests on, the disk a run
needs (predicted_disk_bytes), and the prediction beside what the run measured (compare).

The prediction counts tensors, from the model's config.json and the run spec, the way this
repository trains (src/offloadbench/train.py):

- weights: full loads the model in fp32 (bf16/fp16 on CUDA is autocast over fp32 master weights);
  lora loads the frozen base's decoder projections in the run's dtype (bf16/fp16 on CUDA, fp32 on
  CPU by default) and its embeddings, norms and lm_head in fp32, as qlora has them, and PEFT keeps
  the adapters in fp32; qlora stores the decoder's linear layers in 4-bit NF4 and, after
  prepare_model_for_kbit_training, everything else (embeddings, norms, lm_head) in fp32; ZeRO-3
  holds the model in the run's dtype, partitioned over the ranks, plus an fp32 master copy
  inside the optimizer.
- gradients: fp32 for the trainable parameters, the LoRA adapters included (in the model's
  dtype for ZeRO-3, plus the fp32 copy its optimizer steps on).
- optimizer: AdamW's two moments (fp32; 8-bit for paged_adamw_8bit).
- activations: what autograd keeps for backward, tensor by tensor, for one micro-batch through
  transformers' LlamaForCausalLM with SDPA attention, plus the loss gradient at the start of
  backward (see :func:`activation_bytes`; the CPU figures match torch's own count exactly,
  tests/test_memory.py).

Each component is placed where the run keeps it: on the GPU, in host memory (offloaded state,
DeepSpeed's pinned swap buffers, save_on_cpu activations) or in NVMe swap files. On a CPU-only
run everything that would be on the accelerator is in host memory: it is reported under host
and gpu is 0, so that the measured host RSS can be compared with it.
"""

from __future__ import annotations

import json

from .counting import activation_bytes, arch, base_bytes, largest_tensor, lora_params, nf4_bytes_per_param, param_counts
from .units import DTYPE_BYTES
from .zero import nvme_written_per_step, read_deepspeed, zero3_placement, zero3_settings

COMPONENTS = ("weights", "gradients", "optimizer", "activations", "runtime")
DEVICES = ("gpu", "host", "nvme")


# ---------------------------------------------------------------------------------------------
# Precision


def precision(spec: dict, device: str, zero3: bool) -> dict:
    """Bytes per element of the tensors the activations are made of.

    - dtype auto: bf16 on CUDA (env.choose_dtype; every GPU class we name has bf16), fp32 on CPU.
    - The decoder layers' projections ("proj"): fp32 for full, the run's dtype for lora (train.py
      loads the frozen base in it), NF4 for qlora (nf4_bytes_per_param), and the run's dtype under
      ZeRO-3 (DeepSpeed holds the model itself in 16 bits; qlora stays NF4 there).
    - The other weights of the base, the ones qlora does not quantize: embedding, norms, lm_head
      ("base"): fp32 for full, and for lora and qlora alike, as prepare_model_for_kbit_training
      leaves qlora's (train.py upcasts lora's the same way: training.model.upcast_non_projections,
      so lora and qlora differ only in the projections' storage); the run's dtype under ZeRO-3
      for full and lora. The residual stream, RMSNorm outputs and RoPE's cos/sin are in that
      dtype ("resid"): the embedding's output is, and each norm casts back to it.
    - Without DeepSpeed, Trainer autocasts a 16-bit run: matmul outputs and attention are in the
      16-bit dtype ("act"), and every autocast linear keeps 16-bit copies of its input and weight
      for backward where they are not 16-bit already (fp32 weights of full, of the LoRA adapters
      and of lora's and qlora's lm_head; none of lora's 16-bit projections). ZeRO-3 does not autocast.
    - PEFT casts a LoRA adapter's input to the adapter weights' dtype ("adapter"): fp32, as
      get_peft_model keeps them (autocast_adapter_dtype), or 16 bits under ZeRO-3.
    - qlora: bitsandbytes' 4-bit layers return their input's dtype. Without
      prepare_model_for_kbit_training (quantization.prepare_kbit false: train.py always calls it,
      but other stacks, e.g. torchtune or FSDP-QLoRA loading the model in bf16, do not) the
      non-quantized weights stay in the compute dtype, and so does the residual stream. The same
      key describes a lora stack that loads the whole base in the compute dtype (torchtune).
    """
    dtype = spec["training"]["dtype"]
    if dtype == "auto":
        dtype = "bf16" if device == "cuda" else "fp32"
    act = DTYPE_BYTES[dtype]
    qlora = spec["method"] == "qlora"
    kbit_fp32 = spec.get("quantization", {}).get("prepare_kbit", True)
    lora = spec["method"] == "lora"
    base = act if (not qlora and zero3) or ((qlora or lora) and not kbit_fp32) else 4
    if qlora:
        proj = nf4_bytes_per_param(spec["quantization"]["double_quant"])
    else:
        proj = act if zero3 or spec["method"] == "lora" else 4
    return {
        "dtype": dtype,
        "act": act,
        "proj": proj,
        "base": base,
        "resid": base,
        "adapter": act if zero3 and not qlora else 4,
        "autocast": act < 4 and not zero3,
        "qlora": qlora,
        "cuda": device == "cuda",
    }


# ---------------------------------------------------------------------------------------------
# The prediction


def predict(spec: dict, model_config: dict, block_size: int, device: str) -> dict:
    """Predicted peak bytes per device and component for one rank of a run (host: per node)."""
    ds = read_deepspeed(spec, model_config)
    z3 = zero3_settings(ds, model_config)
    p = precision(spec, device, bool(z3))
    counts = param_counts(model_config)
    tr, method = spec["training"], spec["method"]
    ws, nodes = spec.get("world_size", 1), spec.get("num_nodes", 1)
    n_lora = lora_params(model_config, spec["lora"]) if method != "full" else 0
    trainable = counts["total"] if method == "full" else n_lora
    out = {d: dict.fromkeys(COMPONENTS, 0) for d in DEVICES}
    notes = []

    def put(where: str, component: str, nbytes: float) -> None:
        # A CPU-only run keeps what would be on the accelerator in host memory.
        out["host" if where == "gpu" and device == "cpu" else where][component] += int(nbytes)

    base = base_bytes(model_config, spec, p)
    acts = activation_bytes(model_config, spec, p, block_size)
    offload_acts = tr["activation_offload"] and device == "cuda"

    if z3 is None:
        put("gpu", "weights", base + 4 * n_lora)
        put("gpu", "gradients", 4 * trainable * (2 if ws > 1 else 1))  # DDP: a bucket copy of the gradients
        opt = tr["optimizer"]
        if opt == "paged_adamw_8bit" and device == "cuda":
            put("gpu", "optimizer", 2 * trainable + 2 * 4 * trainable / 256)  # uint8 moments, fp32 absmax per 256
        else:
            put("gpu", "optimizer", 8 * trainable)  # fp32 first and second moments
        if opt == "adamw_torch" and device == "cuda":
            put("gpu", "optimizer", 4 * trainable)  # foreach AdamW's temporary (sqrt of the second moment);
            #   the fused kernel (adamw_torch_fused) updates in place and has none
        if method in ("full", "lora") and device == "cuda":
            # from_pretrained builds the model on the CPU; Trainer then moves it to the GPU.
            put("host", "weights", base)
            loaded = "fp32" if p["proj"] == 4 else f"{p['dtype']} projections, fp32 rest of the"
            notes.append(f"host: the {loaded} model is built in host memory before Trainer moves it to the GPU")
        if device == "cpu" and opt.startswith("paged_"):
            notes.append(f"{opt}: bitsandbytes falls back to its non-paged optimizer on CPU (32-bit states counted)")
        elif opt.startswith("paged_"):
            notes.append(
                "paged optimizer state is CUDA managed memory, counted on the GPU: torch's allocated peak does "
                "not include it, NVML's used memory does"
            )
    else:
        zero3_placement(put, z3, model_config, spec, p, base, notes)

    if offload_acts:
        # save_on_cpu moves every saved tensor to pinned host memory after forward and back during
        # backward: the GPU holds one layer's tensors at a time plus the loss gradient.
        put("host", "activations", acts["saved"])
        put("gpu", "activations", max(acts["loss_grad"], acts["one_layer"]))
    else:
        put("gpu", "activations", acts["peak"])

    ranks_per_node = ws // nodes
    if ranks_per_node > 1:
        for c in COMPONENTS:
            out["host"][c] *= ranks_per_node
            out["nvme"][c] *= ranks_per_node
    for d in DEVICES:
        out[d]["total"] = sum(out[d][c] for c in COMPONENTS)

    nvme_per_step = nvme_written_per_step(z3, model_config, spec, p["act"]) * ranks_per_node
    load = load_peak(spec, model_config, p, z3, base, n_lora) if device == "cuda" else 0
    return {
        "run": spec["run"],
        "method": method,
        "device": device,
        "dtype": p["dtype"],
        "predicted": out,
        # torch's allocated GPU peak while the model loads and the engine is set up (one rank):
        # summary.json's gpu_load_allocated_peak_bytes; 0 on a CPU run
        "predicted_load": {"gpu": int(load)},
        "ranks_per_node": ranks_per_node,
        "params": {"total": counts["total"] + n_lora, "trainable": trainable},  # as train.count_params counts
        "activations": acts,
        "nvme_written": {
            "per_step": nvme_per_step,
            "steps": tr["max_steps"],
            "total": nvme_per_step * tr["max_steps"],
        },
        "assumptions": assumptions(spec, device, p, z3, block_size) + notes,
    }


def load_peak(spec: dict, cfg: dict, p: dict, z3: dict | None, base: float, n_lora: int) -> float:
    """One rank's GPU bytes at the peak of loading the model and setting up the engine (before the
    training peaks are reset), on CUDA:

    - without ZeRO-3, the weights as loaded: full and lora are built in host memory and moved to
      the GPU whole with their adapters; qlora is quantized straight onto the GPU (device_map), and
      prepare_model_for_kbit_training's upcast holds the 16-bit copy of its largest non-quantized
      tensor (embedding or lm_head) beside the fp32 one for a moment.
    - ZeRO-3, full and lora: zero.Init partitions every parameter as it loads, so the GPU holds this
      rank's partition (none with offload_param) and the largest tensor, gathered whole while it is
      loaded; DeepSpeed's set-up then creates the optimizer state where it lives (on the GPU without
      offload_optimizer: the fp32 master and both moments, and the fp32 gradient of one sub-group).
    - ZeRO-3, qlora: transformers skips zero.Init for a quantized model, so the whole 4-bit model
      (NF4 projections and the fp32 parts prepare_model_for_kbit_training leaves) and its adapters
      sit on one GPU, with the upcast's 16-bit copy, before DeepSpeed partitions it; the larger of
      that and the partitioned set-up is the peak.
    """
    counts, a = param_counts(cfg), arch(cfg)
    biggest_other = a["V"] * a["H"]  # embedding / lm_head: the largest tensor qlora does not quantize
    whole = base + 4 * n_lora + (p["act"] * biggest_other if p["qlora"] and p["base"] > p["act"] else 0)
    if z3 is None:
        return whole
    ws, cb = spec.get("world_size", 1), p["act"]
    trainable = n_lora or counts["total"]
    lp = (base if p["qlora"] else cb * counts["total"]) + cb * n_lora
    part = -(-trainable // ws)
    partitioned = (lp / ws if z3["params"] == "none" else 0) + cb * largest_tensor(cfg)
    if z3["optimizer"] == "none":
        partitioned += 12 * part + 4 * min(part, z3["sub_group_size"])
    return max(whole, partitioned) if p["qlora"] else partitioned


def assumptions(spec: dict, device: str, p: dict, z3: dict | None, block_size: int) -> list[str]:
    tr = spec["training"]
    out = [
        "bytes of tensors only: the allocator's slack (CUDA reserved vs allocated, glibc heap retention on CPU), "
        "the CUDA context and library workspaces are not predicted",
        f"activations of one micro-batch of {tr['micro_batch_size']} x {block_size} tokens, SDPA attention (q, k, "
        "v, output and logsumexp kept, no attention matrix); on CPU this count equals torch's saved tensors "
        "exactly (tests/test_memory.py), on CUDA dropout masks are assumed bool",
        "components are summed: buffers that exist only during the optimizer step are counted as if they "
        "coexisted with the activations",
    ]
    if device == "cpu":
        out.append(
            "CPU-only run: everything that would be on the accelerator is in host memory and reported under "
            f"host (gpu is 0); {p['dtype']} training"
        )
    elif p["autocast"] and not p["qlora"] and p["proj"] < 4:
        out.append(
            f"frozen base's projections loaded in {p['dtype']}, its embedding, norms and lm_head in fp32 (as "
            "qlora's after prepare_model_for_kbit_training); LoRA adapters, their gradients and optimizer state "
            f"in fp32; {p['dtype']} autocast: 16-bit matmul outputs, fp32 residual stream, and 16-bit copies of "
            "the adapter and lm_head weights kept for backward (counted under activations)"
        )
    elif p["autocast"]:
        out.append(
            f"{p['dtype']} autocast over fp32 weights: 16-bit matmul outputs, fp32 residual stream, and 16-bit "
            "copies of the linear weights kept for backward (counted under activations)"
        )
    if tr["gradient_checkpointing"]:
        out.append("gradient checkpointing: one input per layer kept, layers recomputed one at a time in backward")
    if tr["activation_offload"]:
        out.append(
            "activation_offload (save_on_cpu): saved tensors in pinned host memory; the GPU holds one layer's at a time"
            if device == "cuda"
            else "activation_offload on CPU: save_on_cpu keeps tensors where they are (no change)"
        )
    if z3 and p["qlora"] and device == "cuda":
        out.append(
            "qlora under ZeRO-3 on CUDA: no autocast; activations counted in the 16-bit dtype, though the fp32 "
            "weights prepare_model_for_kbit_training leaves may keep parts of them in fp32"
        )
    if z3:
        out.append(
            f"ZeRO-3 ({spec['world_size']} rank(s)): parameters {z3['params']}, optimizer {z3['optimizer']}; "
            "per-rank partitions, host and NVMe summed over the ranks of one node"
        )
        if z3["optimizer"] == "nvme":
            out.append(
                "nvme: predicted bytes are the swap files' size; nvme_written is what the run writes to them "
                "(compared with the measured nvme_bytes_written)"
            )
    return out


# ---------------------------------------------------------------------------------------------
# Disk: NVMe swap files and checkpoints (for the disk precheck)


def predicted_disk_bytes(spec: dict, model_config: dict, block_size: int, device: str) -> dict:
    """Disk a run needs at its peak: NVMe swap files (in spec.nvme_dir), the final model and the
    resume checkpoints Trainer keeps (save_total_limit=2, so three exist while a new one is being
    written), all in the run folder; tokenizer and config files (a few MB) are not counted."""
    pred = predict(spec, model_config, block_size, device)
    z3 = zero3_settings(read_deepspeed(spec, model_config), model_config)
    counts, p = param_counts(model_config), precision(spec, device, bool(z3))
    trainable = pred["params"]["trainable"]
    if spec["method"] != "full":
        final = 4 * trainable  # the LoRA adapter (fp32), not the base
    elif z3:
        final = p["act"] * counts["total"]  # stage3_gather_16bit_weights_on_model_save: the run's dtype
    else:
        final = 4 * counts["total"]  # the fp32 model Trainer trained
    optimizer_state = (12 if z3 else 8) * trainable  # DeepSpeed adds the fp32 master weights
    tr = spec["training"]
    kept = min(3, tr["max_steps"] // tr["save_steps"]) if tr["save_steps"] else 0
    nvme = pred["predicted"]["nvme"]["total"]
    return {
        "nvme_swap": nvme,
        "nvme_dir": spec.get("nvme_dir"),
        "final_model": final,
        "resume_checkpoint": final + optimizer_state,
        "resume_checkpoints_at_peak": kept,
        "total": nvme + final + kept * (final + optimizer_state),
        "nvme_written": pred["nvme_written"]["total"],
    }


# ---------------------------------------------------------------------------------------------
# Prediction beside measurement


def compare(prediction: dict, summary: dict) -> dict:
    """The prediction with what summary.json measured and ratio = measured / predicted (null where
    either is missing). The measured runtime baseline (host RSS after imports, before the model
    loads) joins the predicted host figure as its runtime component when summary.json has it."""
    out = json.loads(json.dumps(prediction))
    host = out["predicted"]["host"]
    # Host memory is per node: the ranks that ran beside rank 0 (summary.json's ranks) add up.
    ranks = summary.get("ranks") or []
    local = [r for r in ranks if r.get("host") == ranks[0].get("host")] if len(ranks) > 1 else []
    baseline = summary.get("host_rss_baseline_bytes")
    measured_host = summary.get("host_rss_peak_bytes")
    if local:
        baseline = _sum_or_none(r.get("host_rss_baseline_bytes") for r in local)
        measured_host = _sum_or_none(r.get("host_rss_peak_bytes") for r in local)
        out["assumptions"].append(f"host measured: the sum of the peaks of the {len(local)} ranks on rank 0's node")
    if baseline is not None:
        host["runtime"] = int(baseline)
        host["total"] = sum(host[c] for c in COMPONENTS)
        out["assumptions"].append("host runtime: measured (summary.json host_rss_baseline_bytes), not predicted")
    else:
        out["assumptions"].append(
            "host runtime (Python, torch and libraries; ~0.5 GiB on CPU here) left out: summary.json has no "
            "host_rss_baseline_bytes, so the host ratio includes it"
        )
    measured = {
        "gpu": summary.get("gpu_allocated_peak_bytes"),
        "host": measured_host,
        "nvme": summary.get("nvme_bytes_written"),
    }
    expected = {
        "gpu": out["predicted"]["gpu"]["total"],
        "host": host["total"],
        # bytes written, not the swap files' size; rank 0 measures its own writes
        "nvme": out["nvme_written"]["total"] // max(1, out.get("ranks_per_node", 1)),
    }
    out["measured"] = measured
    # The peak of loading and set-up, beside its prediction (torch's allocated bytes on rank 0).
    load = summary.get("gpu_load_allocated_peak_bytes")
    out["measured_load"] = {"gpu": load}
    out["ratio_load"] = {"gpu": _ratio(load, out.get("predicted_load", {}).get("gpu"))}
    out["measured_detail"] = {
        k: summary.get(k)
        for k in (
            "gpu_reserved_peak_bytes",
            "gpu_nvml_used_peak_bytes",
            "host_rss_baseline_bytes",
            "checkpoint_bytes",
            "params_total",
            "params_trainable",
            "status",
        )
    }
    out["ratio"] = {d: _ratio(measured[d], expected[d]) for d in DEVICES}
    # The same comparison without the runtime: beside a measured baseline of ~0.5 GiB, a total can
    # agree to 15% while what the model predicts (the run's own states, buffers and activations) is
    # off by 2x.
    own = host["total"] - host["runtime"]
    above = None if measured_host is None or baseline is None else int(measured_host - baseline)
    out["above_baseline"] = {
        "predicted": {"host": own},
        "measured": {"host": above},
        "ratio": {"host": _ratio(above, own)},
    }
    if summary.get("device") and summary["device"] != out["device"]:
        out["assumptions"].append(f"predicted for {out['device']} but the run ran on {summary['device']}")
    return out


def _sum_or_none(values) -> int | None:
    values = list(values)
    return None if any(v is None for v in values) else sum(values)


def _ratio(measured, predicted) -> float | None:
    if measured is None or not predicted:
        return None
    return round(measured / predicted, 4)

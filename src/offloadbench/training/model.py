"""The model a run trains: the base for its method (full, LoRA, 4-bit QLoRA) with LoRA adapters.

- method full: every weight trains (fp32 master weights; bf16/fp16 autocast on CUDA).
- method lora: PEFT LoRA adapters on ``lora.target_modules``; the base stays frozen, its decoder
  projections in the compute dtype (a frozen base needs no fp32 master copy) and everything else
  (embeddings, norms, lm_head) in fp32, as QLoRA's are after ``prepare_model_for_kbit_training``:
  LoRA and QLoRA differ only in how the projections are stored (16-bit vs NF4).
- method qlora: the base is quantized to 4-bit through ``BitsAndBytesConfig`` (NF4, double
  quantization, compute dtype from the hardware) and prepared with ``prepare_model_for_kbit_training``.
"""

from __future__ import annotations

import math

import torch

from ..env import torch_dtype
from ..errors import PreflightError
from .recorder import local_device


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
    from transformers import AutoModelForCausalLM

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
        from peft import prepare_model_for_kbit_training

        # ZeRO-3 partitions parameters by their storage dtype, so the packed 4-bit weights are
        # stored in the compute dtype there (bnb_4bit_quant_storage), as PEFT documents.
        storage = compute_dtype if zero3 else None
        kwargs = {"quantization_config": quantization_config(spec, compute_dtype, storage)}
        if zero3:
            kwargs["dtype"] = compute_dtype
        else:
            kwargs["device_map"] = {"": local_device() if device == "cuda" else "cpu"}  # this rank's GPU
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
        # frozen LoRA base needs no master copy: its projections are held in the compute dtype and
        # the rest is upcast to fp32 as QLoRA's is (the adapters stay fp32: PEFT's
        # autocast_adapter_dtype). Under ZeRO-3 zero.Init has partitioned the parameters while
        # loading and DeepSpeed holds the model in the compute dtype; they are left as they are.
        dtype = compute_dtype if spec["method"] == "lora" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(model_ref["path"], dtype=dtype, **common)
        if spec["method"] == "lora" and not zero3:
            upcast_non_projections(model)
        if gc:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    model.config.use_cache = False
    if device == "cpu" and not zero3:
        own_memory(model)
    if spec["method"] in ("lora", "qlora"):
        model = add_adapters(model, spec, gc)
    return model


def projection_modules(model) -> dict:
    """name -> module of the linear layers that QLoRA stores in 4 bits: every ``nn.Linear`` but the
    output embedding (transformers' bitsandbytes quantizer keeps lm_head in full precision) and
    but the LoRA adapters' own layers."""
    head = model.get_output_embeddings()
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear)
        and m is not head
        and "lm_head" not in name.split(".")  # also its base_layer where LoRA targets lm_head
        and not any(part.startswith("lora_") for part in name.split("."))
    }


@torch.no_grad()
def upcast_non_projections(model) -> None:
    """What ``prepare_model_for_kbit_training`` does to a 4-bit model's non-quantized parameters
    (peft/utils/other.py: every fp16/bf16 parameter that is not a Params4bit goes to fp32), done
    to a 16-bit LoRA base with its projections standing in for the 4-bit layers: embeddings,
    norms and lm_head become fp32, the projections keep the compute dtype."""
    keep = {id(p) for m in projection_modules(model).values() for p in m.parameters(recurse=False)}
    for p in model.parameters():
        if id(p) not in keep and p.dtype in (torch.float16, torch.bfloat16):
            p.data = p.data.to(torch.float32)


@torch.no_grad()
def own_memory(model) -> None:
    """Copy the parameters and buffers that stay in host memory out of the checkpoint's memory map.

    from_pretrained maps the safetensors file and hands out views of it: a frozen LoRA base is then
    file pages (the kernel may drop and reread them), and after QLoRA's quantization the whole
    unquantized file stays mapped and resident because its embedding still views into it. Either
    way the host RSS measures the checkpoint file, not what the method holds. Copied, each run holds
    its own weights in the precision its method keeps them, and the mapping goes."""
    for module in model.modules():
        for p in module._parameters.values():
            if p is not None and p.device.type == "cpu" and not getattr(p, "quant_state", None):
                p.data = p.data.clone()
        for name, b in module._buffers.items():
            if b is not None and b.device.type == "cpu":
                module._buffers[name] = b.clone()


def add_adapters(model, spec: dict, gradient_checkpointing: bool):
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

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
    if gradient_checkpointing:
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

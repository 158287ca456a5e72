"""The Hugging Face Trainer of a run: its arguments, the step that offloads activations, evaluation."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from .observe import ActivationCopies


def make_trainer(model, data, args, recorder, copies: ActivationCopies | None):
    from transformers import Trainer, default_data_collator

    class OffloadTrainer(Trainer):
        """Trainer whose forward+backward keeps saved activations in host memory when asked
        (``copies``: training.activation_offload), counting what it moves there."""

        def training_step(self, *a, **kw):
            with copies.hooks() if copies is not None else contextlib.nullcontext():
                return super().training_step(*a, **kw)

        def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
            if not zero3_adapter(self):
                return super().save_model(output_dir, _internal_call)
            # Trainer's own path gathers every parameter, the frozen base included, and keeps the
            # trainable ones (DeepSpeed's _zero3_consolidated_16bit_state_dict with
            # exclude_frozen_parameters): the whole model's gathers for an adapter's file, at every
            # resume point. On a CPU it also slowed the rest of the run: gloo's worker thread copies
            # each large gathered tensor (embedding, LM head) with OpenMP, and the second thread
            # team it starts stays, so libgomp throttles its spin-waiting from then on; qlora_offload
            # stepped 15-100% slower after its step-20 checkpoint (docs/benchmarks.md).
            state_dict = zero3_adapter_state_dict(self.model, self.args.should_save)
            self._save(output_dir or self.args.output_dir, state_dict=state_dict)

    return OffloadTrainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        data_collator=default_data_collator,
        callbacks=[recorder],
    )


def zero3_adapter(trainer) -> bool:
    """Is this trainer's model a PEFT adapter on a ZeRO-3 partitioned base?"""
    engine = getattr(trainer, "deepspeed", None)  # the DeepSpeed engine, once training has set it up
    if not trainer.is_deepspeed_enabled or engine is None:
        return False
    peft = sys.modules.get("peft")  # a run without adapters never imports it (env.hide_libraries)
    stage = engine.config.get("zero_optimization", {}).get("stage")
    return stage == 3 and peft is not None and isinstance(trainer.model, peft.PeftModel)


def zero3_adapter_state_dict(model, writer: bool) -> dict | None:
    """The trainable parameters of a ZeRO-3 partitioned PEFT model, gathered whole, under the names
    PeftModel.save_pretrained expects (those DeepSpeed's consolidated state dict gives), on the
    process that writes the checkpoint (Trainer's ``args.should_save``); None on the others. Every
    rank must call it: the gather is a collective."""
    import deepspeed

    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    with deepspeed.zero.GatheredParameters([p for _, p in named]):
        if not writer:
            return None
        # clone: at one process the gathered tensor is a view of the live partition
        return {name: p.detach().cpu().clone() for name, p in named}


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
        # save_steps 0: no resume point at all (Trainer would otherwise save one at the last step)
        save_strategy="steps" if tr["save_steps"] else "no",
        save_steps=tr["save_steps"] or None,
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


def evaluate(trainer, data, max_blocks: int | None) -> float:
    """Mean token cross-entropy on the validation blocks, the same for every method.

    Every block has the same length, so the mean over blocks equals the mean over tokens.
    """
    ev = data["validation"]
    if max_blocks:
        ev = ev.select(range(min(max_blocks, len(ev))))
    return float(trainer.evaluate(eval_dataset=ev)["eval_loss"])


def train_batch_size(trainer, tr: dict, world_size: int) -> int:
    """Blocks per optimizer step over all ranks: what the DeepSpeed engine used for DeepSpeed runs
    (its config's "auto" filled in by Trainer), else micro-batch x accumulation x world size."""
    engine = trainer.model_wrapped
    if hasattr(engine, "train_batch_size") and callable(engine.train_batch_size):
        return int(engine.train_batch_size())
    return tr["micro_batch_size"] * tr["gradient_accumulation_steps"] * world_size


@contextlib.contextmanager
def capture_warnings():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("once")  # each message once: torch.distributed repeats its own every step
        yield caught
    for w in caught:  # still show them in the log
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)

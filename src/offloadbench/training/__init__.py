"""One training run, from its resolved spec to summary.json (entry point: offloadbench.train).

- model.py: the base model for the method (full, LoRA, 4-bit QLoRA) with its adapters.
- offload.py: the DeepSpeed config in effect, the NVMe swap folder, activation offload, labels.
- trainer.py: TrainingArguments, the Trainer subclass and evaluation.
- recorder.py: per-step metrics and memory peaks.
- lifecycle.py: disk check, resume points, published metrics, the summary and failure records.
- run.py: a run start to end, and the base model's evaluation.
"""

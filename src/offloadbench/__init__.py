"""offloadbench: QLoRA + CPU offload versus DeepSpeed ZeRO-3 offload, measured reproducibly."""

__version__ = "0.1.0"

"""The memory model: a run's predicted peak memory per device (GPU, host, NVMe), beside what the
run measured. Modules by responsibility (each imports only those above it):

- units: byte units and bytes per dtype.
- counting: a Llama's sizes and parameters from its config.json, LoRA and NF4 bytes, the largest
  and the trainable tensors, activation bytes per micro-batch, the model config and meta model.
- zero: DeepSpeed ZeRO-3's settings and placement rules, NVMe placement and bytes written per
  step, DeepSpeed's own estimate (copied from and calling DeepSpeed's source; see the module).
- predict: precision, the prediction per device and component, its assumptions, the disk a run
  needs, and the prediction beside a measured summary.json (compare).
- estimate: training time on a GPU class (H100), a model estimate.
- report: the README's hardware table.
- measured: what a published GPU measurement counts beside the predicted tensors (CUDA context).
- cli: the command line, ``python -m offloadbench.memory`` (see __main__).

Re-exported here: only what other modules of offloadbench import from offloadbench.memory.
"""

from .counting import largest_tensor, load_model_config
from .predict import predict, predicted_disk_bytes

__all__ = ["largest_tensor", "load_model_config", "predict", "predicted_disk_bytes"]

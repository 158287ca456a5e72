"""Build DeepSpeed's C++ ops once, ahead of the workflow, into torch's extension cache.

    python -m offloadbench.ops

DeepSpeed compiles its ops just in time on first use: cpu_adam (~60 s here), the CPU
accelerator's shared-memory communication op (~35 s) and async_io for NVMe offload (~220 s, needs
libaio-dev). Built here, in `make run`/`make test`'s setup, they land in the environment's own
extension cache (<venv>/torch_extensions, or TORCH_EXTENSIONS_DIR) that every later job reuses, so
no training job, test or timing includes a compiler run.
"""

from __future__ import annotations

import sys
import time

from .env import prepare_process


def main() -> int:
    prepare_process()
    import torch
    from deepspeed.ops.op_builder import AsyncIOBuilder, CPUAdamBuilder

    builders = [CPUAdamBuilder()]
    if not torch.cuda.is_available():
        from deepspeed.ops.op_builder import ShareMemCommBuilder

        builders.append(ShareMemCommBuilder())
    aio = AsyncIOBuilder()
    if aio.is_compatible(verbose=False):
        builders.append(aio)
    else:
        print(
            "warning: async_io cannot be built (is libaio-dev installed?); NVMe offload runs will fail", file=sys.stderr
        )
    for builder in builders:
        t0 = time.perf_counter()
        builder.load(verbose=False)
        print(f"{builder.NAME}: ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

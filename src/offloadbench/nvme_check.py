"""Refuse ZeRO-3 NVMe optimizer offload where DeepSpeed would train on stale gradients.

DeepSpeed (0.19.8, checked in docs/nvme-divergence.md) swaps the fp32 gradient of each parameter
partition of at least ``min_aio_bytes`` out to NVMe at the accumulation boundary, and before the
optimizer step reads it back into the sub-group's flat gradient buffer *at the parameter's offset in
that sub-group* (``partitioned_optimizer_swapper.py`` ``_swap_in_pinned_gradients``,
``pipelined_optimizer_swapper.py`` ``_swap_in_optimizer_state``). The buffer is page-locked, so the
read goes straight to ``O_DIRECT`` without a bounce buffer; when the offset in bytes is not a
multiple of the direct-I/O memory alignment (512 bytes: DeepSpeed's own ``O_DIRECT_ALIGNMENT`` and
the logical block size of common disks), the kernel rejects the read with EINVAL, DeepSpeed's aio
code never looks at the completion's result, and the optimizer steps on whatever the buffer held
before. Offsets are sums of the preceding partitions' sizes, so a model whose small tensors (norm
weights, biases) are not a multiple of 128 fp32 elements (hidden size 192 or 64; 128 and 256 are
fine on one rank, 128 is not on two: partitions are 1/world_size of each tensor) puts later large
tensors off the alignment.

:func:`nvme_optimizer_swap_problem` replays DeepSpeed's bookkeeping on the parameter shapes (no
torch, no DeepSpeed) and names the first affected tensor. The config-level work-around is
``zero_optimization.sub_group_size: 1`` (every parameter its own sub-group, so every swapped
gradient is read at offset 0); it keeps the optimizer state of tensors under ``min_aio_bytes`` in
host memory instead of on NVMe.

A second, separate failure is refused too (:func:`fast_init_sub_groups_on_nvme`): with parameters
and optimizer on NVMe, ``offload_optimizer.fast_init`` and parameters beyond
``offload_param.max_in_cpu``, deepspeed.initialize already changes the large parameters.
"""

from __future__ import annotations

import math
import mmap
import os
import tempfile
from collections.abc import Sequence

MIB = 1024**2
# deepspeed/runtime/swap_tensor/utils.py: MIN_AIO_BYTES, AIO_ALIGNED_BYTES
MIN_AIO_BYTES = MIB
AIO_ALIGNED_BYTES = 1024
# deepspeed/ops/csrc/aio/py_lib/deepspeed_py_io_handle.cpp: O_DIRECT_ALIGNMENT; also the logical
# block size of the disks this was tested on. A 4 KiB-sector (4Kn) disk needs 4096.
DIRECT_IO_ALIGNMENT = 512
# The work-around: zero_optimization.sub_group_size of 1 makes every parameter its own sub-group, so
# every swapped gradient is read back at offset 0 of its buffer.
SAFE_SUB_GROUP_SIZE = 1
DEFAULTS = {"sub_group_size": int(1e9), "block_size": 1048576, "intra_op_parallelism": 1, "max_in_cpu": int(1e9)}


def _int(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"DeepSpeed config key {key}: expected a non-negative number, got {value!r}")
    return int(value)


def _master_bytes(ds_config: dict) -> int:
    """Bytes per element of the fp32 master weights and their gradients (2 where the config asks
    for fp16/bf16 master weights and gradients)."""
    half = (ds_config.get("fp16") or {}).get("fp16_master_weights_and_grads") is True or (
        ds_config.get("bf16") or {}
    ).get("bf16_master_weights_and_grads") is True
    return 2 if half else 4


def sub_groups(partitions: Sequence[int], sub_group_size: int) -> list[list[int]]:
    """DeepSpeed's split of one optimizer group into sub-groups (stage3.py _create_fp16_sub_groups):
    partitions are gathered in order until their sum reaches sub_group_size."""
    if sub_group_size >= sum(partitions):
        return [list(partitions)]
    groups, current = [], []
    for i, n in enumerate(partitions):
        current.append(n)
        if sum(current) >= sub_group_size or i == len(partitions) - 1:
            groups.append(current)
            current = []
    return groups


def swapped_gradient_fragments(
    param_shapes: Sequence[Sequence[int]], ds_config: dict, world_size: int = 1
) -> list[dict]:
    """Every gradient piece DeepSpeed writes to and reads back from NVMe, with where it is read to.

    One dict per piece: param (index into param_shapes), sub_group, offset and numel (elements in
    the sub-group's gradient buffer), offset_bytes. Empty where the optimizer is not on NVMe.
    """
    zero = ds_config.get("zero_optimization") or {}
    if zero.get("stage") != 3 or (zero.get("offload_optimizer") or {}).get("device") != "nvme":
        return []
    aio = ds_config.get("aio") or {}
    sub_group_size = _int(zero.get("sub_group_size", DEFAULTS["sub_group_size"]), "zero_optimization.sub_group_size")
    block_size = _int(aio.get("block_size", DEFAULTS["block_size"]), "aio.block_size")
    parallel = _int(aio.get("intra_op_parallelism", DEFAULTS["intra_op_parallelism"]), "aio.intra_op_parallelism")
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    elem = _master_bytes(ds_config)
    min_aio_bytes = max(MIN_AIO_BYTES, block_size)  # optimizer_utils.py OptimizerSwapper.__init__
    alignment = AIO_ALIGNED_BYTES * parallel // elem  # numel_alignment, same place

    partitions = [math.ceil(math.prod(shape) / world_size) for shape in param_shapes]  # partition_numel()
    fragments, index = [], 0
    for g, group in enumerate(sub_groups(partitions, sub_group_size)):
        swappable_group = sum(group) * elem >= min_aio_bytes  # stage3.py _swappable_optimizer_subgroup
        offset = 0  # stage3.py set_grad_positions: offsets restart in every sub-group
        for n in group:
            if swappable_group and n * elem >= min_aio_bytes:
                # optimizer_utils.py _adjust_for_misaligned_lengths: an aligned head and a remainder
                aligned = n - n % alignment
                pieces = [(offset, aligned), (offset + aligned, n - aligned)] if n % alignment else [(offset, n)]
                for start, numel in pieces:
                    if numel * elem >= min_aio_bytes:  # the rest stays in memory (unswapped_gradients)
                        fragments.append(
                            {
                                "param": index,
                                "sub_group": g,
                                "offset": start,
                                "numel": numel,
                                "offset_bytes": start * elem,
                            }
                        )
            offset += n
            index += 1
    return fragments


def fast_init_sub_groups_on_nvme(
    param_shapes: Sequence[Sequence[int]], ds_config: dict, world_size: int = 1
) -> list[int]:
    """Sub-groups whose fp32 master DeepSpeed would build with offload_optimizer.fast_init from
    parameters on NVMe (stage3.py _create_fp32_partitions, the branch that fills
    nvme_fp16_partitions_info): swappable sub-groups that get no host flat buffer because the
    parameters before them already used up offload_param.max_in_cpu
    (_create_param_groups_fp16_flat_cpu_memory, _create_fp16_partitions_with_defragmentation)."""
    zero = ds_config.get("zero_optimization") or {}
    opt, par = zero.get("offload_optimizer") or {}, zero.get("offload_param") or {}
    if (
        zero.get("stage") != 3
        or opt.get("device") != "nvme"
        or par.get("device") != "nvme"
        or opt.get("fast_init") is not True
    ):
        return []
    sub_group_size = _int(zero.get("sub_group_size", DEFAULTS["sub_group_size"]), "zero_optimization.sub_group_size")
    max_in_cpu = _int(par.get("max_in_cpu", DEFAULTS["max_in_cpu"]), "zero_optimization.offload_param.max_in_cpu")
    block_size = _int((ds_config.get("aio") or {}).get("block_size", DEFAULTS["block_size"]), "aio.block_size")
    elem, min_aio_bytes = _master_bytes(ds_config), max(MIN_AIO_BYTES, block_size)
    partitions = [math.ceil(math.prod(shape) / world_size) for shape in param_shapes]
    flat, offset, out = min(sum(partitions), max_in_cpu), 0, []
    for g, group in enumerate(sub_groups(partitions, sub_group_size)):
        if offset + sum(group) > flat and sum(group) * elem >= min_aio_bytes:
            out.append(g)
        offset += sum(group)
    return out


def nvme_optimizer_swap_problem(
    param_shapes: Sequence[Sequence[int]],
    ds_config: dict,
    world_size: int = 1,
    direct_io_alignment: int = DIRECT_IO_ALIGNMENT,
) -> str | None:
    """Why this ZeRO-3 NVMe optimizer offload would silently train on wrong gradients, or None.

    param_shapes: the shapes of the trainable parameters in the order DeepSpeed gets them (one
    optimizer group: model.parameters() filtered on requires_grad, as transformers' Trainer passes
    them with an optimizer block in the DeepSpeed config). ds_config: the DeepSpeed config as
    DeepSpeed will see it (numbers, not "auto", for the keys read here: zero_optimization.stage,
    offload_optimizer.device, sub_group_size, aio.block_size, aio.intra_op_parallelism).
    """
    if direct_io_alignment < 1:
        raise ValueError(f"direct_io_alignment must be positive, got {direct_io_alignment}")
    bad = [
        f
        for f in swapped_gradient_fragments(param_shapes, ds_config, world_size)
        if f["offset_bytes"] % direct_io_alignment
    ]
    if not bad:
        on_nvme = fast_init_sub_groups_on_nvme(param_shapes, ds_config, world_size)
        if on_nvme:
            return (
                "DeepSpeed NVMe offload with offload_optimizer.fast_init true would build the fp32 master weights "
                f"of sub-group{'s' if len(on_nvme) > 1 else ''} {', '.join(map(str, on_nvme))} from parameters "
                "beyond offload_param.max_in_cpu; deepspeed.initialize then changes the large parameters themselves "
                "and training departs from the first step (see docs/nvme-divergence.md). Remove fast_init, or "
                "raise offload_param.max_in_cpu above the number of trainable parameters per rank"
            )
        return None
    f = bad[0]
    shape = tuple(param_shapes[f["param"]])
    return (
        f"DeepSpeed NVMe optimizer offload would read the swapped fp32 gradient of parameter #{f['param']} "
        f"(shape {shape}) back to byte offset {f['offset_bytes']} of sub-group {f['sub_group']}'s gradient "
        f"buffer, which is not a multiple of the {direct_io_alignment}-byte O_DIRECT alignment: the read "
        "fails silently and the optimizer steps on stale memory "
        f"({len(bad)} such gradient piece{'s' if len(bad) > 1 else ''}; see docs/nvme-divergence.md). "
        f"Set zero_optimization.sub_group_size to {SAFE_SUB_GROUP_SIZE} in the DeepSpeed config (each parameter "
        "its own sub-group), or offload the optimizer to cpu"
    )


def direct_io_alignment(directory: str | os.PathLike) -> int | None:
    """The memory alignment an O_DIRECT read into a buffer needs on the filesystem of directory:
    the smallest of 4, 64, 512, 1024, 2048 and 4096 bytes at which a 4 KiB read succeeds (pass it as
    direct_io_alignment), or None where O_DIRECT is not supported there (tmpfs before Linux 6.6, for
    one: DeepSpeed's NVMe offload cannot run there at all). tmpfs since 6.6 answers 4: no constraint."""
    if not hasattr(os, "O_DIRECT"):
        return None
    fd, path = tempfile.mkstemp(prefix=".dio-probe-", dir=directory)
    try:
        try:
            os.write(fd, b"\0" * 8192)
        finally:
            os.close(fd)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        except OSError:
            return None
        buf = mmap.mmap(-1, 3 * 4096)  # page-aligned
        view = memoryview(buf)
        try:
            for align in (4, 64, 512, 1024, 2048, 4096):
                try:
                    if os.preadv(fd, [view[align : align + 4096]], 0) == 4096:
                        return align
                except OSError:
                    continue
            return None
        finally:
            view.release()
            buf.close()
            os.close(fd)
    finally:
        os.unlink(path)

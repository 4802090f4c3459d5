"""What the mean teacher needs under nnU-Net's DDP (``-num_gpus N``), as plain functions.

nnU-Net splits the annotated batch over ranks and lets each rank sample annotated cases freely.
The unannotated half follows the same split, each rank samples its own shard of the unannotated
scans, and every rank must hold the same teacher: the EMA of the (DDP-synchronised) student's
parameters is identical everywhere, and the floating buffers (BatchNorm statistics) are averaged
across ranks after each update so that they are too.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn


def split_batch_size(global_batch_size: int, world_size: int, rank: int) -> int:
    """This rank's share of a global batch, as nnU-Net splits it (the first ranks take the remainder)."""
    if global_batch_size < world_size:
        raise ValueError(f"a global batch of {global_batch_size} cannot be split over {world_size} ranks")
    return global_batch_size // world_size + (1 if rank < global_batch_size % world_size else 0)


def shard(identifiers: Sequence[str], world_size: int, rank: int) -> list[str]:
    """Every ``world_size``-th case starting at ``rank``: disjoint shards covering all cases."""
    ordered = sorted(identifiers)
    if len(ordered) < world_size:
        raise ValueError(f"{len(ordered)} unannotated scans cannot be shared by {world_size} ranks")
    return ordered[rank::world_size]


@torch.no_grad()
def average_buffers(module: nn.Module) -> None:
    """All-reduce-average the floating buffers of ``module`` over the default process group (no-op
    without one), so that per-rank statistics become one identical set."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    world = dist.get_world_size()
    for buf in module.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf.div_(world)

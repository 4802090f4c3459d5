"""What the semi-supervised trainers need under nnU-Net's DDP (``-num_gpus N``), as plain functions.

nnU-Net splits the annotated batch over ranks and lets each rank sample annotated cases freely.
The unannotated half follows the same split, each rank samples its own shard of the unannotated
scans, and every rank must hold the same teacher: the EMA of the (DDP-synchronised) student's
parameters is identical everywhere, and the floating buffers (BatchNorm statistics) are averaged
across ranks after each update so that they are too. The EN / UDA adversary is one module on every
rank too: rank 0's initial weights are broadcast and its gradients averaged before each Adam step.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn


def unwrap(network: nn.Module) -> nn.Module:
    """The plain module inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers, in either
    order: what holds the parameter names checkpoints use."""
    while True:
        if isinstance(network, nn.parallel.DistributedDataParallel):
            network = network.module
        elif hasattr(network, "_orig_mod"):
            network = network._orig_mod
        else:
            return network


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


def _process_group() -> bool:
    return dist.is_available() and dist.is_initialized()


@torch.no_grad()
def broadcast_state(module: nn.Module, src: int = 0) -> None:
    """Give every rank rank ``src``'s parameters and buffers (no-op without a process group): one
    module, as DDP's constructor does for the network it wraps."""
    if not _process_group():
        return
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, src)


def average_gradients(module: nn.Module) -> None:
    """All-reduce-average the gradients of ``module`` (no-op without a process group), what DDP does in
    its backward: with the same start and optimizer, every rank then takes the same step."""
    if not _process_group():
        return
    world = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world)

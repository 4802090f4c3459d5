"""Weights, losses and steps of the two adversarial competitors (DeepMedic-EN, DeepMedic-UDA).

Pure functions, like :mod:`nnunet_mt.training.mean_teacher`; each says which network receives gradients.
Label convention of both adversaries: class 1 = annotated scan (UDA's source domain), 0 = unannotated
(UDA's target domain).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_mt.training.distributed import average_gradients
from nnunet_mt.training.mean_teacher import consistency_weight

ANNOTATED, UNANNOTATED = 1, 0


def en_weight(step: int, rampup_length: int = 400, max_weight: float = 0.1) -> float:
    """DeepMedic-EN's adversarial weight: ``max_weight * exp(-5 (1 - S/L)^2)`` for ``S < L``, then
    ``max_weight``. The sigmoid ramp and 0.1 are SSL4MIS' 3D adversarial-network defaults
    (``train_adversarial_network_3D.py``); we ramp over the same L steps as the mean teacher's beta."""
    return max_weight * consistency_weight(step, rampup_length)


def uda_weight(step: int, rampup_length: int = 400, warmup_steps: int = 100, max_weight: float = 0.05) -> float:
    """DeepMedic-UDA's lambda (Kamnitsas et al. 2017): 0 during ``warmup_steps`` (the domain discriminator
    learns first), then linear up to ``max_weight`` at step ``rampup_length``, constant after."""
    if step < 0 or warmup_steps < 0 or rampup_length < warmup_steps:
        raise ValueError(f"need 0 <= step and 0 <= warmup_steps <= rampup_length, got step={step}, "
                         f"warmup_steps={warmup_steps}, rampup_length={rampup_length}")
    if step < warmup_steps:
        return 0.0
    if step >= rampup_length:
        return max_weight
    return max_weight * (step - warmup_steps) / (rampup_length - warmup_steps)


def domain_labels(n_annotated: int, n_unannotated: int, device=None) -> torch.Tensor:
    """[1] * n_annotated + [0] * n_unannotated, the order of the 8 + 8 batch."""
    return torch.cat([torch.full((n_annotated,), ANNOTATED, dtype=torch.long, device=device),
                      torch.full((n_unannotated,), UNANNOTATED, dtype=torch.long, device=device)])


def adversary_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the adversary's logits (B, 2) against labels (B,): what the adversary minimises."""
    return F.cross_entropy(logits.float(), labels)


def en_segmenter_loss(logits_unannotated: torch.Tensor) -> torch.Tensor:
    """Zhang et al.'s adversarial term for the segmenter: cross-entropy of the evaluation network's logits
    on *unannotated* segmentations against "annotated". Gradients go to the segmenter only (the caller
    freezes the evaluation network): the segmenter learns to make unannotated segmentations look annotated."""
    labels = torch.full((len(logits_unannotated),), ANNOTATED, dtype=torch.long, device=logits_unannotated.device)
    return F.cross_entropy(logits_unannotated.float(), labels)


def uda_segmenter_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Kamnitsas et al.'s adversarial term: ``-L_adv``, minus the domain discriminator's cross-entropy on
    both domains, so minimising ``L_seg + lambda * this`` is ``L_seg - lambda L_adv``. Gradients go to the
    segmenter only (the caller freezes the discriminator); they are those of the discriminator's loss
    with the sign reversed (gradient reversal)."""
    return -adversary_loss(logits, labels)


def adversary_step(adversary: nn.Module, optimizer: torch.optim.Optimizer, inputs: Sequence[torch.Tensor],
                   labels: torch.Tensor) -> tuple[float, float]:
    """One optimizer step of the adversary on detached inputs; returns (loss, accuracy) before the step.
    Only the adversary receives gradients; under DDP they are averaged over the ranks first, so that every
    rank keeps the same adversary (the returned loss and accuracy are this rank's)."""
    adversary.train()
    optimizer.zero_grad(set_to_none=True)
    logits = adversary(*[x.detach().float() for x in inputs])
    loss = adversary_loss(logits, labels)
    loss.backward()
    average_gradients(adversary)
    optimizer.step()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return loss.item(), accuracy


@contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode without parameter gradients inside the block (the segmenter's turn)."""
    was_training = module.training
    flags = [p.requires_grad for p in module.parameters()]
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)
        module.train(was_training)


def center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Centre-crop the spatial axes of (B, C, *spatial) to ``size``."""
    slices = [slice(None), slice(None)]
    for have, want in zip(x.shape[2:], size):
        if want > have:
            raise ValueError(f"cannot crop {tuple(x.shape[2:])} to {tuple(size)}")
        lo = (have - want) // 2
        slices.append(slice(lo, lo + want))
    return x[tuple(slices)]


class FeatureTap:
    """Records the outputs of chosen modules during a forward pass (forward hooks) and aligns them on
    the output grid: DeepMedic-UDA's discriminator input (Kamnitsas et al. 2017: several layers of both
    pathways and the 1^3 layers, low-resolution ones upsampled, cropped to a common size).

    taps: (module, upsampling factor) pairs; factor f > 1 repeats each voxel f times per axis, as
    DeepMedic upsamples its subsampled pathway. Hooks see the same forward the loss sees, so it works
    through DDP / torch.compile wrappers.
    """

    def __init__(self, taps: Sequence[tuple[nn.Module, int]]) -> None:
        self.taps = list(taps)
        self.outputs: list[torch.Tensor | None] = [None] * len(self.taps)
        self._handles = []

    def __enter__(self) -> "FeatureTap":
        for i, (module, _) in enumerate(self.taps):
            self._handles.append(module.register_forward_hook(self._hook(i)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, i: int):
        def hook(module, inputs, output):
            self.outputs[i] = output
        return hook

    def aligned(self, output_size: Sequence[int]) -> torch.Tensor:
        """(B, sum of channels, *output_size): every recorded output upsampled and centre-cropped."""
        parts = []
        for (_, factor), out in zip(self.taps, self.outputs):
            if out is None:
                raise RuntimeError("FeatureTap: a tapped module did not run in the forward pass")
            if factor > 1:
                out = out.repeat_interleave(factor, 2).repeat_interleave(factor, 3).repeat_interleave(factor, 4)
            parts.append(center_crop(out, output_size))
        return torch.cat(parts, 1)

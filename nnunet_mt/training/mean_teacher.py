"""The adapted mean teacher of Cui et al. (IPMI 2019), Sections 2.2-2.3, as small pure functions.

Equations of the paper implemented here:

- Eq. 1, segmentation consistency ``Lc``: :func:`soft_dice_consistency`.
- Eq. 3, ramp-up of the consistency weight ``beta``: :func:`consistency_weight`.
- Eq. 4, teacher update ``theta'_t = alpha theta'_{t-1} + (1 - alpha) theta_t``: :func:`ema_update`,
  with the EMA decay ``alpha`` of Sec. 2.2 from :func:`ema_decay`.
- Eq. 5, input noise ``I' = (I + eta_s) * eta_m``: :func:`draw_input_noise`, :func:`apply_input_noise`.

Steps ``S`` count optimizer steps already taken: ``S = 0`` at the first step. The teacher never
receives gradients: its weights change only through :func:`ema_update`, and the consistency loss
detaches the teacher's probabilities itself.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

BUFFER_POLICIES = ("copy", "ema")


def _check_step(step: int, rampup_length: int) -> None:
    if step < 0:
        raise ValueError(f"step must be >= 0 (optimizer steps already taken), got {step}")
    if rampup_length < 0:
        raise ValueError(f"rampup_length must be >= 0, got {rampup_length}")


def consistency_weight(step: int, rampup_length: int = 400) -> float:
    """Weight ``beta`` of the consistency loss in ``L = Ls + beta Lc`` (Eq. 3 and the text below it).

    ``beta = exp(-5 (1 - S/L)^2)`` for ``S <= L`` and ``1`` for ``S > L``; the paper uses ``L = 400``.
    ``S`` is the number of optimizer steps already taken, so the first step has
    ``beta = exp(-5) ~ 0.0067``. ``rampup_length = 0`` switches the ramp off (``beta = 1``).
    """
    _check_step(step, rampup_length)
    if rampup_length == 0 or step >= rampup_length:
        return 1.0
    return math.exp(-5.0 * (1.0 - step / rampup_length) ** 2)


def ema_decay(step: int, rampup_length: int = 400, decay_rampup: float = 0.99,
              decay_after: float = 0.999) -> float:
    """EMA decay ``alpha`` of Eq. 4: 0.99 during the ramp-up (``S <= L``), 0.999 after (Sec. 2.2).

    A short memory while the student improves fast, a longer one once it slows down. Unlike the
    original mean teacher there is no ``min(1 - 1/(S+1), alpha)`` warm start: the paper's teacher
    starts from the supervised network, not from random weights.
    """
    _check_step(step, rampup_length)
    for name, value in (("decay_rampup", decay_rampup), ("decay_after", decay_after)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return decay_rampup if step <= rampup_length else decay_after


def _matching_tensors(kind: str, teacher: dict[str, torch.Tensor],
                      student: dict[str, torch.Tensor]) -> None:
    """Raise ValueError listing every name present in only one module or with different shapes."""
    problems = [f"{n}: only in teacher" for n in teacher.keys() - student.keys()]
    problems += [f"{n}: only in student" for n in student.keys() - teacher.keys()]
    problems += [f"{n}: teacher {tuple(teacher[n].shape)} vs student {tuple(student[n].shape)}"
                 for n in teacher.keys() & student.keys() if teacher[n].shape != student[n].shape]
    if problems:
        raise ValueError(f"teacher and student {kind} differ: " + "; ".join(sorted(problems)))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, alpha: float, buffers: str = "copy") -> None:
    """Eq. 4 in place: ``theta'_t = alpha theta'_{t-1} + (1 - alpha) theta_t`` for every float parameter.

    Nothing receives gradients (runs under ``torch.no_grad``); the teacher's parameters are only
    ever changed here. Non-floating parameters, if any, are copied. Pass the plain modules (not a
    DDP/``torch.compile`` wrapper, whose parameter names carry a prefix).

    Buffers (BatchNorm ``running_mean``/``running_var``/``num_batches_tracked``):

    - ``"copy"`` (default): the teacher takes the student's buffers. Running statistics describe
      the activations of the weights that produced them. The teacher's weights are an average of
      recent student weights (with alpha = 0.99 mostly of the last ~100 steps), so the student's
      current statistics are the best available estimate for them, and copying keeps the teacher's
      normalisation consistent with the weights it averages rather than lagging them twice.
    - ``"ema"``: floating buffers are averaged with the same ``alpha``; integer ones are copied.

    Raises ValueError if ``alpha`` is outside [0, 1], ``buffers`` is unknown, or the two modules'
    parameter (or buffer) names or shapes differ; the message lists every mismatch.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if buffers not in BUFFER_POLICIES:
        raise ValueError(f"buffers must be one of {BUFFER_POLICIES}, got {buffers!r}")
    t_params, s_params = dict(teacher.named_parameters()), dict(student.named_parameters())
    t_bufs, s_bufs = dict(teacher.named_buffers()), dict(student.named_buffers())
    _matching_tensors("parameters", t_params, s_params)
    _matching_tensors("buffers", t_bufs, s_bufs)

    for name, t in t_params.items():
        s = s_params[name].detach()
        if t.is_floating_point():
            t.mul_(alpha).add_(s.to(t.dtype), alpha=1.0 - alpha)
        else:
            t.copy_(s)
    for name, t in t_bufs.items():
        s = s_bufs[name]
        if buffers == "ema" and t.is_floating_point():
            t.mul_(alpha).add_(s.to(t.dtype), alpha=1.0 - alpha)
        else:
            t.copy_(s)


def soft_dice_consistency(student_probs: torch.Tensor, teacher_probs: torch.Tensor,
                          eps: float = 1e-6) -> torch.Tensor:
    """Eq. 1, the segmentation consistency loss ``Lc`` (a scalar tensor).

    ``Lc = 1 - mean_b (1/K) sum_i [2 sum_v s_iv t_iv / (sum_v s_iv + sum_v t_iv + eps)]``

    Inputs are softmax probabilities of shape ``(B, K, *spatial)``: the student's ``s`` and the
    teacher's ``t`` for two noisy versions of the same unannotated patches. The Dice is taken per
    sample ``b`` and label ``i`` over the voxels ``v`` of that sample, averaged over the ``K``
    labels, then over the batch (the expectation over ``X_u, eta, eta'``). Sums are in float32 at
    least. ``eps`` is in the denominator only; with softmax inputs every sum is positive, so it
    changes nothing but guards against a label absent from both maps (that label then scores 0).

    As in the paper the denominator is not squared: identical *one-hot* maps give 0, but identical
    soft maps do not (``sum s^2 / sum s < 1``), so the loss also sharpens the student.

    Gradient flows to ``student_probs`` only; ``teacher_probs`` is detached here.
    """
    if student_probs.shape != teacher_probs.shape:
        raise ValueError(f"student_probs {tuple(student_probs.shape)} and teacher_probs "
                         f"{tuple(teacher_probs.shape)} must have the same shape")
    if student_probs.ndim < 3:
        raise ValueError(f"expected (B, K, *spatial) probabilities, got shape {tuple(student_probs.shape)}")
    dtype = torch.promote_types(student_probs.dtype, torch.float32)
    s = student_probs.to(dtype)
    t = teacher_probs.detach().to(dtype)
    voxels = tuple(range(2, s.ndim))
    dice = 2.0 * (s * t).sum(voxels) / (s.sum(voxels) + t.sum(voxels) + eps)  # (B, K)
    return 1.0 - dice.mean(1).mean(0)


def draw_input_noise(shape: Sequence[int], additive_std: float = 0.05, multiplicative_std: float = 0.01,
                     generator: torch.Generator | None = None, device=None,
                     dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The random parameters of Eq. 5: ``(eta_s, eta_m)``, each of ``shape``.

    ``eta_s ~ N(0, additive_std)`` and ``eta_m ~ N(1, multiplicative_std)``, independently at every
    voxel, channel and sample (Sec. 2.3; the paper uses std 0.05 and 0.01). ``eta_s`` is drawn
    before ``eta_m``, in float32 on the generator's device and then moved to ``device``/``dtype``,
    so a seeded generator replays the same noise on any device. No gradients are involved.
    """
    for name, value in (("additive_std", additive_std), ("multiplicative_std", multiplicative_std)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    shape = tuple(int(n) for n in shape)
    if any(n < 0 for n in shape):
        raise ValueError(f"shape must have non-negative sizes, got {shape}")
    draw_device = generator.device if generator is not None else device
    eta_s = torch.randn(shape, generator=generator, device=draw_device) * additive_std
    eta_m = torch.randn(shape, generator=generator, device=draw_device) * multiplicative_std + 1.0
    return eta_s.to(device=device, dtype=dtype), eta_m.to(device=device, dtype=dtype)


def apply_input_noise(x: torch.Tensor, eta_s: torch.Tensor, eta_m: torch.Tensor) -> torch.Tensor:
    """Eq. 5: ``I' = (I + eta_s) * eta_m``. Noise tensors must broadcast to ``x``'s shape.

    Differentiable in ``x`` (gradient ``eta_m``), although inputs normally need none.
    """
    try:
        out_shape = torch.broadcast_shapes(x.shape, eta_s.shape, eta_m.shape)
    except RuntimeError:
        out_shape = None
    if out_shape != x.shape:
        raise ValueError(f"noise shapes eta_s {tuple(eta_s.shape)} and eta_m {tuple(eta_m.shape)} "
                         f"must broadcast to the input shape {tuple(x.shape)}")
    return (x + eta_s) * eta_m


def add_input_noise(x: torch.Tensor, additive_std: float = 0.05, multiplicative_std: float = 0.01,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw Eq. 5 noise of ``x``'s shape (on its device and dtype) and apply it: one noisy copy."""
    eta_s, eta_m = draw_input_noise(x.shape, additive_std, multiplicative_std, generator,
                                    device=x.device, dtype=x.dtype)
    return apply_input_noise(x, eta_s, eta_m)


@dataclass(frozen=True)
class MeanTeacherSchedule:
    """The paper's schedules in one place: ``beta`` (Eq. 3) and ``alpha`` (Eq. 4) per optimizer step."""

    rampup_length: int = 400
    decay_rampup: float = 0.99
    decay_after: float = 0.999

    def beta(self, step: int) -> float:
        """Consistency weight at ``step``; see :func:`consistency_weight`."""
        return consistency_weight(step, self.rampup_length)

    def alpha(self, step: int) -> float:
        """EMA decay at ``step``; see :func:`ema_decay`."""
        return ema_decay(step, self.rampup_length, self.decay_rampup, self.decay_after)


def make_teacher(student: nn.Module) -> nn.Module:
    """The teacher of Eq. 4: a copy of the student that never receives gradients.

    Its BatchNorm layers get momentum 0 so that its own forward passes normalise with the batch's
    statistics (as the student's do) without touching its running statistics, which come from
    :func:`ema_update` with ``buffers="ema"``: the EMA of the student's, like its weights.
    """
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    for m in teacher.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.0
    return teacher


def set_teacher_forward_mode(teacher: nn.Module) -> nn.Module:
    """Mode of the teacher's forward during training: BatchNorm in training mode (batch statistics),
    dropout off: the paper's ``f(X_u, eta', theta')`` has the input noise as its only randomness."""
    teacher.train()
    for m in teacher.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    return teacher


def uses_batch_statistics(module: nn.Module) -> bool:
    """Whether the module's output for one sample depends on the other samples of its batch: a
    BatchNorm layer (``SyncBatchNorm`` included) in training mode. InstanceNorm and GroupNorm do not."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in module.modules())


def forward_unannotated_half(network: nn.Module, x_annotated: torch.Tensor, x_unannotated: torch.Tensor):
    """The network's output on ``x_unannotated``, computed as if in the student's composite batch.

    The student sees one batch ``[x_annotated, x_unannotated']``, so its BatchNorm layers normalise over
    both halves. A target network (the teacher, the Π model's second pass) that saw only its
    unannotated patches would normalise over those alone and differ from the student even with
    identical weights and inputs: a systematic term in the consistency loss that has nothing to do
    with the noise. As the original mean teacher (Tarvainen & Valpola, CuriousAI's code), it is fed
    the same composite batch ``[x_annotated, x_unannotated]`` and the unannotated part of its output
    is returned (every output of a deep-supervision list). A network without batch statistics gives the
    same result on the unannotated half alone, so it gets only that (half the work)."""
    if not uses_batch_statistics(network):
        return network(x_unannotated)
    n = len(x_annotated)
    out = network(torch.cat([x_annotated, x_unannotated]))
    return [o[n:] for o in out] if isinstance(out, (list, tuple)) else out[n:]

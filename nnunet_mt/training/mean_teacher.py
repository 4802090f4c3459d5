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
import functools
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn


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
def ema_update(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """Eq. 4 in place: ``theta'_t = alpha theta'_{t-1} + (1 - alpha) theta_t`` for every float parameter and
    float buffer; non-floating ones (``num_batches_tracked``) are copied.

    The BatchNorm running statistics are averaged like the weights because they are used only where the
    teacher runs in eval mode (it is the model ``nnUNetv2_predict`` applies and the snapshots score), and
    there they must describe the averaged network: averaged over the same steps, they belong to the same
    weights. The teacher's own training forwards never update them (momentum 0, :func:`make_teacher`).

    Nothing receives gradients (runs under ``torch.no_grad``); the teacher's parameters are only ever
    changed here. Pass the plain modules (not a DDP/``torch.compile`` wrapper, whose parameter names carry
    a prefix). Raises ValueError if ``alpha`` is outside [0, 1] or the two modules' parameter (or buffer)
    names or shapes differ; the message lists every mismatch.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    t_params, s_params = dict(teacher.named_parameters()), dict(student.named_parameters())
    t_bufs, s_bufs = dict(teacher.named_buffers()), dict(student.named_buffers())
    _matching_tensors("parameters", t_params, s_params)
    _matching_tensors("buffers", t_bufs, s_bufs)
    for tensors, student_tensors in ((t_params, s_params), (t_bufs, s_bufs)):
        for name, t in tensors.items():
            s = student_tensors[name].detach()
            if t.is_floating_point():
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
    _check_probability_maps(student_probs, teacher_probs)
    s, t = _as_float(student_probs, teacher_probs)
    voxels = tuple(range(2, s.ndim))
    dice = 2.0 * (s * t).sum(voxels) / (s.sum(voxels) + t.sum(voxels) + eps)  # (B, K)
    return 1.0 - dice.mean(1).mean(0)


def _check_probability_maps(student_probs: torch.Tensor, teacher_probs: torch.Tensor) -> None:
    if student_probs.shape != teacher_probs.shape:
        raise ValueError(f"student_probs {tuple(student_probs.shape)} and teacher_probs "
                         f"{tuple(teacher_probs.shape)} must have the same shape")
    if student_probs.ndim < 3:
        raise ValueError(f"expected (B, K, *spatial) probabilities, got shape {tuple(student_probs.shape)}")


def _as_float(student_probs: torch.Tensor, teacher_probs: torch.Tensor):
    """Both maps in float32 at least; the teacher's detached (it never receives gradients)."""
    dtype = torch.promote_types(student_probs.dtype, torch.float32)
    return student_probs.to(dtype), teacher_probs.detach().to(dtype)


def released_dice_consistency(student_probs: torch.Tensor, teacher_probs: torch.Tensor,
                              eps: float = 1e-5) -> torch.Tensor:
    """The consistency of the authors' released code (``sophie0206/MeanTeacher-DeepMedic``,
    ``deepmedicMT/neuralnet/cost_functions.py::dsc`` called in ``trainer.py::_setup_costs`` with the
    teacher's ``y_pred_train``): Dice against the teacher's **argmax**, pooled over batch and voxels.

    ``Lc = 1 - (1/K) sum_i (2 sum_{b,v} s_biv y_biv + eps) / (sum_{b,v} s_biv + sum_{b,v} y_biv + eps)``
    with ``y = one_hot(argmax_k t)``. One Dice per label over the whole batch, so a patch with little
    foreground carries no ``1 / (its own tiny foreground)`` weight, and with a one-hot target the
    gradient on ``s_biv`` has the sign of ``D_i / 2 - y_biv``: a voxel the teacher calls background is
    only ever pushed down in that label. ``eps`` in numerator and denominator: a label absent from both
    maps scores 1. Shapes ``(B, K, *spatial)``; gradient flows to ``student_probs`` only (the argmax has
    none anyway).
    """
    _check_probability_maps(student_probs, teacher_probs)
    s, t = _as_float(student_probs, teacher_probs)
    y = torch.zeros_like(s).scatter_(1, t.argmax(1, keepdim=True), 1.0)
    reduce = (0, *range(2, s.ndim))
    dice = (2.0 * (s * y).sum(reduce) + eps) / (s.sum(reduce) + y.sum(reduce) + eps)  # (K,)
    return 1.0 - dice.mean()


def squared_dice_consistency(student_probs: torch.Tensor, teacher_probs: torch.Tensor,
                             eps: float = 1e-6) -> torch.Tensor:
    """Eq. 1 with V-Net's squared denominator (Milletari et al. 2016, Eq. 1), per sample and label:

    ``Lc = 1 - mean_b (1/K) sum_i 2 sum_v s_iv t_iv / (sum_v s_iv^2 + sum_v t_iv^2 + eps)``

    Unlike Eq. 1 it is 0 for identical *soft* maps and its gradient vanishes at ``s = t`` (the Dice
    ``2 s.t / (|s|^2 + |t|^2)`` is maximal there), so it does not sharpen the student's weak
    foreground. Shapes ``(B, K, *spatial)``; gradient flows to ``student_probs`` only.
    """
    _check_probability_maps(student_probs, teacher_probs)
    s, t = _as_float(student_probs, teacher_probs)
    voxels = tuple(range(2, s.ndim))
    dice = 2.0 * (s * t).sum(voxels) / ((s * s).sum(voxels) + (t * t).sum(voxels) + eps)  # (B, K)
    return 1.0 - dice.mean(1).mean(0)


def mse_consistency(student_probs: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """The original mean teacher's consistency (Tarvainen & Valpola 2017; CuriousAI
    ``mean_teacher/losses.py::softmax_mse_loss``): squared error of the probabilities,
    ``Lc = mean_{b,k,v} (s_bkv - t_bkv)^2`` (a mean over every element, so its size does not depend on
    the patch size; CuriousAI sums over classes instead, a factor K). Small beside the cross-entropy:
    the trainer scales it by its own weight (``consistency_scale``). The gradient
    ``2 (s - t) / (B K V)`` pulls every probability towards the teacher's and vanishes at ``s = t``.
    Gradient flows to ``student_probs`` only.
    """
    _check_probability_maps(student_probs, teacher_probs)
    s, t = _as_float(student_probs, teacher_probs)
    return ((s - t) ** 2).mean()


def kl_consistency(student_probs: torch.Tensor, teacher_probs: torch.Tensor,
                   confidence: float | None = None, tiny: float = 1e-8) -> torch.Tensor:
    """Cross-entropy of the student against the teacher's probabilities, as ``KL(t || s)`` per voxel:

    ``Lc = mean_{b,v in M} sum_k t_bkv (log t_bkv - log s_bkv)``

    the consistency of most later semi-supervised segmentation (e.g. the uncertainty-aware mean teacher
    of Yu et al., MICCAI 2019, and FixMatch-style confidence masks, Sohn et al. 2020). It differs from the
    cross-entropy ``-sum t log s`` by the teacher's entropy, a constant for the student, so the gradient
    is the same and the value is 0 at ``s = t``. Unlike a Dice, every voxel weighs the same, whatever
    the patch's foreground. ``confidence``: keep only voxels where the teacher's largest probability
    is at least this (the mask ``M``; None: every voxel); with no voxel kept the loss is 0.
    Probabilities are clamped at ``tiny`` before the logarithm. Gradient flows to ``student_probs`` only.
    """
    _check_probability_maps(student_probs, teacher_probs)
    if confidence is not None and not 0.0 <= confidence <= 1.0:
        raise ValueError(f"confidence must lie in [0, 1] (or be None), got {confidence}")
    s, t = _as_float(student_probs, teacher_probs)
    kl = (t * (t.clamp_min(tiny).log() - s.clamp_min(tiny).log())).sum(1)  # (B, *spatial)
    if confidence is None:
        return kl.mean()
    mask = (t.amax(1) >= confidence).to(kl.dtype)
    return (kl * mask).sum() / mask.sum().clamp_min(1.0)


def similarity_preserving_loss(student_features: torch.Tensor, teacher_features: torch.Tensor,
                               eps: float = 1e-12) -> torch.Tensor:
    """The released code's extra term (``trainer.py::_setup_costs``, scaled there by 1e4): the squared
    error of the column-normalised spatial Gram matrices of a layer's activations, student vs teacher.

    Per sample, with ``Q`` the activations ``(C, N)`` (``N`` voxels), ``G = Q^T Q`` is ``N x N`` and
    each column is L2-normalised (TensorFlow's ``l2_normalize(G, axis=1)`` on ``(B, N, N)``); the loss
    is ``mean_{b,i,j} (G^t_bij - G^s_bij)^2``. Like the similarity-preserving distillation of Tung &
    Mori (ICCV 2019), it asks the student to keep which voxels look alike to the teacher.

    Computed without forming the ``N x N`` matrices (``N`` is 2646 for a 21 x 21 x 6 output): column
    ``j`` of ``Q^T Q`` is ``Q^T q_j``, with squared norm ``q_j^T (Q Q^T) q_j``, and the inner product of
    the student's and teacher's columns is ``q^t_j^T (Q^t Q^s^T) q^s_j``, so only ``C x C`` products
    are needed. Columns are unit vectors, hence
    ``sum_ij (G^t - G^s)^2 = sum_j (|g^t_j|^2 + |g^s_j|^2 - 2 g^t_j . g^s_j)``. ``eps`` guards a zero
    column (as TensorFlow's ``epsilon`` on the squared norm). Inputs ``(B, C, *spatial)`` of the same
    shape; gradient flows to ``student_features`` only.
    """
    if student_features.shape != teacher_features.shape or student_features.ndim < 3:
        raise ValueError(f"student_features {tuple(student_features.shape)} and teacher_features "
                         f"{tuple(teacher_features.shape)} must both be (B, C, *spatial) of one shape")
    dtype = torch.promote_types(student_features.dtype, torch.float32)
    qs = student_features.to(dtype).flatten(2)  # (B, C, N)
    qt = teacher_features.detach().to(dtype).flatten(2)
    n = qs.shape[2]

    def column_norms_sq(q):  # |Q^T q_j|^2 = q_j^T (Q Q^T) q_j, (B, N)
        return (q * torch.bmm(torch.bmm(q, q.transpose(1, 2)), q)).sum(1)

    ns, nt = column_norms_sq(qs), column_norms_sq(qt)
    cross = (qt * torch.bmm(torch.bmm(qt, qs.transpose(1, 2)), qs)).sum(1)  # g^t_j . g^s_j unnormalised
    inv_s, inv_t = ns.clamp_min(eps).rsqrt(), nt.clamp_min(eps).rsqrt()
    total = ns * inv_s ** 2 + nt * inv_t ** 2 - 2.0 * cross * inv_s * inv_t  # (B, N)
    return total.sum() / (qs.shape[0] * n * n)


#: consistency name -> loss ``(student_probs, teacher_probs) -> Lc``; a mean-teacher trainer picks one by name
CONSISTENCY_LOSSES = {
    "paper": soft_dice_consistency,
    "released": released_dice_consistency,
    "squared": squared_dice_consistency,
    "mse": mse_consistency,
    "kl": kl_consistency,
}


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
    :func:`ema_update`: the EMA of the student's, like its weights.
    """
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    for m in teacher.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.0
    return teacher


def set_teacher_forward_mode(teacher: nn.Module, dropout: bool = True) -> nn.Module:
    """Mode of the teacher's forward during training: BatchNorm in training mode (batch statistics), and
    dropout on (default) or off.

    On, as both references run it: CuriousAI's mean teacher keeps its EMA model in training mode, and the
    authors' released code takes the teacher's output from its training graph, dropout included. With the
    teacher's dropout off, the student's own dropout against a deterministic target is almost all of the
    consistency signal: the input noise of Eq. 5 moves the probabilities far less than dropout does.
    """
    teacher.train()
    if not dropout:
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


def _normalise_with_first(module: nn.modules.batchnorm._BatchNorm, n: int, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm's training forward, with mean and variance taken over the first ``n`` samples only."""
    dims = [0, *range(2, x.ndim)]
    ref = x[:n]
    mean, var = ref.mean(dims), ref.var(dims, unbiased=False)
    if module.track_running_stats and module.running_mean is not None:
        with torch.no_grad():
            module.num_batches_tracked.add_(1)
            momentum = (1.0 / float(module.num_batches_tracked) if module.momentum is None
                        else module.momentum)
            count = ref.numel() // ref.shape[1]
            unbiased = var.detach() * (count / max(count - 1, 1))
            module.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
            module.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + module.eps)
    if module.affine:
        y = y * module.weight.view(shape) + module.bias.view(shape)
    return y


@contextmanager
def batch_statistics_from_first(network: nn.Module, n: int):
    """Inside the block, every BatchNorm layer of ``network`` in training mode normalises the whole batch
    with the mean and variance of its first ``n`` samples (and updates its running statistics with
    those alone): the samples after them are normalised but do not shape the normalisation.

    The mean teacher's control "unannotated patches kept out of the student's batch statistics": in a
    batch ``[8 annotated, 8 unannotated]`` the unannotated half (half of it centred on the start model's
    often false lesions) otherwise moves every layer's normalisation. Gradients flow through the
    statistics of the first ``n`` samples, as in BatchNorm. ``n`` equal to the batch size gives
    BatchNorm's own result. Layers in eval mode are left alone.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1 (samples whose statistics normalise the batch), got {n}")
    patched = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in patched:
        m.forward = functools.partial(_normalise_with_first, m, n)
    try:
        yield network
    finally:
        for m in patched:
            del m.forward


@contextmanager
def captured_output(module: nn.Module):
    """A list that receives ``module``'s output on every forward inside the block (a forward hook)."""
    outputs: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    try:
        yield outputs
    finally:
        handle.remove()

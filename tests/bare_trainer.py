"""A plugin trainer with its own methods but without nnU-Net's set-up (no dataset, no plans), for tests of
its train step in this process or in DDP workers: the state ``train_step`` reads is set by hand as
nnU-Net's ``initialize`` and checkpoint loading leave it."""
from __future__ import annotations

import importlib
from types import SimpleNamespace

import torch

from nnunet_mt.architectures.deepmedic import DeepMedic

#: the valid output of the tiny DeepMedic on 51^3 patches
OUTPUT = (3, 3, 3)
PATCH = (51, 51, 51)


def trainer_class(name: str) -> type:
    """``nnUNetTrainerMeanTeacher_tiny`` -> the class in ``nnunet_mt.trainers.nnUNetTrainerMeanTeacher``; the
    mean-teacher variants' in ``nnunet_mt.trainers.mean_teacher_variants``."""
    from nnunet_mt.trainers import mean_teacher_variants

    if hasattr(mean_teacher_variants, name):
        return getattr(mean_teacher_variants, name)
    return getattr(importlib.import_module(f"nnunet_mt.trainers.{name.removesuffix('_tiny')}"), name)


def bare_trainer(name: str, ddp: bool = False, rank: int = 0, lr: float = 1e-3):
    """Trainer ``name`` (a ``_tiny`` variant) around a seeded tiny DeepMedic (DDP-wrapped if ``ddp``: then
    with plain BatchNorm, as nnU-Net's SyncBatchNorm runs on GPUs only), cross-entropy and RMSProp."""
    from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss

    cls = trainer_class(name)
    t = object.__new__(cls)
    t.device, t.is_ddp, t.local_rank, t.grad_scaler = torch.device("cpu"), ddp, rank, None
    t.num_input_channels, t.label_manager = 2, SimpleNamespace(num_segmentation_heads=2)
    t.training_output_size = OUTPUT
    t.print_to_log_file = lambda *args, **kwargs: None
    # each method's own initialisation (the pseudo-label baseline has only the shared one)
    next(getattr(t, f) for f in ("_init_mean_teacher", "_init_adversarial", "_init_semi_supervised") if hasattr(t, f))()
    torch.manual_seed(0)  # the same segmenter on every rank, as nnU-Net's checkpoint loading gives
    student = DeepMedic(2, 2, **cls.deepmedic_kwargs)
    t.network = torch.nn.parallel.DistributedDataParallel(student) if ddp else student
    t.loss = RobustCrossEntropyLoss()
    t.optimizer = torch.optim.RMSprop(t.network.parameters(), lr=lr, alpha=0.9)
    return t


def batches(seed: int, steps: int, n: int = 2):
    """``steps`` annotated batches of ``n`` patches, and an iterator over as many unannotated ones."""
    g = torch.Generator().manual_seed(seed)
    annotated = [{"data": torch.randn(n, 2, *PATCH, generator=g),
                  "target": torch.randint(0, 2, (n, 1, *PATCH), generator=g).float()} for _ in range(steps)]
    unannotated = iter([{"data": torch.randn(n, 2, *PATCH, generator=g)} for _ in range(steps)])
    return annotated, unannotated


def output_voxels(target: torch.Tensor) -> torch.Tensor:
    """The labels of the central OUTPUT voxels of PATCH-sized targets: what the valid output predicts."""
    return target[(..., *[slice((p - o) // 2, (p - o) // 2 + o) for p, o in zip(PATCH, OUTPUT)])]


def cross_entropy_by_hand(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over samples (and voxels) of log sum_k exp(z_k) - z_label, for (B, K, ...) logits and labels
    (B,) or (B, 1, ...): an independent formula for the cross-entropy the trainers compute with torch's."""
    index = labels.long().reshape(len(labels), 1, *labels.shape[2:])
    return (logits.logsumexp(1, keepdim=True) - logits.gather(1, index)).mean()


def gradients_at_step(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Records, at every step of ``optimizer``, the gradient it applies (after any clipping), flattened."""
    applied = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: applied.append(
        torch.cat([p.grad.flatten() for group in opt.param_groups for p in group["params"]])))
    return applied


def assert_applied_gradient(applied: torch.Tensor, loss: torch.Tensor, params, max_norm: float | None = None,
                            without: torch.Tensor | None = None) -> None:
    """The gradient an optimizer step applied is that of ``loss`` w.r.t. ``params`` (clipped to ``max_norm``,
    as nnU-Net's step clips the segmenter's to 12). ``without``: the loss lacking a small term (lambda Ladv);
    what the applied gradient has beyond ``without``'s must then point along that term's gradient, a check
    finer than the closeness of the whole."""
    params = list(params)

    def gradient(of: torch.Tensor) -> torch.Tensor:
        grads = torch.autograd.grad(of, params, retain_graph=True, allow_unused=True)
        return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)])

    expected = gradient(loss)
    scale = min(1.0, max_norm / (expected.norm().item() + 1e-6)) if max_norm is not None else 1.0
    torch.testing.assert_close(applied, scale * expected, rtol=1e-4, atol=1e-6)
    if without is not None:
        rest = applied / scale - gradient(without)
        assert torch.nn.functional.cosine_similarity(rest, expected - gradient(without), dim=0) > 0.99

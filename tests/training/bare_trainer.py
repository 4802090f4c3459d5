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
    t._init_mean_teacher() if hasattr(t, "_init_mean_teacher") else t._init_adversarial()
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

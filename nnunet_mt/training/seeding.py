"""Seeded trainings: a rerun of the same command starts from the same weights and draws the same batches.

nnU-Net seeds nothing: two runs of one ``nnUNetv2_train`` command initialise the network differently and
sample and augment different patches. Every trainer of this plugin seeds Python's, NumPy's and torch's
generators from ``nnUNet_mt_seed`` (default 0) twice: before nnU-Net builds the network (same initial
weights) and, in a fresh run, before the data loaders start (same patches, augmentation and dropout).
A run resumed with ``--c`` does not reseed: it continues where the checkpoint left off.

What still varies: nnU-Net's background augmentation workers (``nnUNet_n_proc_DA`` > 0) are seeded by
batchgenerators from the system and deliver batches in the order they finish, so only
``nnUNet_n_proc_DA=0`` (augmentation in the training process) replays exactly on the CPU; on a GPU,
cuDNN's non-deterministic kernels add their own rounding differences.
"""
from __future__ import annotations

import os
import random
from typing import Mapping

import numpy as np

#: environment variable holding the training seed (a non-negative integer)
SEED_VARIABLE = "nnUNet_mt_seed"


def training_seed(environ: Mapping[str, str] | None = None) -> int:
    """The seed in ``nnUNet_mt_seed`` (default 0); raises ValueError naming the variable if it is not an integer >= 0."""
    environ = os.environ if environ is None else environ
    raw = environ.get(SEED_VARIABLE, "")
    if raw == "":
        return 0
    try:
        seed = int(raw)
    except ValueError:
        seed = -1
    if seed < 0:
        raise ValueError(f"environment variable {SEED_VARIABLE}={raw!r}: expected an integer >= 0")
    return seed


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch's (CPU and CUDA) with ``seed``."""
    import torch  # here, so that the runner can import the variable's name without torch

    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


class SeededTrainingMixin:
    """Seeds an nnU-Net trainer from ``nnUNet_mt_seed`` (put it before ``nnUNetTrainer`` in the bases).

    A trainer that seeds its own fresh start (the semi-supervised ones, whose checkpoints also hold their
    generators' states) sets ``seeds_its_own_start = True``; it still gets the seeded initial weights.
    """

    seeds_its_own_start: bool = False

    def initialize(self):
        self.training_seed = training_seed()
        # before nnU-Net builds the network: the same initial weights on every run (and every DDP rank)
        seed_everything(self.training_seed)
        super().initialize()

    def on_train_start(self):
        if not self.was_initialized:
            self.initialize()
        if self.current_epoch == 0 and not self.seeds_its_own_start:
            seed_everything(self.training_seed + 1 + 1000 * self.local_rank)  # sampling, augmentation, dropout
            self.print_to_log_file(f"seeded run: {SEED_VARIABLE}={self.training_seed}")
        super().on_train_start()

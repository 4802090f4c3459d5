"""A training budget from the environment, so a runner can shorten any of our trainers without a new class.

``nnUNetv2_train`` takes no length arguments; nnU-Net's convention is a variant class per length
(``nnUNetTrainer_5epochs``). The reproduction runner needs lengths chosen at run time, so our trainers
also read these variables (unset: the class's own values). A trainer that applies them says so in its log.

=================================  =========================================================
``nnUNet_mt_epochs``               epochs
``nnUNet_mt_iterations_per_epoch`` optimizer steps per epoch
``nnUNet_mt_val_iterations``       validation batches per epoch
``nnUNet_mt_rampup``               ramp-up length in steps (consistency / adversarial weight)
``nnUNet_mt_lr``                   learning rate (a positive number; constant, as the trainers')
``nnUNet_mt_snapshot_every``       epochs between weight snapshots in ``fold_X/snapshots/``
                                   (:mod:`nnunet_mt.training.snapshots`; results do not depend on it)
=================================  =========================================================
"""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np

#: environment variable -> trainer attribute it sets
BUDGET_VARIABLES = {
    "nnUNet_mt_epochs": "num_epochs",
    "nnUNet_mt_iterations_per_epoch": "num_iterations_per_epoch",
    "nnUNet_mt_val_iterations": "num_val_iterations_per_epoch",
    "nnUNet_mt_rampup": "rampup_length",
    "nnUNet_mt_lr": "initial_lr",
    "nnUNet_mt_snapshot_every": "snapshot_every",
}
#: variables that take a positive float; all others a positive integer
FLOAT_VARIABLES = {"nnUNet_mt_lr"}


def budget_from_env(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """Trainer attribute -> value for every budget variable set in ``environ`` (default ``os.environ``)."""
    environ = os.environ if environ is None else environ
    budget = {}
    for name, attr in BUDGET_VARIABLES.items():
        raw = environ.get(name)
        if raw is None or raw == "":
            continue
        kind = float if name in FLOAT_VARIABLES else int
        try:
            value = kind(raw)
        except ValueError:
            value = 0
        if not (value > 0 and np.isfinite(value)):
            raise ValueError(f"environment variable {name}={raw!r}: expected a positive "
                             f"{'number' if kind is float else 'integer'}")
        budget[attr] = value
    return budget


def apply_budget(trainer, environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """Set the budget's attributes on ``trainer`` and return them; the log line goes out on first print."""
    budget = budget_from_env(environ)
    for attr, value in budget.items():
        setattr(trainer, attr, value)
    return budget


def env_for_budget(epochs: int | None = None, iterations_per_epoch: int | None = None,
                   val_iterations: int | None = None, rampup: int | None = None, lr: float | None = None,
                   snapshot_every: int | None = None) -> dict[str, str]:
    """The environment variables for a budget (None: leave the trainer's own value)."""
    values = (epochs, iterations_per_epoch, val_iterations, rampup, lr, snapshot_every)
    return {name: repr(v) if isinstance(v, float) else str(v)
            for name, v in zip(BUDGET_VARIABLES, values) if v is not None}

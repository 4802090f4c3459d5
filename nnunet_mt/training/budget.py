"""A training budget from the environment, so a runner can shorten any of our trainers without a new class.

``nnUNetv2_train`` takes no length arguments; nnU-Net's convention is a variant class per length
(``nnUNetTrainer_5epochs``). The reproduction runner needs lengths chosen at run time, so our trainers
also read these variables (unset: the class's own values). A trainer that applies them says so in its log.

=================================  =========================================================
``nnUNet_mt_epochs``               epochs
``nnUNet_mt_iterations_per_epoch`` optimizer steps per epoch
``nnUNet_mt_val_iterations``       validation batches per epoch
``nnUNet_mt_rampup``               ramp-up length in steps (consistency / adversarial weight)
=================================  =========================================================
"""
from __future__ import annotations

import os
from typing import Mapping

#: environment variable -> trainer attribute it sets (all positive integers)
BUDGET_VARIABLES = {
    "nnUNet_mt_epochs": "num_epochs",
    "nnUNet_mt_iterations_per_epoch": "num_iterations_per_epoch",
    "nnUNet_mt_val_iterations": "num_val_iterations_per_epoch",
    "nnUNet_mt_rampup": "rampup_length",
}


def budget_from_env(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """Trainer attribute -> value for every budget variable set in ``environ`` (default ``os.environ``)."""
    environ = os.environ if environ is None else environ
    budget = {}
    for name, attr in BUDGET_VARIABLES.items():
        raw = environ.get(name)
        if raw is None or raw == "":
            continue
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"environment variable {name}={raw!r}: expected a positive integer")
        budget[attr] = value
    return budget


def apply_budget(trainer, environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """Set the budget's attributes on ``trainer`` and return them; the log line goes out on first print."""
    budget = budget_from_env(environ)
    for attr, value in budget.items():
        setattr(trainer, attr, value)
    return budget


def env_for_budget(epochs: int | None = None, iterations_per_epoch: int | None = None,
                   val_iterations: int | None = None, rampup: int | None = None) -> dict[str, str]:
    """The environment variables for a budget (None: leave the trainer's own value)."""
    values = (epochs, iterations_per_epoch, val_iterations, rampup)
    return {name: str(v) for name, v in zip(BUDGET_VARIABLES, values) if v is not None}

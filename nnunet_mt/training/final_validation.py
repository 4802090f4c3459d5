"""An optional end-of-training validation, for runners that evaluate elsewhere.

``nnUNetv2_train`` always ends with nnU-Net's ``perform_actual_validation``: it predicts the fold's
validation cases whole-volume and scores them in two ``spawn`` process pools. The reproduction runner
trains on fold 0 with a placeholder validation case taken from the training scans (it evaluates every
method on held-out test scans with ``nnUNetv2_predict``), so that score means nothing and only costs time.

``nnUNet_mt_final_validation=0`` skips it and says so in the training log; unset or ``1``: nnU-Net's
behaviour. Only the runner sets it.
"""
from __future__ import annotations

import os
from typing import Mapping

VARIABLE = "nnUNet_mt_final_validation"
_VALUES = {"1": True, "true": True, "0": False, "false": False}


def final_validation_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``nnUNet_mt_final_validation`` in ``environ`` (default ``os.environ``) asks for it."""
    raw = (os.environ if environ is None else environ).get(VARIABLE, "")
    if raw == "":
        return True
    try:
        return _VALUES[raw.strip().lower()]
    except KeyError:
        raise ValueError(f"environment variable {VARIABLE}={raw!r}: expected 0 or 1") from None


def skipped_message(output_folder: str) -> str:
    """The log line of a run whose final validation ``nnUNet_mt_final_validation=0`` skips."""
    return (f"final validation skipped ({VARIABLE}=0): the model is evaluated elsewhere; "
            f"nothing is written to {os.path.join(output_folder, 'validation')}")

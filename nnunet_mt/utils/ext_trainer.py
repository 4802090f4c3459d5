"""Where nnU-Net finds this plugin's trainers: the folder ``nnUNet_extTrainer`` must name, and the variable's
value with that folder added. Used by the commands, the runner, the evaluation and :mod:`.pipeline`."""
from __future__ import annotations

import os
from pathlib import Path

TRAINERS_DIR = Path(__file__).resolve().parents[1] / "trainers"


def trainers_dir() -> str:
    """The folder nnU-Net must search for this plugin's trainers (``nnUNet_extTrainer``)."""
    return str(TRAINERS_DIR)


def ext_trainer_value(current: str | None = None) -> str:
    """``nnUNet_extTrainer`` with the plugin's folder added (kept once, other folders kept)."""
    parts = [p for p in (current or "").split(os.pathsep) if p and p != trainers_dir()]
    return os.pathsep.join([trainers_dir(), *parts])

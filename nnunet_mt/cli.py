"""Small command-line helpers."""
from __future__ import annotations

import os
from pathlib import Path

TRAINERS_DIR = Path(__file__).resolve().parent / "trainers"


def trainers_dir() -> str:
    """The folder nnU-Net must search for this plugin's trainers (``nnUNet_extTrainer``)."""
    return str(TRAINERS_DIR)


def ext_trainer_value(current: str | None = None) -> str:
    """``nnUNet_extTrainer`` with the plugin's folder added (kept once, other folders kept)."""
    parts = [p for p in (current or "").split(os.pathsep) if p and p != trainers_dir()]
    return os.pathsep.join([trainers_dir(), *parts])


def print_env() -> None:
    """Console script ``nnunet_mt_env``: prints the export line; use ``eval "$(nnunet_mt_env)"``."""
    print(f"export nnUNet_extTrainer={ext_trainer_value(os.environ.get('nnUNet_extTrainer'))}")

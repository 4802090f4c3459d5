"""Small command-line helpers."""
from __future__ import annotations

import argparse
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


def print_env(argv: list[str] | None = None) -> None:
    """Console script ``nnunet_mt_env``: prints the export line; use ``eval "$(nnunet_mt_env)"``."""
    parser = argparse.ArgumentParser(
        prog="nnunet_mt_env",
        description="Print the shell line that points nnU-Net's nnUNet_extTrainer at this plugin's trainers "
                    "(other folders already in it are kept). Use it as: eval \"$(nnunet_mt_env)\". "
                    "nnunet_mt_demo and nnunet_mt_reproduce set it for their own runs; nnUNetv2_train and "
                    "nnUNetv2_predict need it to find the trainers.")
    parser.parse_args(argv)
    print(f"export nnUNet_extTrainer={ext_trainer_value(os.environ.get('nnUNet_extTrainer'))}")

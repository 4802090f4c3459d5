"""``nnunet_mt_env``: the shell line that points nnU-Net's ``nnUNet_extTrainer`` at this plugin's trainers."""
from __future__ import annotations

import argparse
import os
from nnunet_mt.utils.ext_trainer import ext_trainer_value


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

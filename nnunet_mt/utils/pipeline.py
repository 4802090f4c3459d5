"""Helpers shared by the orchestrators (``nnunet_mt_demo``, ``nnunet_mt_reproduce``).

Every nnU-Net step is the standard console command, run in a subprocess whose ``nnUNet_raw``,
``nnUNet_preprocessed`` and ``nnUNet_results`` point into the orchestrator's own work folder (nnU-Net
reads them when it is imported, so they cannot be changed inside one process). Output streams to
the terminal.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from nnunet_mt.utils.ext_trainer import ext_trainer_value


def workdir_env(workdir: Path) -> dict:
    """This process's environment with nnU-Net's three folders under ``workdir``, the plugin's trainers
    on ``nnUNet_extTrainer`` (other folders kept), ``nnUNet_compile=false`` and unbuffered output."""
    env = dict(os.environ)
    env.update(nnUNet_raw=str(workdir / "nnUNet_raw"), nnUNet_preprocessed=str(workdir / "nnUNet_preprocessed"),
               nnUNet_results=str(workdir / "nnUNet_results"),
               nnUNet_extTrainer=ext_trainer_value(os.environ.get("nnUNet_extTrainer")),
               nnUNet_compile="false", PYTHONUNBUFFERED="1")
    return env


def run(step: str, cmd: list[str], env: dict) -> float:
    """Run one stage, streaming its output; returns its wall time in seconds.

    The console script is taken from this interpreter's ``bin`` folder when it is there (so the
    virtual environment's nnU-Net runs even if it is not on ``PATH``). Raises
    ``subprocess.CalledProcessError`` when the command fails."""
    print(f"\n=== {step}: {' '.join(cmd)}", flush=True)
    start = time.time()
    exe = Path(sys.executable).parent / cmd[0]
    subprocess.run([str(exe) if exe.exists() else cmd[0], *cmd[1:]], env=env, check=True)
    took = time.time() - start
    print(f"=== {step} done in {took:.0f} s", flush=True)
    return took


def skipped(step: str, because: Path | str) -> None:
    """Say that a stage is not run again, and which file shows it is done (a rerun names what it skips)."""
    print(f"\n=== {step}: skipped, already done ({because})", flush=True)


def dice_per_case(summary_file: Path) -> dict[str, float]:
    """Case id -> lesion Dice from nnUNetv2_evaluate_folder's summary.json (label 1)."""
    summary = json.loads(Path(summary_file).read_text())
    out = {}
    for entry in summary["metric_per_case"]:
        case = Path(entry["reference_file"]).name.split(".")[0]
        out[case] = float(entry["metrics"]["1"]["Dice"])
    return out

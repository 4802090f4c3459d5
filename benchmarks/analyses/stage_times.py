"""Training time per stage of an ``nnunet_mt_reproduce`` or ``nnunet_mt_schedule`` work folder, from the epochs.

``WORKDIR/timings.json`` holds the wall time of each *completed* stage's last attempt: an attempt that
was killed is not counted, and one that shared the cores, or was stopped for a while, counts all of
it. nnU-Net's training logs time every epoch (``Epoch time: ... s``) across all attempts. This script
reads them for every model folder under ``WORKDIR/nnUNet_results`` and prints, per training:
- the epochs logged;
- the sum, the fastest and the median epoch time;
- the fastest and median time per optimizer step (``iterations_per_epoch`` from ``WORKDIR/manifest.json``);
then the stages of ``timings.json``.

usage: python benchmarks/analyses/stage_times.py WORKDIR
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

EPOCH_TIME = re.compile(r"Epoch time: ([0-9.]+) s")


def epoch_times(fold: Path) -> list[float]:
    """Every ``Epoch time`` logged in ``fold``'s ``training_log_*.txt``, oldest log first."""
    times: list[float] = []
    for log in sorted(fold.glob("training_log_*.txt")):
        times += [float(m.group(1)) for m in EPOCH_TIME.finditer(log.read_text(errors="replace"))]
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdir", type=Path)
    args = parser.parse_args(argv)
    manifest = args.workdir / "manifest.json"
    steps = None
    if manifest.is_file():
        steps = json.loads(manifest.read_text()).get("budget", {}).get("iterations_per_epoch")
    timings_file = args.workdir / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    folds = sorted(args.workdir.glob("nnUNet_results/*/*/fold_*"))
    if not folds:
        raise SystemExit(f"no nnUNet_results/*/*/fold_* under {args.workdir}")
    print("| model folder | epochs logged | sum of epoch times | fastest epoch | median epoch | s/step fastest / "
          "median |")
    print("|---|---|---|---|---|---|")
    for fold in folds:
        times = epoch_times(fold)
        name = f"{fold.parents[1].name}/{fold.parent.name}/{fold.name}"
        if not times:
            print(f"| {name} | 0 | - | - | - | - |")
            continue
        fastest, median = min(times), statistics.median(times)
        per_step = f"{fastest / steps:.2f} / {median / steps:.2f}" if steps else "-"
        print(f"| {name} | {len(times)} | {sum(times):.0f} s | {fastest:.0f} s | {median:.0f} s | {per_step} |")
    if timings:
        print("\ntimings.json (wall time of each completed stage's last attempt):")
        for k, v in timings.items():
            print(f"  {k}: {v:.0f} s")


if __name__ == "__main__":
    main()

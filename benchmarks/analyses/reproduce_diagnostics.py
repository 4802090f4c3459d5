"""After ``nnunet_mt_reproduce``: where did each method move from the shared start? Test Dice of the
supervised *init* model and of the mean teacher's *student*, beside the report's methods.

The report shows the final models. To read a short-budget table one needs two more rows: the init model
every method started from (did the extra steps help at all?) and the mean teacher's student (the teacher
is an EMA with alpha 0.999 after the ramp-up, so in a short run it stays close to the init model while
the student moves). Both are predicted with ``nnUNetv2_predict`` on the same test scans (the student via
a copy of the final checkpoint whose ``network_weights`` are the student's, ``-chk
checkpoint_student.pth``) and scored with the report's metrics.

usage: python benchmarks/analyses/reproduce_diagnostics.py WORKDIR [--num-processes 1]
Prints a Markdown table (mean ± std Dice per count) and writes WORKDIR/report/diagnostics.md.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from nnunet_mt.evaluation.metrics import evaluate_cases
from nnunet_mt.runner.layout import COMPLETE_MARKER, CONFIGURATION, FIRST_DERIVED_ID, INIT_PLANS, PLANS, results_folder
from nnunet_mt.runner.methods import METHODS
from nnunet_mt.utils.pipeline import run, workdir_env


def student_checkpoint(fold: Path) -> Path:
    """checkpoint_student.pth: the final checkpoint with the student as the model (written once, atomically)."""
    out = fold / "checkpoint_student.pth"
    if not out.exists():
        ckpt = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        ckpt["network_weights"] = ckpt["student_weights"]
        torch.save(ckpt, out.with_suffix(".tmp"))
        out.with_suffix(".tmp").replace(out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workdir", type=Path)
    p.add_argument("--num-processes", default="1")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    work = args.workdir.resolve()
    manifest = json.loads((work / "manifest.json").read_text())
    splits = json.loads((work / "splits.json").read_text())["counts"]
    suffix = manifest.get("trainer_suffix", "")
    env = workdir_env(work)
    rows = {}
    for i, n in enumerate(manifest["counts"]):
        dataset_id = FIRST_DERIVED_ID + i
        dataset = next((work / "nnUNet_results").glob(f"Dataset{dataset_id:03d}_*")).name
        count_dir = work / f"n{n}"
        refs = {c: count_dir / "labelsTest" / f"{c}.nii.gz" for c in splits[str(n)]["test"]}
        init = METHODS["MeanTeacher"][1] + suffix
        mt = METHODS["MeanTeacher"][0] + suffix
        student_checkpoint(results_folder(work, dataset, mt) / "fold_0")
        models = {"init (supervised start)": ("init", init, INIT_PLANS, "checkpoint_final.pth"),
                  "MeanTeacher student": ("student", mt, PLANS, "checkpoint_student.pth")}
        for name, (folder, trainer, plans, chk) in models.items():
            out = count_dir / "diagnostics" / folder
            if not (out / COMPLETE_MARKER).exists():
                run(f"n{n}/{name}", ["nnUNetv2_predict", "-i", str(count_dir / "imagesTest"), "-o", str(out),
                                     "-d", str(dataset_id), "-c", CONFIGURATION, "-f", "0", "-tr", trainer, "-p", plans,
                                     "-chk", chk, "-device", args.device,
                                     "-npp", args.num_processes, "-nps", args.num_processes], env)
                (out / COMPLETE_MARKER).touch()
            scores = evaluate_cases({c: out / f"{c}.nii.gz" for c in refs}, refs)
            dice = np.array([scores[c]["dice"] for c in refs], dtype=float)
            rows.setdefault(name, {})[n] = f"{np.nanmean(dice):.4f} ± {np.nanstd(dice, ddof=1):.4f}"
    counts = manifest["counts"]
    lines = ["| model | " + " | ".join(f"{n} annotated" for n in counts) + " |",
             "|---|" + "---|" * len(counts)]
    lines += [f"| {name} | " + " | ".join(r[n] for n in counts) + " |" for name, r in rows.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    (work / "report" / "diagnostics.md").write_text(
        "# Diagnostics: the shared start and the mean teacher's student (test Dice, mean ± std, ddof=1)\n\n" + text)


if __name__ == "__main__":
    main()

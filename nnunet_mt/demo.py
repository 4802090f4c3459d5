"""``nnunet_mt_demo``: supervised DeepMedic vs mean teacher on a small synthetic stroke-DWI cohort, on CPU.

generate cohort -> nnUNetv2_plan_and_preprocess -> nnunet_mt_preprocess_unlabeled ->
nnUNetv2_train DeepMedic (short) -> nnUNetv2_train MeanTeacher -pretrained_weights <DeepMedic> ->
nnUNetv2_predict on imagesTs with both -> nnUNetv2_evaluate_folder -> per-case Dice table,
mean ± std and a paired t-test. Finished stages are not redone when the command is run again.

Every step is the standard nnU-Net command, run in a subprocess with ``nnUNet_raw``,
``nnUNet_preprocessed``, ``nnUNet_results`` and ``nnUNet_extTrainer`` set for the demo's own
folder, so a user's existing nnU-Net folders are never touched. Output streams to the terminal.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from nnunet_mt.pipeline import dice_per_case, run, skipped, workdir_env

DATASET_ID = 990
DATASET = "Dataset990_SyntheticStrokeDWI"


def write_table(tables: dict[str, dict[str, float]], out_dir: Path) -> str:
    """Markdown + CSV table of per-case Dice, one column per method, with mean ± std."""
    methods = list(tables)
    cases = sorted(set().union(*[t.keys() for t in tables.values()]))
    lines = ["| case | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for c in cases:
        lines.append(f"| {c} | " + " | ".join(f"{tables[m].get(c, float('nan')):.4f}" for m in methods) + " |")
    stats = [np.array([tables[m][c] for c in cases if c in tables[m]]) for m in methods]
    lines.append("| mean ± std | " + " | ".join(f"{s.mean():.4f} ± {s.std(ddof=1) if len(s) > 1 else 0:.4f}"
                                                 for s in stats) + " |")
    text = "\n".join(lines)
    (out_dir / "dice_table.md").write_text(text + "\n")
    with open(out_dir / "dice_table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", *methods])
        for c in cases:
            w.writerow([c, *[tables[m].get(c, "") for m in methods]])
    return text


def write_demo_split(preprocessed: Path) -> None:
    """Fold 0 keeps one annotated case for nnU-Net's end-of-training validation and trains on the rest
    (nnU-Net's own 5-fold split would hold out a fifth); the test scans are imagesTs. Kept if present."""
    splits = preprocessed / "splits_final.json"
    if splits.exists():
        return
    cases = sorted(p.name[:-len(".pkl")] for p in (preprocessed / "nnUNetPlans_3d_fullres").glob("*.pkl"))
    splits.write_text(json.dumps([{"train": cases[:-1], "val": cases[-1:]}], indent=1))


def paired_t_test(tables: dict[str, dict[str, float]], a: str, b: str) -> tuple[float, float, int]:
    """scipy's paired Student t-test of per-case Dice, method a vs b, on the cases both have."""
    from scipy.stats import ttest_rel

    cases = sorted(set(tables[a]) & set(tables[b]))
    res = ttest_rel([tables[a][c] for c in cases], [tables[b][c] for c in cases])
    return float(res.statistic), float(res.pvalue), len(cases)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("nnunet_mt_demo"), help="all demo files go here")
    p.add_argument("--num-train", type=int, default=10, help="annotated training scans")
    p.add_argument("--num-test", type=int, default=5, help="annotated test scans")
    p.add_argument("--num-unlabeled", type=int, default=4, help="unannotated scans")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--supervised-trainer", default="nnUNetTrainerDeepMedic_demo")
    p.add_argument("--mean-teacher-trainer", default="nnUNetTrainerMeanTeacher_demo")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    workdir = args.workdir.resolve()
    env = workdir_env(workdir)
    timings = {}
    raw = workdir / "nnUNet_raw" / DATASET
    if not raw.exists():
        timings["generate"] = run("generate synthetic cohort", [
            "nnunet_mt_synthetic", "-d", str(DATASET_ID), "--num-train", str(args.num_train), "--num-test",
            str(args.num_test), "--num-unlabeled", str(args.num_unlabeled), "--seed", str(args.seed),
            "--num-workers", "2", "--raw-root", env["nnUNet_raw"]], env)
    else:
        skipped("generate synthetic cohort", raw)
    plans = workdir / "nnUNet_preprocessed" / DATASET / "nnUNetPlans.json"
    if not plans.exists():
        timings["plan_and_preprocess"] = run("plan and preprocess", [
            "nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "3d_fullres", "-npfp", "2", "-np", "2"], env)
    else:
        skipped("plan and preprocess", plans)
    write_demo_split(workdir / "nnUNet_preprocessed" / DATASET)
    timings["preprocess_unlabeled"] = run("preprocess the unannotated scans", [
        "nnunet_mt_preprocess_unlabeled", "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "2"], env)

    results = workdir / "nnUNet_results" / DATASET
    supervised = results / f"{args.supervised_trainer}__nnUNetPlans__3d_fullres"
    teacher = results / f"{args.mean_teacher_trainer}__nnUNetPlans__3d_fullres"
    if not (supervised / "fold_0" / "checkpoint_final.pth").exists():
        timings["train_supervised"] = run("train supervised DeepMedic", [
            "nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-tr", args.supervised_trainer,
            "-device", args.device], env)
    else:
        skipped("train supervised DeepMedic", supervised / "fold_0" / "checkpoint_final.pth")
    if not (teacher / "fold_0" / "checkpoint_final.pth").exists():
        timings["train_mean_teacher"] = run("train the mean teacher from it", [
            "nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-tr", args.mean_teacher_trainer,
            "-device", args.device, "-pretrained_weights", str(supervised / "fold_0" / "checkpoint_final.pth")], env)
    else:
        skipped("train the mean teacher from it", teacher / "fold_0" / "checkpoint_final.pth")

    tables = {}
    for label, trainer, model in (("DeepMedic", args.supervised_trainer, supervised),
                                  ("MeanTeacher", args.mean_teacher_trainer, teacher)):
        pred = workdir / "predictions" / trainer
        if not (pred / "summary.json").exists():
            timings[f"predict_{label}"] = run(f"predict the test scans ({label})", [
                "nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(pred), "-d", str(DATASET_ID),
                "-c", "3d_fullres", "-f", "0", "-tr", trainer, "-device", args.device, "-npp", "1", "-nps", "1"], env)
            timings[f"evaluate_{label}"] = run(f"evaluate ({label})", [
                "nnUNetv2_evaluate_folder", str(raw / "labelsTs"), str(pred), "-djfile", str(model / "dataset.json"),
                "-pfile", str(model / "plans.json"), "-np", "1"], env)
        else:
            skipped(f"predict and evaluate the test scans ({label})", pred / "summary.json")
        tables[label] = dice_per_case(pred / "summary.json")

    table = write_table(tables, workdir)
    t, pvalue, n = paired_t_test(tables, "MeanTeacher", "DeepMedic")
    test_line = f"paired t-test, mean teacher vs DeepMedic on {n} test scans: t = {t:.3f}, p = {pvalue:.4f}"
    with open(workdir / "dice_table.md", "a") as f:
        f.write(f"\n{test_line}\n")
    print("\nPer-case lesion Dice on the synthetic test scans:\n" + table + "\n" + test_line)
    print("\nwall time per stage (s): " + (", ".join(f"{k} {v:.0f}" for k, v in timings.items())
                                            or "none, every stage was done already"))
    print(closing_lines(workdir, raw, supervised, teacher))


def closing_lines(workdir: Path, raw: Path, supervised: Path, teacher: Path) -> str:
    """Where the demo's results are: tables, the per-case CSV, the cohort's montage, the training curves."""
    return "\n".join([
        "results:",
        f"  per-case Dice table:       {workdir / 'dice_table.md'}",
        f"  the same as CSV (one row per test scan, one column per method; e.g. for a box plot): "
        f"{workdir / 'dice_table.csv'}",
        f"  nnU-Net's per-case metrics: {workdir / 'predictions' / '<trainer>' / 'summary.json'}",
        f"  the synthetic cohort:      {raw / 'montage.png'} (a few subjects: DWI, b0, ADC, lesion outline)",
        f"  training curves:           {supervised / 'fold_0' / 'progress.png'} (DeepMedic), "
        f"{teacher / 'fold_0' / 'progress.png'} and {teacher / 'fold_0' / 'progress_mean_teacher.png'} "
        f"(mean teacher: student vs teacher Dice, Ls, Lc, beta, alpha)",
    ])


if __name__ == "__main__":
    main()

"""nnunet_mt_demo: supervised DeepMedic vs mean teacher on a small synthetic stroke-DWI cohort, on CPU.

generate cohort -> nnUNetv2_plan_and_preprocess -> nnunet_mt_preprocess_unlabeled ->
nnUNetv2_train DeepMedic (short) -> nnUNetv2_train MeanTeacher -pretrained_weights <DeepMedic> ->
nnUNetv2_predict on imagesTs with both -> nnUNetv2_evaluate_folder -> per-case Dice table,
mean +- std and a paired t-test. Finished stages are not redone when the command is run again.
The trainings are seeded and augment in their own process (nnUNet_n_proc_DA=0 unless set), so on the
CPU another run in a new folder prints the same table.

Every step is the standard nnU-Net command, run in a subprocess with nnUNet_raw, nnUNet_preprocessed,
nnUNet_results and nnUNet_extTrainer set for the demo's own folder, so a user's existing nnU-Net
folders are never touched. Output streams to the terminal. The last lines printed are the export
lines and an nnUNetv2_predict command for using the demo's models with nnU-Net's own commands.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
from pathlib import Path

import numpy as np

from nnunet_mt.training import final_validation
from nnunet_mt.utils.pipeline import dice_per_case, run, skipped, workdir_env

DATASET_ID = 990
DATASET = "Dataset990_SyntheticStrokeDWI"
CONFIGURATION = "3d_fullres"
#: nnUNetv2_predict's -npp / -nps in the demo and in the command it prints
PREDICT_PROCESSES = "1"
#: the nnU-Net variables the demo sets for its runs and prints as export lines at the end
EXPORTED = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer")


def default_num_processes() -> int:
    """Worker processes when --num-processes is not given: the CPU cores, at most 4."""
    return max(1, min(os.cpu_count() or 1, 4))


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


def fold0_validation_cases(preprocessed: Path) -> list[str]:
    """The validation cases of fold 0 in splits_final.json (empty when there is none)."""
    try:
        return list(json.loads((preprocessed / "splits_final.json").read_text())[0]["val"])
    except (OSError, ValueError, KeyError, IndexError):
        return []


def validation_announcement(run_it: bool, cases: list[str], num_processes: int, num_test: int) -> str:
    """What happens after a training's last epoch, said before the training starts."""
    if not run_it:
        return (f"nnU-Net's end-of-training validation is skipped ({final_validation.VARIABLE}=0; "
                f"--final-validation runs it): the models are scored on the {num_test} test scans below")
    workers = f"{num_processes} worker process{'es' if num_processes != 1 else ''}"
    return (f"this training ends with nnU-Net's final validation: it predicts and scores {held_out(cases)}, "
            f"with {workers} (nnUNet_def_n_proc)")


def held_out(cases: list[str]) -> str:
    """'fold 0's 1 validation case (SDWI_0010), an annotated training scan held out of fold 0's training'."""
    if len(cases) == 1:
        return f"fold 0's 1 validation case ({cases[0]}), an annotated training scan held out of its training"
    return (f"fold 0's {len(cases)} validation cases ({', '.join(cases)}), annotated training scans held out of "
            f"its training")


def validation_dice(model: Path) -> float | None:
    """nnU-Net's 'Mean Validation Dice' of fold 0 (fold_0/validation/summary.json), None if it did not run."""
    try:
        summary = json.loads((model / "fold_0" / "validation" / "summary.json").read_text())
        return float(summary["foreground_mean"]["Dice"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def validation_line(dice: dict[str, float], cases: list[str], num_test: int) -> str:
    """One line on what nnU-Net's 'Mean Validation Dice' is, beside the table's test Dice."""
    values = ", ".join(f"{label} {d:.4f}" for label, d in dice.items())
    return (f"nnU-Net's 'Mean Validation Dice' at the end of the trainings ({values}) is the Dice on "
            f"{held_out(cases)}; after so short a training "
            f"{'one case says' if len(cases) == 1 else 'so few cases say'} little. The table's test Dice, on "
            f"{num_test} scans neither model saw, is the result to read.")


def paired_t_test(tables: dict[str, dict[str, float]], a: str, b: str) -> tuple[float, float, int]:
    """scipy's paired Student t-test of per-case Dice, method a vs b, on the cases both have."""
    from scipy.stats import ttest_rel

    cases = sorted(set(tables[a]) & set(tables[b]))
    res = ttest_rel([tables[a][c] for c in cases], [tables[b][c] for c in cases])
    return float(res.statistic), float(res.pvalue), len(cases)


DESCRIPTION = __doc__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nnunet_mt_demo", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("nnunet_mt_demo"), metavar="DIR",
                   help="folder for everything the demo writes: its own nnUNet_raw, nnUNet_preprocessed and "
                        "nnUNet_results, the predictions and the Dice tables (default: %(default)s)")
    p.add_argument("--num-train", type=int, default=10, metavar="N",
                   help="annotated training scans; fold 0 trains on all but the last, which is nnU-Net's "
                        "validation case (default: %(default)s)")
    p.add_argument("--num-test", type=int, default=5, metavar="N",
                   help="annotated test scans (imagesTs), the scans the Dice table is measured on "
                        "(default: %(default)s)")
    p.add_argument("--num-unlabeled", type=int, default=4, metavar="N",
                   help="unannotated scans (imagesUnlabeled), used by the mean teacher only (default: %(default)s)")
    p.add_argument("--shape", type=int, nargs=3, default=(240, 240, 21), metavar=("X", "Y", "Z"),
                   help="voxels per scan (default: 240 240 21, the paper's); smaller scans make a faster demo")
    p.add_argument("--spacing", type=float, nargs=3, default=(0.96, 0.96, 6.5), metavar=("X", "Y", "Z"),
                   help="voxel size in mm (default: 0.96 0.96 6.5); with a smaller --shape, a larger spacing keeps "
                        "the head in the field of view")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the synthetic cohort (nnunet_mt_synthetic --seed): which subjects, lesions and "
                        "noise are drawn (default: %(default)s); the trainings are seeded separately "
                        "(nnUNet_mt_seed, 0 unless set)")
    p.add_argument("--supervised-trainer", default="nnUNetTrainerDeepMedic_demo", metavar="TRAINER",
                   help="nnU-Net trainer of the supervised DeepMedic (default: %(default)s: 100 steps)")
    p.add_argument("--mean-teacher-trainer", default="nnUNetTrainerMeanTeacher_demo", metavar="TRAINER",
                   help="nnU-Net trainer of the mean teacher, started from the supervised trainer's final "
                        "checkpoint, so both need the same network widths (default: %(default)s: 40 steps)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "mps"),
                   help="where nnUNetv2_train and nnUNetv2_predict run (their -device; default: %(default)s; "
                        "cuda on a machine with an NVIDIA GPU)")
    p.add_argument("--num-processes", type=int, default=default_num_processes(), metavar="N",
                   help="worker processes of the cohort generation, the preprocessing and the evaluation, and "
                        "of nnU-Net's worker pools in training (nnUNet_def_n_proc, used by the end-of-training "
                        "validation) (default: %(default)s, the CPU cores up to 4)")
    p.add_argument("--final-validation", action="store_true",
                   help="run nnU-Net's end-of-training validation on fold 0's validation case (a held-out "
                        "training scan) after each training (default: skipped; the demo scores the models on "
                        "the test scans)")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if args.num_processes < 1:
        build_parser().error(f"--num-processes {args.num_processes}: needs at least 1")
    workdir = args.workdir.resolve()
    env = workdir_env(workdir)
    nproc = str(args.num_processes)
    env["nnUNet_def_n_proc"] = nproc
    timings = {}
    raw = workdir / "nnUNet_raw" / DATASET
    preprocessed = workdir / "nnUNet_preprocessed" / DATASET
    if not raw.exists():
        timings["generate"] = run("generate synthetic cohort", [
            "nnunet_mt_synthetic", "-d", str(DATASET_ID), "--num-train", str(args.num_train), "--num-test",
            str(args.num_test), "--num-unlabeled", str(args.num_unlabeled), "--seed", str(args.seed),
            "--shape", *map(str, args.shape), "--spacing", *map(str, args.spacing),
            "--num-workers", nproc, "--raw-root", env["nnUNet_raw"]], env)
    else:
        skipped("generate synthetic cohort", raw)
    plans = preprocessed / "nnUNetPlans.json"
    if not plans.exists():
        timings["plan_and_preprocess"] = run("plan and preprocess", [
            "nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", CONFIGURATION, "-npfp", nproc,
            "-np", nproc], env)
    else:
        skipped("plan and preprocess", plans)
    write_demo_split(preprocessed)
    timings["preprocess_unlabeled"] = run("preprocess the unannotated scans", [
        "nnunet_mt_preprocess_unlabeled", "-d", str(DATASET_ID), "-c", CONFIGURATION, "-np", nproc], env)

    num_test = len(list((raw / "labelsTs").glob("*.nii.gz"))) or args.num_test
    val_cases = fold0_validation_cases(preprocessed)
    train_env = dict(env, **{final_validation.VARIABLE: "1" if args.final_validation else "0"})
    # augmentation in the training process: the seeded trainings, and so the table, replay bit for bit on the CPU
    # (workers deliver batches in the order they finish); only the trainings, nnU-Net's planner needs >= 1
    train_env.setdefault("nnUNet_n_proc_DA", "0")
    if train_env["nnUNet_n_proc_DA"] != "0":
        print(f"\nnnUNet_n_proc_DA={train_env['nnUNet_n_proc_DA']} (from your shell): the trainings' augmentation "
              f"runs in worker processes, so another run of the demo gives a slightly different table", flush=True)
    announcement = validation_announcement(args.final_validation, val_cases, args.num_processes, num_test)
    results = workdir / "nnUNet_results" / DATASET
    supervised = results / f"{args.supervised_trainer}__nnUNetPlans__{CONFIGURATION}"
    teacher = results / f"{args.mean_teacher_trainer}__nnUNetPlans__{CONFIGURATION}"
    if not (supervised / "fold_0" / "checkpoint_final.pth").exists():
        print(f"\n{announcement}", flush=True)
        timings["train_supervised"] = run("train supervised DeepMedic", [
            "nnUNetv2_train", str(DATASET_ID), CONFIGURATION, "0", "-tr", args.supervised_trainer,
            "-device", args.device], train_env)
    else:
        skipped("train supervised DeepMedic", supervised / "fold_0" / "checkpoint_final.pth")
    if not (teacher / "fold_0" / "checkpoint_final.pth").exists():
        print(f"\n{announcement}", flush=True)
        timings["train_mean_teacher"] = run("train the mean teacher from it", [
            "nnUNetv2_train", str(DATASET_ID), CONFIGURATION, "0", "-tr", args.mean_teacher_trainer,
            "-device", args.device, "-pretrained_weights", str(supervised / "fold_0" / "checkpoint_final.pth")],
            train_env)
    else:
        skipped("train the mean teacher from it", teacher / "fold_0" / "checkpoint_final.pth")

    tables = {}
    for label, trainer, model in (("DeepMedic", args.supervised_trainer, supervised),
                                  ("MeanTeacher", args.mean_teacher_trainer, teacher)):
        pred = workdir / "predictions" / trainer
        if not (pred / "summary.json").exists():
            timings[f"predict_{label}"] = run(f"predict the test scans ({label})", predict_command(
                raw / "imagesTs", pred, trainer, args.device), env)
            timings[f"evaluate_{label}"] = run(f"evaluate ({label})", [
                "nnUNetv2_evaluate_folder", str(raw / "labelsTs"), str(pred), "-djfile", str(model / "dataset.json"),
                "-pfile", str(model / "plans.json"), "-np", nproc], env)
        else:
            skipped(f"predict and evaluate the test scans ({label})", pred / "summary.json")
        tables[label] = dice_per_case(pred / "summary.json")

    table = write_table(tables, workdir)
    t, pvalue, n = paired_t_test(tables, "MeanTeacher", "DeepMedic")
    test_line = f"paired t-test, mean teacher vs DeepMedic on {n} test scans: t = {t:.3f}, p = {pvalue:.4f}"
    with open(workdir / "dice_table.md", "a") as f:
        f.write(f"\n{test_line}\n")
    print("\nPer-case lesion Dice on the synthetic test scans:\n" + table + "\n" + test_line)
    val_dice = {label: d for label, model in (("DeepMedic", supervised), ("MeanTeacher", teacher))
                if (d := validation_dice(model)) is not None}
    if val_dice:
        print(validation_line(val_dice, val_cases, n))
    print("\nwall time per stage (s): " + (", ".join(f"{k} {v:.0f}" for k, v in timings.items())
                                            or "none, every stage was done already"))
    print(closing_lines(workdir, raw, supervised, teacher))
    print(nnunet_lines(env, raw, workdir, args.supervised_trainer, args.mean_teacher_trainer, args.device))


def predict_command(images: Path, out: Path, trainer: str, device: str) -> list[str]:
    """nnUNetv2_predict of fold 0 of the demo's dataset with ``trainer``."""
    return ["nnUNetv2_predict", "-i", str(images), "-o", str(out), "-d", str(DATASET_ID), "-c", CONFIGURATION,
            "-f", "0", "-tr", trainer, "-device", device, "-npp", PREDICT_PROCESSES, "-nps", PREDICT_PROCESSES]


def nnunet_lines(env: dict, raw: Path, workdir: Path, supervised_trainer: str, teacher_trainer: str,
                 device: str) -> str:
    """The export lines and an nnUNetv2_predict command that use the demo's models outside the demo."""
    command = predict_command(raw / "imagesTs", workdir / "my_predictions", teacher_trainer, device)
    return "\n".join([
        "\nto use the demo's models with nnU-Net's own commands, set in your shell:",
        *[f"  export {name}={shlex.quote(env[name])}" for name in EXPORTED],
        "then, e.g. the mean teacher on the test scans:",
        f"  {shlex.join(command)}",
        f"  (-tr {supervised_trainer}: the supervised DeepMedic; -i: any folder of scans named "
        f"CASE_0000.nii.gz (DWI) and CASE_0001.nii.gz (b0))",
    ])


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

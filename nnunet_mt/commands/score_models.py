"""``nnunet_mt_score_models``: the test comparison from committed models, without retraining.

A screen commits each method's final network weights (``results/screen-n10/models/<method>.pth``: the teacher
for the mean teachers; :func:`nnunet_mt.runner.start_model.export_weights`). This command scores them on the
shared test scans of the ``nnunet_mt_reproduce`` work folder they were trained in:

1. For each method, an nnU-Net model folder ``<trainer>__nnUNetPlans__3d_fullres`` is built under
   ``WORKDIR/n<count>/committed/<method>/`` from the file alone (its weights, and the plans and ``dataset.json``
   its trainer ran with, which an exported checkpoint keeps in ``init_args``), so the scans are predicted by
   nnU-Net's own predictor (``nnUNetv2_predict_from_modelfolder``), exactly as the runner predicts with the full
   checkpoint. The trainer that made the weights must be the method's, and its dataset the run's count.
2. Every prediction is scored against ``labelsTest`` (:func:`nnunet_mt.evaluation.metrics.evaluate_cases`).
3. ``--out`` receives :func:`nnunet_mt.evaluation.report.write_report`'s tables, statistics and figures, every
   method paired with ``--reference`` (Dice with t-test and Wilcoxon, HD95, lesion-wise F1, volumes), a table of
   predicted / true lesion volume, and ``manifest.json``: the models' sha256, the test cases, the work folder's
   split and start model. The folder is replaced whole, never left half written.

A rerun predicts again only the methods whose weights changed (each prediction folder records its weights'
sha256).

    nnunet_mt_score_models --workdir WORK/screen --count 10 --models results/screen-n10/models \\
        --methods DeepMedic MeanTeacher PseudoLabel --reference DeepMedic --out results/test-n10
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from nnunet_mt.runner.arguments import HelpFormatter, positive_int
from nnunet_mt.runner.layout import CONFIGURATION, COMPLETE_MARKER, PLANS, derived_dataset
from nnunet_mt.runner.methods import METHODS, check_methods
from nnunet_mt.runner.source_dataset import ReproduceError, sha256_of
from nnunet_mt.utils.atomic import write_json
from nnunet_mt.utils.pipeline import run, workdir_env

#: the file in a prediction folder naming the weights it was predicted with
WEIGHTS_RECORD = "weights.sha256"


def read_run(workdir: Path, count: int) -> dict:
    """The work folder's manifest and count ``count``'s derived dataset, test cases and test folders."""
    manifest_file = workdir / "manifest.json"
    if not manifest_file.is_file():
        raise ReproduceError(f"{workdir}: no manifest.json (not a work folder of nnunet_mt_reproduce)")
    manifest = json.loads(manifest_file.read_text())
    if count not in manifest["counts"]:
        raise ReproduceError(f"--count {count}: the run in {workdir} has counts {manifest['counts']}")
    splits = json.loads((workdir / "splits.json").read_text())
    source_name = manifest["source"].split("_", 1)[1]
    dataset_id, dataset_name = derived_dataset(manifest["counts"], source_name, count)
    count_dir = workdir / f"n{count}"
    test = sorted(splits["counts"][str(count)]["test"])
    ending = json.loads((workdir / "nnUNet_preprocessed" / dataset_name / "dataset.json").read_text())["file_ending"]
    missing = [c for c in test if not (count_dir / "labelsTest" / f"{c}{ending}").is_file()]
    if missing:
        raise ReproduceError(f"{count_dir / 'labelsTest'}: no reference for test case(s) {', '.join(missing)}")
    return {"manifest": manifest, "dataset_id": dataset_id, "dataset_name": dataset_name, "count_dir": count_dir,
            "test": test, "file_ending": ending}


def check_weights_file(path: Path, method: str, trainer: str, dataset_name: str) -> dict:
    """The exported checkpoint at ``path``; an error naming the file when it is missing, unreadable, made by
    another trainer than ``method``'s, or trained on another dataset than ``dataset_name``."""
    from nnunet_mt.runner.start_model import load_start_model

    if not path.is_file():
        raise ReproduceError(f"{path}: no such file (the committed model of {method})")
    try:
        checkpoint = load_start_model(path)
    except ReproduceError as e:
        raise ReproduceError(str(e).replace("--start-model ", "")) from None
    made_by = checkpoint.get("trainer_name")
    if made_by != trainer:
        raise ReproduceError(f"{path}: made by {made_by or 'an unnamed trainer'}, but {method} is trained by "
                             f"{trainer}; is it another method's model?")
    init_args = checkpoint.get("init_args") or {}
    if "plans" not in init_args or "dataset_json" not in init_args:
        raise ReproduceError(f"{path}: holds no plans (init_args) to predict with; export it from an nnU-Net "
                             f"checkpoint with python -m nnunet_mt.runner.start_model export")
    trained_on = init_args["plans"].get("dataset_name")
    if trained_on != dataset_name:
        raise ReproduceError(f"{path}: trained on {trained_on}, but the run's count is {dataset_name}")
    return checkpoint


def build_model_folder(run_info: dict, method: str, trainer: str, checkpoint: dict) -> Path:
    """An nnU-Net model folder for ``checkpoint``: the plans and ``dataset.json`` it was trained with (its
    ``init_args``: the trainer's own plans, e.g. DeepMedic's rewritten architecture, as nnU-Net writes them to a
    results folder) and the weights as ``fold_0/checkpoint_final.pth``."""
    import torch

    from nnunet_mt.utils.atomic import write_atomically

    folder = run_info["count_dir"] / "committed" / method / f"{trainer}__{PLANS}__{CONFIGURATION}"
    write_json(folder / "plans.json", checkpoint["init_args"]["plans"])
    write_json(folder / "dataset.json", checkpoint["init_args"]["dataset_json"])
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    write_atomically(lambda tmp: torch.save(checkpoint, tmp), folder / "fold_0" / "checkpoint_final.pth")
    return folder


def predict(run_info: dict, workdir: Path, method: str, weights: Path, trainer: str, device: str) -> Path:
    """The test scans predicted with ``weights``; the prediction folder (kept when its weights are the same)."""
    out = run_info["count_dir"] / "committed" / method / "predictions"
    digest = sha256_of(weights)
    record = out / WEIGHTS_RECORD
    if (out / COMPLETE_MARKER).exists() and record.is_file() and record.read_text().strip() == digest:
        print(f"=== predict {method}: skipped, already done with {weights.name} ({digest[:12]}...)", flush=True)
        return out
    checkpoint = check_weights_file(weights, method, trainer, run_info["dataset_name"])
    folder = build_model_folder(run_info, method, trainer, checkpoint)
    if out.exists():
        shutil.rmtree(out)  # predicted with other weights, or half written
    # one worker each on a few cores (the model-folder entry point has no sequential mode), else two
    processes = "1" if (os.cpu_count() or 1) <= 4 else "2"
    try:
        run(f"predict {method}", ["nnUNetv2_predict_from_modelfolder", "-i", str(run_info["count_dir"] / "imagesTest"),
                                  "-o", str(out), "-m", str(folder), "-f", "0", "-chk", "checkpoint_final.pth",
                                  "-device", device, "-npp", processes, "-nps", processes], workdir_env(workdir))
    except subprocess.CalledProcessError as e:
        raise ReproduceError(f"nnUNetv2_predict_from_modelfolder failed (exit status {e.returncode}) on {method}'s "
                             f"model {weights}; its output is above") from None
    missing = [c for c in run_info["test"] if not (out / f"{c}{run_info['file_ending']}").is_file()]
    if missing:
        raise ReproduceError(f"nnUNetv2_predict_from_modelfolder wrote no prediction for {missing} in {out}")
    record.write_text(digest + "\n")
    (out / COMPLETE_MARKER).touch()
    return out


def volume_ratios(metrics: dict[str, dict[str, dict[str, float]]], methods: list[str]) -> list[dict]:
    """Per method: predicted / true lesion volume summed over the test scans, and the median of the per-case
    ratios (over the cases with a reference lesion)."""
    import numpy as np

    rows = []
    for m in methods:
        cases = metrics[m].values()
        true_ml = sum(c["ref_ml"] for c in cases)
        per_case = [c["pred_ml"] / c["ref_ml"] for c in cases if c["ref_ml"] > 0]
        rows.append({"method": m, "pred_ml": sum(c["pred_ml"] for c in cases), "ref_ml": true_ml,
                     "ratio_of_sums": sum(c["pred_ml"] for c in cases) / true_ml if true_ml > 0 else float("nan"),
                     "median_case_ratio": float(np.median(per_case)) if per_case else float("nan"),
                     "n_cases": len(per_case)})
    return rows


def volume_markdown(rows: list[dict]) -> str:
    lines = ["## Predicted / true lesion volume on the test scans", "",
             "Sum of the predicted lesion volume over the test scans divided by the sum of the true volume (1 is "
             "right; above 1 over-segments), and the median of the per-case ratios.", "",
             "| Method | predicted / true (sums) | median per-case ratio | cases |", "|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['ratio_of_sums']:.3f} | {r['median_case_ratio']:.3f} | {r['n_cases']} |"
              for r in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nnunet_mt_score_models", formatter_class=HelpFormatter,
                                description=__doc__)
    p.add_argument("--workdir", type=Path, required=True,
                   help="the nnunet_mt_reproduce work folder the models were trained in (its split and test scans)")
    p.add_argument("--count", type=positive_int, required=True, help="annotated training scans of the run")
    p.add_argument("--models", type=Path, required=True, help="folder of committed models, <method>.pth each")
    p.add_argument("--methods", nargs="+", required=True, help="methods to score, in the tables' order")
    p.add_argument("--reference", default="DeepMedic", help="the method every other one is paired with")
    p.add_argument("--out", type=Path, required=True, help="report folder (replaced whole)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = p.parse_args(argv)
    if args.reference not in args.methods:
        p.error(f"--reference {args.reference} is not among --methods {' '.join(args.methods)}")
    return args


def score(args: argparse.Namespace) -> Path:
    """Predict, score and write the report; its folder."""
    from nnunet_mt.evaluation.metrics import evaluate_cases
    from nnunet_mt.evaluation.report import CountResult, write_report

    workdir = args.workdir.resolve()
    run_info = read_run(workdir, args.count)
    manifest = run_info["manifest"]
    suffix = manifest.get("trainer_suffix", "")
    weights = {m: args.models / f"{m}.pth" for m in args.methods}
    for m in args.methods:  # every file checked before the first prediction
        check_weights_file(weights[m], m, METHODS[m][0] + suffix, run_info["dataset_name"])
    ending, count_dir = run_info["file_ending"], run_info["count_dir"]
    refs = {c: count_dir / "labelsTest" / f"{c}{ending}" for c in run_info["test"]}
    images = {c: count_dir / "imagesTest" / f"{c}_0000{ending}" for c in run_info["test"]}
    predictions, metrics = {}, {}
    for m in args.methods:
        out = predict(run_info, workdir, m, weights[m], METHODS[m][0] + suffix, args.device)
        predictions[m] = {c: out / f"{c}{ending}" for c in run_info["test"]}
        metrics[m] = evaluate_cases(predictions[m], refs)
    result = CountResult(count=args.count, images=images, references=refs, predictions=predictions,
                         metrics=metrics)
    volumes = volume_ratios(metrics, args.methods)
    start = manifest.get("start_model")
    notes = "\n\n".join([
        f"Committed models scored on the {len(run_info['test'])} shared test scans of the run in "
        f"`{workdir.name}` (source `{manifest['source']}`, split seed {manifest['seed']}, count {args.count}"
        + (f", every method trained from `{start['file']}` (sha256 {start['sha256'][:12]}...)" if start else "")
        + "); no retraining. Models and their sha256: `manifest.json`.",
        volume_markdown(volumes)])
    staging = args.out.with_name(args.out.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    write_report(staging, [result], args.methods, reference_method=args.reference,
                 title=f"Test comparison of committed models, {args.count} annotated scans", notes=notes)
    write_json(staging / "manifest.json", {
        "workdir": {k: manifest.get(k) for k in ("source", "seed", "counts", "shared_test", "validation",
                                                  "budget", "start_model", "trainer_suffix")},
        "count": args.count, "test_cases": run_info["test"], "reference": args.reference, "device": args.device,
        "models": {m: {"file": weights[m].name, "sha256": sha256_of(weights[m]), "trainer": METHODS[m][0] + suffix}
                   for m in args.methods},
        "volume": volumes})
    if args.out.exists():
        shutil.rmtree(args.out)
    staging.rename(args.out)
    return args.out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        check_methods(args.methods)
        out = score(args)
    except ReproduceError as e:
        sys.exit(f"error: {e}")
    print(f"\nReport: {out / 'report.md'}", flush=True)


if __name__ == "__main__":
    main()

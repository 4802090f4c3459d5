"""``nnunet_mt_score_models``: the test comparison from committed models, without retraining.

A screen commits each method's final network weights (``results/screen-n10/models/<method>.pth``: the teacher
for the mean teachers; :func:`nnunet_mt.runner.start_model.export_weights`). This command scores them on the
test scans of the run they were trained in, and needs nothing of that run but its options: the source dataset
and the split options (``--seed``, ``--counts``, ``--shared-test``, ``--validation``, as given to
``nnunet_mt_reproduce``) draw the same test scans (:func:`nnunet_mt.runner.splits.draw_splits`).

1. Every model file is checked first: made by the method's trainer, on the run's derived dataset of the count.
2. For each method, an nnU-Net model folder ``<trainer>__nnUNetPlans__3d_fullres`` is built under
   ``WORKDIR/score_n<count>/<method>/`` from the file alone (its weights, and the plans and ``dataset.json`` its
   trainer ran with, which an exported checkpoint keeps in ``init_args``), and the test scans are predicted by
   nnU-Net's own predictor (``nnUNetv2_predict_from_modelfolder``): the same label maps as the runner's
   prediction with the full checkpoint.
3. Every prediction is scored against the source's labels (:func:`nnunet_mt.evaluation.metrics.evaluate_cases`).
4. ``--out`` receives :func:`nnunet_mt.evaluation.report.write_report`'s tables, statistics and figures, every
   method paired with ``--reference`` (Dice with t-test and Wilcoxon, HD95, lesion-wise F1, volumes), a table of
   predicted / true lesion volume, and ``manifest.json`` (the models' and the test files' sha256, the split
   options). The folder is replaced whole, never left half written.

A rerun predicts again only the methods whose weights (or test scans) changed.

    nnunet_mt_score_models -d 990 --raw nnUNet_raw --workdir score --count 10 --shared-test 20 --validation 10 \\
        --models results/screen-n10/models --methods DeepMedic MeanTeacher PseudoLabel --out results/test-n10
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from nnunet_mt.runner.arguments import positive_int, source_of, source_parser
from nnunet_mt.runner.layout import CONFIGURATION, COMPLETE_MARKER, PLANS, derived_dataset, link
from nnunet_mt.runner.methods import METHODS, check_methods
from nnunet_mt.runner.source_dataset import ReproduceError, SourceDataset, sha256_of
from nnunet_mt.runner.splits import check_inputs, draw_splits
from nnunet_mt.utils.atomic import write_json
from nnunet_mt.utils.pipeline import run, workdir_env

#: the file in a prediction folder naming the weights and test scans it was predicted with
PREDICTED_WITH = "predicted_with.json"


def draw_test_cases(source: SourceDataset, args: argparse.Namespace) -> list[str]:
    """The test scans of ``--count``, drawn as ``nnunet_mt_reproduce`` draws them with the same options."""
    if args.count not in args.counts:
        raise ReproduceError(f"--count {args.count} is not among --counts {' '.join(map(str, args.counts))}")
    check_inputs(source, args.counts, [], args.shared_test, args.validation)  # the runner's checks of the split
    return draw_splits(source.pool, args.counts, args.seed, args.shared_test, args.validation)[args.count]["test"]


def check_weights_file(path: Path, method: str, trainer: str, dataset_name: str) -> dict:
    """The exported checkpoint at ``path``; an error naming the file when it is missing, unreadable, made by
    another trainer than ``method``'s, or trained on another dataset than ``dataset_name``."""
    from nnunet_mt.runner.start_model import load_start_model

    try:
        checkpoint = load_start_model(path, option="")
    except ReproduceError as e:
        raise ReproduceError(f"{e} (the committed model of {method})") from None
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
        raise ReproduceError(f"{path}: trained on {trained_on}, but this run's count is {dataset_name} (check -d, "
                             f"--counts and --count)")
    return checkpoint


def build_model_folder(folder: Path, checkpoint: dict) -> Path:
    """An nnU-Net model folder for ``checkpoint`` at ``folder``: the plans and ``dataset.json`` it was trained
    with (its ``init_args``: the trainer's own plans, e.g. DeepMedic's rewritten architecture, as nnU-Net writes
    them to a results folder) and the weights as ``fold_0/checkpoint_final.pth``."""
    import torch

    from nnunet_mt.utils.atomic import write_atomically

    write_json(folder / "plans.json", checkpoint["init_args"]["plans"])
    write_json(folder / "dataset.json", checkpoint["init_args"]["dataset_json"])
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    write_atomically(lambda tmp: torch.save(checkpoint, tmp), folder / "fold_0" / "checkpoint_final.pth")
    return folder


def link_test_images(source: SourceDataset, cases: list[str], folder: Path) -> Path:
    """``folder`` holding links to exactly the test cases' channel files (nnU-Net's names), nothing else."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for case in cases:
        for channel_file in source.annotated[case][0]:
            link(channel_file, folder / channel_file.name)
    return folder


def predict(root: Path, images: Path, cases: list[str], ending: str, method: str, weights: Path, checkpoint: dict,
            trainer: str, device: str) -> Path:
    """The test scans predicted with ``checkpoint``, read from ``weights`` (:func:`check_weights_file`); the
    prediction folder (kept when weights and cases are the same as last time)."""
    out = root / method / "predictions"
    done_with = {"weights_sha256": sha256_of(weights), "cases": cases}
    record = out / PREDICTED_WITH
    if (out / COMPLETE_MARKER).exists() and record.is_file() and json.loads(record.read_text()) == done_with:
        print(f"=== predict {method}: skipped, already done with {weights.name} "
              f"({done_with['weights_sha256'][:12]}...)", flush=True)
        return out
    folder = build_model_folder(root / method / f"{trainer}__{PLANS}__{CONFIGURATION}", checkpoint)
    if out.exists():
        shutil.rmtree(out)  # predicted with other weights or scans, or half written
    # one worker each on a few cores (the model-folder entry point has no sequential mode), else two
    processes = "1" if (os.cpu_count() or 1) <= 4 else "2"
    try:
        run(f"predict {method}", ["nnUNetv2_predict_from_modelfolder", "-i", str(images), "-o", str(out),
                                  "-m", str(folder), "-f", "0", "-chk", "checkpoint_final.pth", "-device", device,
                                  "-npp", processes, "-nps", processes], workdir_env(root))
    except subprocess.CalledProcessError as e:
        raise ReproduceError(f"nnUNetv2_predict_from_modelfolder failed (exit status {e.returncode}) on {method}'s "
                             f"model {weights}; its output is above") from None
    missing = [c for c in cases if not (out / f"{c}{ending}").is_file()]
    if missing:
        raise ReproduceError(f"nnUNetv2_predict_from_modelfolder wrote no prediction for {missing} in {out}")
    write_json(record, done_with)
    (out / COMPLETE_MARKER).touch()
    return out


def volume_ratios(metrics: dict[str, dict[str, dict[str, float]]], methods: list[str]) -> list[dict]:
    """Per method: predicted / true lesion volume summed over the test scans, and the median of the per-case
    ratios (over the cases with a reference lesion)."""
    import numpy as np

    rows = []
    for m in methods:
        cases = metrics[m].values()
        pred_ml, true_ml = sum(c["pred_ml"] for c in cases), sum(c["ref_ml"] for c in cases)
        per_case = [c["pred_ml"] / c["ref_ml"] for c in cases if c["ref_ml"] > 0]
        rows.append({"method": m, "pred_ml": pred_ml, "ref_ml": true_ml,
                     "ratio_of_sums": pred_ml / true_ml if true_ml > 0 else float("nan"),
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
    p = source_parser("nnunet_mt_score_models", __doc__)
    p.add_argument("--count", type=positive_int, required=True, help="annotated training scans of the run")
    p.add_argument("--counts", type=positive_int, nargs="+", default=None,
                   help="the run's --counts, if it had several (they name the derived datasets; default: --count)")
    p.add_argument("--seed", type=int, default=0, help="the run's --seed (its split)")
    p.add_argument("--shared-test", type=positive_int, default=None, help="the run's --shared-test")
    p.add_argument("--validation", type=positive_int, default=None, help="the run's --validation")
    p.add_argument("--trainer-suffix", default="", help="the run's --trainer-suffix")
    p.add_argument("--models", type=Path, required=True, help="folder of committed models, <method>.pth each")
    p.add_argument("--methods", nargs="+", required=True, help="methods to score, in the tables' order")
    p.add_argument("--reference", default="DeepMedic", help="the method every other one is paired with")
    p.add_argument("--out", type=Path, required=True, help="report folder (replaced whole)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = p.parse_args(argv)
    args.counts = args.counts or [args.count]
    if args.reference not in args.methods:
        p.error(f"--reference {args.reference} is not among --methods {' '.join(args.methods)}")
    return args


def score(args: argparse.Namespace) -> Path:
    """Predict, score and write the report; its folder."""
    from nnunet_mt.evaluation.metrics import evaluate_cases
    from nnunet_mt.evaluation.report import CountResult, write_report

    source = source_of(args)
    cases = draw_test_cases(source, args)
    _, dataset_name = derived_dataset(args.counts, source.name, args.count)
    trainers = {m: METHODS[m][0] + args.trainer_suffix for m in args.methods}
    weights = {m: args.models / f"{m}.pth" for m in args.methods}
    # every file checked before the first prediction
    checkpoints = {m: check_weights_file(weights[m], m, trainers[m], dataset_name) for m in args.methods}
    root = args.workdir.resolve() / f"score_n{args.count}"
    images = link_test_images(source, cases, root / "imagesTest")
    ending = source.file_ending
    refs = {c: source.annotated[c][1] for c in cases}
    predictions, metrics = {}, {}
    for m in args.methods:
        out = predict(root, images, cases, ending, m, weights[m], checkpoints[m], trainers[m], args.device)
        predictions[m] = {c: out / f"{c}{ending}" for c in cases}
        metrics[m] = evaluate_cases(predictions[m], refs)
    result = CountResult(count=args.count, images={c: source.annotated[c][0][0] for c in cases}, references=refs,
                         predictions=predictions, metrics=metrics)
    volumes = volume_ratios(metrics, args.methods)
    notes = "\n\n".join([
        f"Committed models (no retraining) scored on the {len(cases)} test scans of `{source.folder.name}` that "
        f"`nnunet_mt_reproduce` draws with seed {args.seed}, counts {args.counts}, shared test "
        f"{args.shared_test}, validation {args.validation}. Models, test files and their sha256: `manifest.json`.",
        volume_markdown(volumes)])
    staging = args.out.with_name(args.out.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    write_report(staging, [result], args.methods, reference_method=args.reference,
                 title=f"Test comparison of committed models, {args.count} annotated scans", notes=notes)
    write_json(staging / "manifest.json", {
        "source": source.folder.name, "count": args.count, "counts": args.counts, "seed": args.seed,
        "shared_test": args.shared_test, "validation": args.validation, "dataset": dataset_name,
        "reference": args.reference, "device": args.device,
        "models": {m: {"file": weights[m].name, "sha256": sha256_of(weights[m]), "trainer": trainers[m]}
                   for m in args.methods},
        "test_files": {c: {p.name: sha256_of(p) for p in [*source.annotated[c][0], source.annotated[c][1]]}
                       for c in cases},
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

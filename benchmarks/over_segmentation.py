"""Why a mean teacher over-segments, measured on the *unannotated* scans (never the test scans).

After ``nnunet_mt_reproduce ... --snapshot-every K --unlabeled-truth DIR``, the unannotated scans have
true masks that no trainer read. This script uses the first ``--cases`` of them (sorted by name) for two
checks:

1. **Volume over training.** Every snapshot of every method (and the mean teacher's student) is scored
   on those scans, in nnU-Net's preprocessed space: voxel Dice, and pooled (sums over the cases)
   precision, recall and predicted / true lesion volume. If the consistency term makes the foreground
   grow, the volume ratio rises with the steps for the mean teacher and not for the supervised model.
2. **The direction of Eq. 1's gradient at step 0.** There teacher and student have the init model's
   weights, so (noise left out) both give its softmax ``t``. For output patches of the training size
   centred on the init model's lesions (pseudo-lesions) and on the rest of the brain (healthy), it takes
   the gradient of ``Lc`` (``soft_dice_consistency``) with respect to the student's foreground logit at
   ``s = t``. A descent step raises the foreground where that gradient is negative. Counted: voxels the
   init model calls background (``t < 0.5``) that the step pushes towards lesion, how many of them are
   truly lesion, beside the voxels it calls lesion in the same patches and those of them the step pushes
   towards background.

   Why it can happen: with the unsquared denominator of Eq. 1, ``dLc/ds_v`` of label ``i`` is
   ``-(t_iv - D_i / 2) / (S_i + T_i)`` per label and patch, so each label's map is sharpened around half
   its own patch Dice. In a patch with little foreground, ``D_fg`` is small and the foreground term,
   divided by the small foreground mass, outweighs the background term: voxels well below 0.5 are
   pushed to lesion. (``tests/training/test_mean_teacher.py`` checks this on hand-computed maps.)

usage: python benchmarks/over_segmentation.py WORKDIR --truth DIR [--n 10] [--cases 8] [--patches 64]
Prints Markdown tables of both, of the mean teacher's Ls and Lc per 200 steps (its
``mean_teacher_log.json``), and of the same pooled figures for the test predictions (read from
nnU-Net's ``summary.json``, for comparison only), and writes ``WORKDIR/report/over_segmentation.json``.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from nnunet_mt.pipeline import workdir_env


def unannotated_cases(raw: Path, truth: Path, count: int, file_ending: str) -> dict:
    """The first ``count`` unannotated cases (sorted) with their channel files and true mask."""
    folder = raw / "imagesUnlabeled"
    names = sorted({f.name[: -len(file_ending)].rsplit("_", 1)[0] for f in folder.glob(f"*{file_ending}")})
    if not names:
        raise SystemExit(f"{folder}: no unannotated scans")
    cases = {}
    for name in names[:count]:
        mask = truth / f"{name}{file_ending}"
        if not mask.is_file():
            raise SystemExit(f"--truth {truth}: no true mask {mask.name} for unannotated case {name}")
        cases[name] = (sorted(folder.glob(f"{name}_[0-9][0-9][0-9][0-9]{file_ending}")), mask)
    return cases


def _networks(state: dict) -> list[str]:
    """The networks of a snapshot to score: the model, and a student unless it is the model itself (snapshots
    of older runs also hold a teacherless trainer's model as ``student_weights``: score it once)."""
    student = state.get("student_weights")
    differs = student is not None and any(not torch.equal(v, state["network_weights"][k]) for k, v in student.items())
    return ["network_weights"] + (["student_weights"] if differs else [])


def volume_over_training(results: Path, cases: dict, prepared: dict) -> list[dict]:
    """One row per method, snapshot step and network: pooled quality on the cases, ``prepared`` once
    (:func:`nnunet_mt.evaluation.curves.snapshot_scores`, the runner's loop, with the label-quality score)."""
    from nnunet_mt.evaluation.curves import label_quality, snapshot_scores
    from nnunet_mt.evaluation.diagnostics import summarize_quality
    from nnunet_mt.training.snapshots import list_snapshots

    rows = []
    for fold in sorted(results.glob("*/fold_0")):
        if not list_snapshots(fold) or "__nnUNetPlans_init__" in fold.parent.name:
            continue
        method = fold.parent.name.split("__")[0]
        scored = snapshot_scores(fold, cases, label_quality, keys=_networks, summary="precision", prepared=prepared,
                                 log=lambda line: None)
        for key, step in dict.fromkeys((r["model"], r["step"]) for r in scored):
            s = summarize_quality({r["case"]: r for r in scored if r["model"] == key and r["step"] == step})
            row = {"method": method, "model": "student" if key == "student_weights" else "model",
                   "step": int(step), "dice": s["dice_mean"], "precision": s["pooled_precision"],
                   "recall": s["pooled_recall"], "volume_ratio": s["pooled_volume_ratio"]}
            print(f"{method} step {row['step']} {row['model']}: Dice {row['dice']:.3f} precision "
                  f"{row['precision']:.3f} recall {row['recall']:.3f} volume x{row['volume_ratio']:.2f}", flush=True)
            rows.append(row)
    return rows


def pooled_test_predictions(predictions: Path) -> dict[str, dict]:
    """Pooled precision, recall and predicted / true volume per method, from the ``summary.json`` that
    ``nnUNetv2_evaluate_folder`` wrote beside each method's test predictions (label 1). Read only: what
    the table's Dice hides, reported beside the checks above, never used to choose anything."""
    out = {}
    for summary in sorted(predictions.glob("*/summary.json")):
        cases = [c["metrics"]["1"] for c in json.loads(summary.read_text())["metric_per_case"]]
        tp, fp, fn = (sum(c[k] for c in cases) for k in ("TP", "FP", "FN"))
        out[summary.parent.name] = {"cases": len(cases), "precision": tp / (tp + fp) if tp + fp else float("nan"),
                                    "recall": tp / (tp + fn) if tp + fn else float("nan"),
                                    "volume_ratio": (tp + fp) / (tp + fn) if tp + fn else float("nan")}
    return out


def losses_over_training(results: Path, window: int = 200) -> list[dict]:
    """Mean Ls and Lc of the mean teacher per ``window`` optimizer steps, from its ``mean_teacher_log.json``
    (every step's values; the per-epoch lines of the training log are single steps)."""
    rows = []
    for log in sorted(results.glob("nnUNetTrainerMeanTeacher*/fold_0/mean_teacher_log.json")):
        h = json.loads(log.read_text())
        steps = np.asarray(h["step"])
        for start in range(0, int(steps.max()) + 1, window):
            sel = (steps >= start) & (steps < start + window)
            rows.append({"trainer": log.parents[1].name.split("__")[0], "steps": f"{start}-{start + window - 1}",
                         "Ls": float(np.mean(np.asarray(h["Ls"])[sel])),
                         "Lc": float(np.mean(np.asarray(h["Lc"])[sel]))})
    return rows


def consistency_push(t_fg: np.ndarray) -> np.ndarray:
    """``-dLc/dz`` per voxel for one output patch at ``s = t`` (z: the student's foreground logit of a
    two-label softmax; ``t_fg`` its foreground probabilities, any shape). Positive: a descent step raises
    the foreground there."""
    from nnunet_mt.training.mean_teacher import soft_dice_consistency

    t = torch.as_tensor(t_fg, dtype=torch.float64).clamp(1e-7, 1 - 1e-7)
    z = torch.logit(t).requires_grad_(True)
    s = torch.stack([1 - torch.sigmoid(z), torch.sigmoid(z)])[None]
    target = torch.stack([1 - t, t])[None]
    soft_dice_consistency(s, target).backward()
    return (-z.grad).numpy()


def step0_push(init_fold: Path, prepared: dict, patch: tuple[int, int, int], per_type: int,
               rng: np.random.Generator) -> dict:
    """Counts of :func:`consistency_push` on lesion- and healthy-centred patches of the init model's maps."""
    from nnunet_mt.evaluation.curves import _predictor

    predictor = _predictor(init_fold, "checkpoint_final.pth", "cpu")
    half = np.array(patch) // 2
    out = {k: {"patches": 0, "foreground_mass": [], "model_lesion": 0, "pushed_up": 0, "pushed_up_true": 0,
                "pushed_down": 0}
           for k in ("lesion", "healthy")}
    for c in prepared.values():
        with torch.no_grad():
            logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(c.data))
        prob = torch.softmax(torch.as_tensor(logits).float(), 0)[1].numpy()
        lesion = prob >= 0.5
        brain = c.inside  # nnU-Net's non-zero region: where the trainers' sampler draws healthy centres
        shape = np.array(prob.shape)
        for kind, where in (("lesion", lesion), ("healthy", brain & ~lesion)):
            centres = np.argwhere(where)
            centres = centres[np.all((centres >= half) & (centres < shape - (np.array(patch) - half)), 1)]
            if not len(centres):
                continue
            for i in rng.choice(len(centres), size=min(per_type, len(centres)), replace=False):
                lo = centres[i] - half
                sl = tuple(slice(a, a + n) for a, n in zip(lo, patch))
                t, ref = prob[sl], c.reference[sl]
                push = consistency_push(t)
                up = (push > 0) & (t < 0.5)
                o = out[kind]
                o["patches"] += 1
                o["foreground_mass"].append(float(t.mean()))
                o["model_lesion"] += int((t >= 0.5).sum())
                o["pushed_up"] += int(up.sum())
                o["pushed_up_true"] += int((up & ref).sum())
                o["pushed_down"] += int(((push < 0) & (t >= 0.5)).sum())
    for o in out.values():
        m = o.pop("foreground_mass")
        o["mean_foreground_mass"] = float(np.mean(m)) if m else float("nan")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workdir", type=Path)
    p.add_argument("--truth", type=Path, required=True, help="true masks of the unannotated scans")
    p.add_argument("--n", type=int, default=10, help="annotated count of the run (folder nN)")
    p.add_argument("--cases", type=int, default=8, help="unannotated scans to use, first by name")
    p.add_argument("--patches", type=int, default=64, help="patches per type and scan for the gradient check")
    p.add_argument("--patch", type=int, nargs=3, default=(6, 21, 21),
                   help="output patch size (the trainer logs it: 'DeepMedic segments: ... output')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-snapshots", action="store_true", help="only the step-0 gradient check")
    args = p.parse_args(argv)
    os.environ.update(workdir_env(args.workdir))
    manifest = json.loads((args.workdir / "manifest.json").read_text())
    datasets = sorted((args.workdir / "nnUNet_raw").glob("Dataset*"))
    if not datasets:
        raise SystemExit(f"{args.workdir / 'nnUNet_raw'}: no dataset")
    raw = datasets[0]
    file_ending = json.loads((raw / "dataset.json").read_text())["file_ending"]
    cases = unannotated_cases(raw, args.truth, args.cases, file_ending)
    results = sorted((args.workdir / "nnUNet_results").glob(f"Dataset*_n{args.n}"))
    if not results:
        raise SystemExit(f"{args.workdir / 'nnUNet_results'}: no dataset of count {args.n}")
    results = results[0]
    init_folds = sorted(results.glob("*__nnUNetPlans_init__*/fold_0"))
    if not init_folds:
        raise SystemExit(f"{results}: no init model (a *__nnUNetPlans_init__* folder)")

    from nnunet_mt.evaluation.curves import _predictor, preprocess_cases

    prepared = preprocess_cases(_predictor(init_folds[0], "checkpoint_final.pth", "cpu"), cases)
    report = {"cases": sorted(cases), "seed": args.seed, "source_seed": manifest.get("seed")}
    push = step0_push(init_folds[0], prepared, tuple(args.patch), args.patches, np.random.default_rng(args.seed))
    report["step0_push"] = push
    print(f"\nStep 0, Eq. 1's gradient at s = t on {len(cases)} unannotated scans, output patches {args.patch}:\n")
    print("| patches centred on | patches | mean foreground probability | voxels the model calls lesion | "
          "background voxels pushed towards lesion | of which truly lesion | lesion voxels pushed towards "
          "background |")
    print("|---|---|---|---|---|---|---|")
    for kind, o in push.items():
        frac = o["pushed_up_true"] / o["pushed_up"] if o["pushed_up"] else float("nan")
        print(f"| {kind} | {o['patches']} | {o['mean_foreground_mass']:.4f} | {o['model_lesion']} | "
              f"{o['pushed_up']} | {o['pushed_up_true']} ({frac:.1%}) | {o['pushed_down']} |")
    if not args.skip_snapshots:
        rows = volume_over_training(results, cases, prepared)
        report["volume_over_training"] = rows
        print(f"\nSnapshots on the same {len(cases)} unannotated scans (pooled precision, recall, volume):\n")
        print("| method | network | step | mean Dice | precision | recall | predicted / true volume |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['method']} | {r['model']} | {r['step']} | {r['dice']:.3f} | {r['precision']:.3f} | "
                  f"{r['recall']:.3f} | {r['volume_ratio']:.2f} |")
    losses = losses_over_training(results)
    report["losses_over_training"] = losses
    if losses:
        print("\nThe mean teacher's losses, mean per 200 steps (mean_teacher_log.json):\n")
        print("| trainer | steps | Ls | Lc |")
        print("|---|---|---|---|")
        for r in losses:
            print(f"| {r['trainer']} | {r['steps']} | {r['Ls']:.3f} | {r['Lc']:.3f} |")
    tests = pooled_test_predictions(args.workdir / f"n{args.n}" / "predictions")
    report["test_volume"] = tests
    if tests:
        print("\nThe test predictions, for comparison (nnU-Net's summary.json, TP / FP / FN summed over the cases):\n")
        print("| method | test scans | precision | recall | predicted / true volume |")
        print("|---|---|---|---|---|")
        for method, t in tests.items():
            print(f"| {method} | {t['cases']} | {t['precision']:.3f} | {t['recall']:.3f} | {t['volume_ratio']:.2f} |")
    out = args.workdir / "report" / "over_segmentation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, out)
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()

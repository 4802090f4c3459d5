"""Why a mean teacher over-segments, measured on the *unannotated* scans (never the test scans).

After ``nnunet_mt_reproduce ... --snapshot-every K --unlabeled-truth DIR``, the unannotated scans have
true masks that no trainer read. This script uses the first ``--cases`` of them (sorted by name) for two
checks:

1. **Volume over training.** Every snapshot of every method (and the mean teacher's student) is scored
   on those scans, in nnU-Net's preprocessed space: voxel Dice, and pooled (sums over the cases)
   precision, recall and predicted / true lesion volume. If the consistency term makes the foreground
   grow, the volume ratio rises with the steps for the mean teacher and not for the supervised model.
2. **The direction of each consistency's gradient at step 0.** There teacher and student have the start
   model's weights (the converged start ``*__nnUNetPlans_start__*``, or the init model of a run without
   one), so (noise left out) both give its softmax ``t``. For output patches of the training size centred
   on the model's lesions (pseudo-lesions) and on the rest of the brain (healthy), grouped 4 + 4 as the
   trainer's unannotated half, it takes the gradient of each trainer's ``Lc`` (Eq. 1 and every variant of
   ``trainers/mean_teacher_variants.py``, controls left out) with respect to the student's foreground
   logit at ``s = t``. A descent step raises the foreground where that gradient is negative. Counted:
   voxels the model calls background (``t < 0.5``) that the step pushes towards lesion, how many of them
   are truly lesion, beside the voxels it calls lesion in the same patches and those of them the step
   pushes towards background. Losses whose gradient vanishes at ``s = t`` (squared, mse, kl) push nothing.

   Why Eq. 1 can push: with its unsquared denominator, ``dLc/ds_v`` of label ``i`` is
   ``-(t_iv - D_i / 2) / (S_i + T_i)`` per label and patch, so each label's map is sharpened around half
   its own patch Dice. In a patch with little foreground, ``D_fg`` is small and the foreground term,
   divided by the small foreground mass, outweighs the background term: voxels well below 0.5 are
   pushed to lesion. (``tests/training/test_mean_teacher.py`` checks this on hand-computed maps.) The
   released loss's one-hot target pushes a voxel the teacher calls background only down.

usage: python benchmarks/analyses/over_segmentation.py WORKDIR --truth DIR [--n 10] [--cases 8] [--patches 64]
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

from nnunet_mt.runner.layout import INIT_PLANS, START_PLANS
from nnunet_mt.utils.pipeline import workdir_env


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
        if not list_snapshots(fold) or any(f"__{p}__" in fold.parent.name for p in (INIT_PLANS, START_PLANS)):
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


def consistencies() -> dict[str, dict]:
    """The trainers' distinct consistencies, in the order of the variants' table: name -> ``loss``, its
    ``kwargs``, the weight ``w`` of ``L = Ls + beta w Lc`` and the runner's method names that use it. From
    the trainer classes themselves (``MeanTeacher`` is the paper's Eq. 1); the controls (``w = 0``) are left
    out, and variants that change only beta, the teacher's dropout or add the similarity term share their
    consistency's row (at step 0, without noise or dropout, the student's and teacher's features are equal,
    where the similarity term's gradient is 0)."""
    from nnunet_mt.trainers.mean_teacher_variants import VARIANTS
    from nnunet_mt.trainers.nnUNetTrainerMeanTeacher import nnUNetTrainerMeanTeacher
    from nnunet_mt.training.mean_teacher import CONSISTENCY_LOSSES

    out: dict[str, dict] = {}
    for method, cls in [("MeanTeacher", nnUNetTrainerMeanTeacher), *VARIANTS.items()]:
        if not cls.consistency_scale:
            continue
        name = cls.consistency + "".join(f" {k}={v:g}" for k, v in sorted(cls.consistency_kwargs.items())
                                         if cls.consistency != "released")
        row = out.setdefault(name, {"loss": CONSISTENCY_LOSSES[cls.consistency], "kwargs": dict(cls.consistency_kwargs),
                                    "weight": float(cls.consistency_scale), "methods": []})
        row["methods"].append(method)
    return out


def consistency_push(t_fg: np.ndarray, loss=None, **kwargs) -> np.ndarray:
    """``-dLc/dz`` per voxel for a batch of output patches at ``s = t``: ``t_fg`` is ``(B, *spatial)``, the
    teacher's foreground probabilities of a two-label softmax, and ``z`` the student's foreground logit.
    ``loss(student_probs, teacher_probs, **kwargs)`` is one of ``CONSISTENCY_LOSSES`` (default: Eq. 1,
    ``soft_dice_consistency``); a loss that pools over the batch (``released``) sees the whole batch.
    Positive: a descent step raises the foreground there. In float64, so a loss whose gradient vanishes at
    ``s = t`` (squared, mse, kl) gives zeros up to rounding (about 1e-17)."""
    from nnunet_mt.training.mean_teacher import soft_dice_consistency

    t = torch.as_tensor(np.asarray(t_fg), dtype=torch.float64).clamp(1e-7, 1 - 1e-7)
    if t.ndim < 2:
        raise ValueError(f"t_fg must be (B, *spatial), got shape {tuple(t.shape)}")
    z = torch.logit(t).requires_grad_(True)
    s = torch.stack([1 - torch.sigmoid(z), torch.sigmoid(z)], 1)
    (loss or soft_dice_consistency)(s, torch.stack([1 - t, t], 1), **kwargs).backward()
    return (-z.grad).numpy()


#: a push smaller than this (per logit, float64) is rounding, not a push
PUSH_TOLERANCE = 1e-12


def draw_patches(prob: np.ndarray, inside: np.ndarray, patch: tuple[int, int, int], per_type: int,
                 rng: np.random.Generator) -> dict[str, list[tuple[slice, ...]]]:
    """Up to ``per_type`` output patches of one scan per kind: centred on the model's lesion voxels
    (``prob >= 0.5``: the pseudo-lesions the trainer's sampler centres half of its unannotated patches on)
    and on the rest of ``inside`` (nnU-Net's non-zero region, where it draws healthy centres); centres are
    drawn without replacement among those whose patch lies inside the volume."""
    half = np.array(patch) // 2
    shape = np.array(prob.shape)
    lesion = prob >= 0.5
    out = {}
    for kind, where in (("lesion", lesion), ("healthy", inside & ~lesion)):
        centres = np.argwhere(where)
        centres = centres[np.all((centres >= half) & (centres < shape - (np.array(patch) - half)), 1)]
        picks = rng.choice(len(centres), size=min(per_type, len(centres)), replace=False) if len(centres) else []
        out[kind] = [tuple(slice(a, a + n) for a, n in zip(centres[i] - half, patch)) for i in picks]
    return out


def unannotated_batches(patches: list[tuple[str, np.ndarray, np.ndarray]], batch_size: int = 8,
                        rng: np.random.Generator | None = None) -> list[list[tuple[str, np.ndarray, np.ndarray]]]:
    """``(kind, t, reference)`` patches grouped as the trainer's unannotated half: ``batch_size / 2`` of each
    kind per batch (shuffled with ``rng`` if given); what is left of the more frequent kind forms the last
    batches on its own."""
    by_kind = {k: [p for p in patches if p[0] == k] for k in ("lesion", "healthy")}
    if rng is not None:
        for k in by_kind:
            by_kind[k] = [by_kind[k][i] for i in rng.permutation(len(by_kind[k]))]
    h = batch_size // 2
    lesion, healthy = by_kind["lesion"], by_kind["healthy"]
    n = min(len(lesion), len(healthy)) // h
    batches = [lesion[i * h:(i + 1) * h] + healthy[i * h:(i + 1) * h] for i in range(n)]
    rest = lesion[n * h:] + healthy[n * h:]
    batches += [rest[i:i + batch_size] for i in range(0, len(rest), batch_size)]
    return batches


def count_push(batches: list, loss, kwargs: dict) -> dict[str, dict]:
    """Per kind of patch, the counts of :func:`consistency_push` over ``batches`` (:func:`unannotated_batches`):
    voxels the model calls lesion, background voxels (``t < 0.5``) pushed towards lesion and how many of them
    are truly lesion, lesion voxels pushed towards background, the sum of the push over the background voxels
    pushed towards lesion, and the largest ``|push|`` (both unweighted: multiply by the trainer's ``w``)."""
    out = {k: {"patches": 0, "foreground_mass": [], "model_lesion": 0, "pushed_up": 0, "pushed_up_true": 0,
               "pushed_down": 0, "push_up_sum": 0.0, "max_abs_push": 0.0} for k in ("lesion", "healthy")}
    for batch in batches:
        push = consistency_push(np.stack([t for _, t, _ in batch]), loss, **kwargs)
        for (kind, t, ref), p in zip(batch, push):
            up = (p > PUSH_TOLERANCE) & (t < 0.5)
            o = out[kind]
            o["patches"] += 1
            o["foreground_mass"].append(float(t.mean()))
            o["model_lesion"] += int((t >= 0.5).sum())
            o["pushed_up"] += int(up.sum())
            o["pushed_up_true"] += int((up & ref).sum())
            o["pushed_down"] += int(((p < -PUSH_TOLERANCE) & (t >= 0.5)).sum())
            o["push_up_sum"] += float(p[up].sum())
            o["max_abs_push"] = max(o["max_abs_push"], float(np.abs(p).max()))
    for o in out.values():
        m = o.pop("foreground_mass")
        o["mean_foreground_mass"] = float(np.mean(m)) if m else float("nan")
    return out


def step0_push(model_fold: Path, prepared: dict, patch: tuple[int, int, int], per_type: int,
               rng: np.random.Generator, batch_size: int = 8) -> dict[str, dict]:
    """:func:`count_push` of every consistency (:func:`consistencies`) on the same patches of the start
    model's maps (``model_fold``: the converged start, or the init model of a run without one), grouped into
    the same unannotated batches.

    At step 0 teacher and student both hold the start model's weights, so with the noise left out both give
    its softmax ``t``; the push is the loss's own bias where they agree. Two approximations, both stated in
    the report: the maps are nnU-Net's sliding-window predictions (BatchNorm with running statistics, the
    trainer's forward normalises over its 16 patches), and the released consistency pools over the 8
    unannotated patches (the trainer pools over all 16, the annotated 8 drawn from the training scans)."""
    from nnunet_mt.evaluation.curves import _predictor

    predictor = _predictor(model_fold, "checkpoint_final.pth", "cpu")
    patches = []
    for c in prepared.values():
        with torch.no_grad():
            logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(c.data))
        prob = torch.softmax(torch.as_tensor(logits).float(), 0)[1].numpy()
        for kind, slices in draw_patches(prob, c.inside, patch, per_type, rng).items():
            patches += [(kind, prob[sl], c.reference[sl]) for sl in slices]
    batches = unannotated_batches(patches, batch_size, rng)
    return {name: {**count_push(batches, c["loss"], c["kwargs"]), "weight": c["weight"], "methods": c["methods"]}
            for name, c in consistencies().items()}


def start_model(results: Path) -> Path:
    """The model every method starts from: the converged start (``*__nnUNetPlans_start__*``) if the run has
    one, else the init model."""
    for plans in (START_PLANS, INIT_PLANS):
        folds = sorted(results.glob(f"*__{plans}__*/fold_0"))
        if folds:
            return folds[0]
    raise SystemExit(f"{results}: no start or init model (a *__nnUNetPlans_start__* or *__nnUNetPlans_init__* "
                     f"folder)")


def print_push_table(push: dict[str, dict]) -> None:
    print("| consistency (methods) | patches centred on | patches | mean foreground probability | voxels the "
          "model calls lesion | background voxels pushed towards lesion | of which truly lesion | lesion voxels "
          "pushed towards background | push towards lesion, summed over those background voxels, × w | largest \\|push\\| × w |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, row in push.items():
        for kind in ("lesion", "healthy"):
            o = row[kind]
            frac = f"{o['pushed_up_true'] / o['pushed_up']:.1%}" if o["pushed_up"] else "–"
            label = f"{name} ({', '.join(row['methods'])})" if kind == "lesion" else ""
            print(f"| {label} | {'pseudo-lesion' if kind == 'lesion' else 'healthy tissue'} | {o['patches']} | "
                  f"{o['mean_foreground_mass']:.4f} | {o['model_lesion']} | {o['pushed_up']} | "
                  f"{o['pushed_up_true']} ({frac}) | {o['pushed_down']} | {o['push_up_sum'] * row['weight']:.2e} | "
                  f"{o['max_abs_push'] * row['weight']:.2e} |")


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
    model = start_model(results)

    from nnunet_mt.evaluation.curves import _predictor, preprocess_cases

    prepared = preprocess_cases(_predictor(model, "checkpoint_final.pth", "cpu"), cases)
    report = {"cases": sorted(cases), "seed": args.seed, "source_seed": manifest.get("seed"),
              "start_model": model.parent.name, "patch": list(args.patch), "batch_size": 8}
    push = step0_push(model, prepared, tuple(args.patch), args.patches, np.random.default_rng(args.seed))
    report["step0_push"] = push
    print(f"\nStep 0, each consistency's gradient at s = t ({model.parent.name}) on {len(cases)} unannotated "
          f"scans, output patches {args.patch}, batches of 4 + 4:\n")
    print_push_table(push)
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

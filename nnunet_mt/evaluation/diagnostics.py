"""What the runner can say besides the test table: how the models moved, and how good the pseudo-labels were.

Questions the Dice table cannot answer, measured without tuning anything on them:

* **Over training** (``nnunet_mt_reproduce --snapshot-every K``): the Dice of every snapshot of every
  method on the validation scans (else on test scans, never to choose anything), for a semi-supervised
  method both the model (the mean teacher's teacher) and its student; its predicted volume, precision and
  recall on unannotated scans with true masks; and each snapshot's relative distance from the start in weights,
  ``||theta - theta_init|| / ||theta_init||`` over all parameters and buffers that are floating point.
  An EMA teacher with alpha = 0.999 moves about 1/1000 of the student's way per step: this shows
  whether the run was long enough for that to matter.
* **Pseudo-labels** (``--unlabeled-truth DIR``: true masks of the unannotated scans, e.g. the synthetic
  generator's, which no trainer reads): Dice, precision and recall of the init model's predictions on
  the unannotated scans, i.e. the pseudo-labels of the pseudo-label baseline and the lesion regions the
  mean teacher samples from.

Results are cached in ``WORKDIR/n{n}/diagnostics/`` (a rerun computes only what is missing) and end up
in the report as a plot and a markdown section.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from nnunet_mt.evaluation.curves import label_quality, pseudo_label_quality, snapshot_dice, snapshot_scores
from nnunet_mt.training.snapshots import list_snapshots
from nnunet_mt.utils.atomic import write_csv, write_json

#: the two networks of a semi-supervised snapshot, as the report names them
MODEL_NAMES = {"network_weights": "model", "student_weights": "student"}


def relative_distance(weights: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> float:
    """``||w - r|| / ||r||`` over the floating-point entries both state dicts share (a single L2 norm)."""
    diff = ref = 0.0
    for name, r in reference.items():
        w = weights.get(name)
        if w is None or not torch.is_floating_point(r):
            continue
        diff += float(((w.double() - r.double()) ** 2).sum())
        ref += float((r.double() ** 2).sum())
    return math.sqrt(diff / ref) if ref > 0 else float("nan")


def _cached(fold_dir: Path, cases: Mapping, cache: Path) -> tuple[list[str], dict | None]:
    """(the snapshot names in ``fold_dir``, the cached result if it was computed for these snapshots and cases)."""
    snapshots = [s.name for s in list_snapshots(fold_dir)]
    if snapshots and cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("snapshots") == snapshots and cached.get("cases") == sorted(cases):
            return snapshots, cached
    return snapshots, None


def snapshot_diagnostics(fold_dir: Path, cases: Mapping[str, tuple[Sequence[Path], Path]], init_checkpoint: Path,
                         cache: Path, device: str = "cpu") -> dict | None:
    """Dice on ``cases`` and distance from the init model of every snapshot in ``fold_dir`` (None: no
    snapshots). Cached in ``cache``; recomputed when the snapshots or cases differ from the cached ones."""
    snapshots, cached = _cached(fold_dir, cases, cache)
    if not snapshots or cached is not None:
        return cached
    init = torch.load(init_checkpoint, map_location="cpu", weights_only=False)["network_weights"]
    distances = []
    for snap in list_snapshots(fold_dir):
        state = torch.load(snap, map_location="cpu", weights_only=False)
        for key in MODEL_NAMES:
            if key in state:
                distances.append({"step": state["step"], "model": key,
                                  "distance_from_init": relative_distance(state[key], init)})
    rows = snapshot_dice(fold_dir, cases, keys=tuple(MODEL_NAMES), device=device)
    result = {"snapshots": snapshots, "cases": sorted(cases), "dice": rows, "distance": distances}
    write_json(cache, result)
    return result


def snapshot_volume(fold_dir: Path, cases: Mapping[str, tuple[Sequence[Path], Path]], cache: Path,
                    device: str = "cpu") -> dict | None:
    """Predicted / true lesion volume, precision and recall of every snapshot (model and student) on ``cases``,
    the unannotated scans with their true masks (which no trainer reads): whether a method's foreground grows
    over training. Per-case :func:`~nnunet_mt.evaluation.curves.label_quality` rows and, per network and
    step, the voxel-pooled summary (:func:`summarize_quality`). Cached like :func:`snapshot_diagnostics`."""
    snapshots, cached = _cached(fold_dir, cases, cache)
    if not snapshots or cached is not None:
        return cached
    rows = snapshot_scores(fold_dir, cases, label_quality, keys=tuple(MODEL_NAMES), device=device,
                           summary="precision")
    summary = []
    for key in MODEL_NAMES:
        for step in sorted({r["step"] for r in rows if r["model"] == key}):
            per_case = {r["case"]: r for r in rows if r["model"] == key and r["step"] == step}
            summary.append({"model": key, "step": step, **summarize_quality(per_case)})
    result = {"snapshots": snapshots, "cases": sorted(cases), "rows": rows, "summary": summary}
    write_json(cache, result)
    return result


def pseudo_label_diagnostics(unlabeled_folder: Path, digest: str, fold_dir: Path, truth_dir: Path,
                             images: Mapping[str, Sequence[Path]], file_ending: str, cache: Path) -> dict | None:
    """Quality of the pseudo-label maps of the weights ``digest`` against the true masks in ``truth_dir``
    (None: no maps of these weights). ``fold_dir`` is any model folder of the dataset: its plans preprocess the
    true masks onto the maps' grid. Every unannotated case needs its truth, else a clear error."""
    from nnunet_mt.training.pseudo_lesions import PseudoLabelMaps, labels_folder

    maps = PseudoLabelMaps(labels_folder(unlabeled_folder, digest))
    cases = [c for c in maps.cases() if c in images]
    if not cases:
        return None
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("digest") == digest and sorted(cached.get("per_case", {})) == cases:
            return cached
    missing = [c for c in cases if not (Path(truth_dir) / f"{c}{file_ending}").is_file()]
    if missing:
        raise FileNotFoundError(f"--unlabeled-truth {truth_dir}: no true mask for {len(missing)} unannotated "
                                f"case(s), e.g. {Path(truth_dir) / (missing[0] + file_ending)}")
    inputs = {c: (images[c], Path(truth_dir) / f"{c}{file_ending}") for c in cases}
    per_case = pseudo_label_quality(fold_dir, {c: maps[c] for c in cases}, inputs)
    result = {"digest": digest, "per_case": per_case, "summary": summarize_quality(per_case)}
    write_json(cache, result)
    return result


def summarize_quality(per_case: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean ± std of Dice / precision / recall over cases (NaN left out, counted), and voxel-pooled precision,
    recall and predicted / true volume (sums over the cases)."""
    out: dict[str, float] = {"cases": len(per_case)}
    for key in ("dice", "precision", "recall"):
        v = np.array([q[key] for q in per_case.values()], dtype=float)
        out[f"{key}_mean"] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
        out[f"{key}_std"] = float(np.nanstd(v)) if np.isfinite(v).any() else float("nan")
        out[f"{key}_nan_cases"] = int(np.isnan(v).sum())
    tp, pred, true = (sum(q[k] for q in per_case.values())
                      for k in ("true_positive_voxels", "predicted_voxels", "true_voxels"))
    out["pooled_precision"] = tp / pred if pred else float("nan")
    out["pooled_recall"] = tp / true if true else float("nan")
    out["pooled_volume_ratio"] = pred / true if true else float("nan")
    return out


def write_snapshot_plot(per_method: Mapping[str, dict], path: Path, title: str, set_name: str = "test"):
    """Dice on the scored scans (left) and distance from the start model (right) against steps, per method and
    network, to ``path``; returns the figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from nnunet_mt.evaluation.curves import mean_by_step

    fig = Figure(figsize=(11, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_d, ax_w = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for method, diag in per_method.items():
        for key, name in MODEL_NAMES.items():
            steps, means, _ = mean_by_step(diag["dice"], key)
            if len(steps):
                ls = "-" if key == "network_weights" else "--"
                ax_d.plot(steps, means, ls, marker="o", ms=3, label=f"{method} {name}")
            dist = [(d["step"], d["distance_from_init"]) for d in diag["distance"] if d["model"] == key]
            if dist:
                ax_w.plot(*zip(*dist), "-" if key == "network_weights" else "--", marker="o", ms=3,
                          label=f"{method} {name}")
    ax_d.set_xlabel("optimizer steps after the start model")
    ax_d.set_ylabel(f"mean Dice on the {set_name} scans")
    ax_w.set_xlabel("optimizer steps after the start model")
    ax_w.set_ylabel("||w - w_init|| / ||w_init||")
    for ax in (ax_d, ax_w):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(str(path))
    return fig


SCREENING_COLUMNS = ("count", "method", "network", "step", "cases", "dice_mean", "dice_std", "distance_from_start",
                     "volume_ratio", "precision", "recall")


def screening_rows(n: int, per_method: Mapping[str, dict], volumes: Mapping[str, dict]) -> list[dict]:
    """One row per method, network and snapshot step: mean ± std Dice on the scored scans, distance from the
    start model, and (where measured) the pooled volume ratio, precision and recall on the unannotated scans."""
    from nnunet_mt.evaluation.curves import mean_by_step

    rows = []
    for method, diag in per_method.items():
        dist = {(d["model"], d["step"]): d["distance_from_init"] for d in diag["distance"]}
        volume = {(v["model"], v["step"]): v for v in volumes.get(method, {}).get("summary", [])}
        for key, name in MODEL_NAMES.items():
            steps, means, stds = mean_by_step(diag["dice"], key)
            cases = len({r["case"] for r in diag["dice"] if r["model"] == key})
            for step, mean, std in zip(steps, means, stds):
                v = volume.get((key, int(step)), {})
                rows.append({"count": n, "method": method, "network": name, "step": int(step), "cases": cases,
                             "dice_mean": float(mean), "dice_std": float(std),
                             "distance_from_start": dist.get((key, int(step)), float("nan")),
                             "volume_ratio": v.get("pooled_volume_ratio", float("nan")),
                             "precision": v.get("pooled_precision", float("nan")),
                             "recall": v.get("pooled_recall", float("nan"))})
    return rows


def cached_screening_rows(folder: Path, n: int, methods: Sequence[str] | None = None) -> list[dict]:
    """:func:`screening_rows` of the methods whose snapshot diagnostics are cached in ``folder`` (a count's
    ``diagnostics/``), e.g. while a screen is still running: ``methods`` in that order (those without a cache
    left out), else every cached method in the order its cache was written."""
    folder = Path(folder)
    if methods is None:
        caches = sorted(folder.glob("snapshots_*.json"), key=lambda f: f.stat().st_mtime)
        methods = [f.name[len("snapshots_"):-len(".json")] for f in caches]
    per_method, volumes = {}, {}
    for method in methods:
        scores, volume = folder / f"snapshots_{method}.json", folder / f"volume_{method}.json"
        if scores.exists():
            per_method[method] = json.loads(scores.read_text())
        if volume.exists():
            volumes[method] = json.loads(volume.read_text())
    return screening_rows(n, per_method, volumes)


def write_screening(rows: Sequence[dict], path: Path) -> None:
    """The screening rows as CSV (written atomically), floats to 6 significant digits."""
    write_csv(path, rows, SCREENING_COLUMNS, float_format=".6g")


def diagnostics_markdown(n: int, per_method: Mapping[str, dict], pseudo: dict | None, plot_name: str | None,
                         set_name: str = "test", volumes: Mapping[str, dict] | None = None) -> str:
    """The report's diagnostics section of one count."""
    lines = [f"### Diagnostics, {n} annotated scans", ""]
    if per_method:
        use = ("the validation set, neither training nor test: the scans choices are made on" if set_name == "validation"
               else "never used to choose anything")
        has_volume = bool(volumes)
        lines += [f"Mean {set_name} Dice of each snapshot (model / student; {use}) and its distance from the start "
                  f"model" + ("; predicted / true volume, precision and recall on the unannotated scans (pooled over "
                              "their voxels; their true masks are read here only)" if has_volume else "") + ":", "",
                  "| method | network | step | mean Dice | distance from start |"
                  + (" volume ratio | precision | recall |" if has_volume else ""),
                  "|---|---|---|---|---|" + ("---|---|---|" if has_volume else "")]
        for r in screening_rows(n, per_method, volumes or {}):
            line = (f"| {r['method']} | {r['network']} | {r['step']} | {r['dice_mean']:.4f} | "
                    f"{r['distance_from_start']:.4f} |")
            if has_volume:
                line += f" {r['volume_ratio']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} |"
            lines.append(line)
        lines.append("")
        if plot_name:
            lines += [f"![snapshots]({plot_name})", ""]
    if pseudo is not None:
        s = pseudo["summary"]
        lines += [f"Pseudo-labels of the {s['cases']} unannotated scans (the start model's predictions: the init model, or the --start-epochs stage after it; weights "
                  f"{pseudo['digest']}) against their true masks: Dice {s['dice_mean']:.4f} ± {s['dice_std']:.4f}, "
                  f"precision {s['precision_mean']:.4f} ± {s['precision_std']:.4f} ({s['precision_nan_cases']} "
                  f"case(s) with no predicted lesion), recall {s['recall_mean']:.4f} ± {s['recall_std']:.4f}.", ""]
    return "\n".join(lines)

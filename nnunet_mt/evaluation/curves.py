"""Dice of weight snapshots and of pseudo-labels against truth, in nnU-Net's preprocessed space.

Both serve decisions and diagnostics that must not touch the test scans' results: the schedule is
chosen from snapshots scored on held-out *training* scans (:mod:`nnunet_mt.commands.schedule`); the runner's
diagnostics score the mean teacher's teacher and student over training, and the pseudo-labels of the
unannotated scans against the generator's true masks.

Scores are computed where the networks work: each case is preprocessed once with the model's own
preprocessor (crop to non-zero, resampling, normalisation) and its reference mask goes through the same
steps (nnU-Net's ``run_case`` with the mask as the segmentation). Every snapshot then costs one forward
per case through nnU-Net's sliding-window predictor (one exact tile: the DeepMedic window). Without
resampling (the target spacing is the scans' own, as for the synthetic cohort) this is the Dice of
``nnUNetv2_predict``'s output, up to the voxels the crop removed, which hold no lesion.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from nnunet_mt.evaluation.metrics import dice
from nnunet_mt.training.snapshots import list_snapshots


@dataclass
class PreprocessedCase:
    data: np.ndarray  # (c, z, y, x) float32, the network's input
    reference: np.ndarray  # (z, y, x) bool, the reference mask on the same grid
    inside: np.ndarray  # (z, y, x) bool, inside nnU-Net's non-zero region (its label -1 marks outside)


def _predictor(fold_dir: Path, checkpoint: str, device: str):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_mt.utils.ext_trainer import ext_trainer_value

    # nnU-Net finds the snapshot's trainer class (to build its network) through nnUNet_extTrainer, read at
    # call time; the orchestrators set it only for their subprocesses
    os.environ["nnUNet_extTrainer"] = ext_trainer_value(os.environ.get("nnUNet_extTrainer"))
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=device != "cpu", device=torch.device(device),
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    fold = fold_dir.name.split("_", 1)[1]
    predictor.initialize_from_trained_model_folder(str(fold_dir.parent), use_folds=(int(fold) if fold.isdigit()
                                                                                     else fold,),
                                                   checkpoint_name=checkpoint)
    return predictor


def preprocess_cases(predictor, cases: Mapping[str, tuple[Sequence[Path], Path]]) -> dict[str, PreprocessedCase]:
    """case -> (image files in channel order, reference mask file), preprocessed as the model's plans say."""
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    out = {}
    for case, (images, reference) in cases.items():
        data, seg, _ = preprocessor.run_case([str(f) for f in images], str(reference), predictor.plans_manager,
                                             predictor.configuration_manager, predictor.dataset_json)
        seg = np.asarray(seg[0])
        out[case] = PreprocessedCase(np.asarray(data, dtype=np.float32), seg > 0, seg >= 0)
    return out


def predict_mask(predictor, weights: dict, data: np.ndarray) -> np.ndarray:
    """Foreground (argmax > 0) of ``weights`` on one preprocessed case: (c, z, y, x) -> (z, y, x) bool."""
    predictor.network.load_state_dict(weights)
    with torch.no_grad():
        logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(data))
    return (torch.as_tensor(logits).argmax(0) > 0).cpu().numpy()


def snapshot_scores(fold_dir: str | Path, cases: Mapping[str, tuple[Sequence[Path], Path]],
                    score: Callable[[np.ndarray, np.ndarray], dict],
                    keys: Sequence[str] | Callable[[dict], Sequence[str]] = ("network_weights",),
                    device: str = "cpu", log: Callable[[str], None] = print, summary: str = "dice",
                    prepared: Mapping[str, PreprocessedCase] | None = None) -> list[dict]:
    """``score(predicted mask, reference mask)`` of every snapshot in ``fold_dir/snapshots`` on ``cases``, per
    weights key and case: the one loop over snapshots x networks x cases that every curve here uses.

    ``keys``: which networks of a snapshot (``network_weights``: the model; ``student_weights``: a
    semi-supervised trainer's student; keys a snapshot lacks are skipped), or a function of the loaded
    snapshot that says so. Cases are preprocessed once, here, unless ``prepared`` (from
    :func:`preprocess_cases` with the same plans) is given. Returns rows ``{"epoch", "step", "model",
    "case", **score(...)}``; each snapshot and network logs the mean of the score's ``summary`` entry."""
    fold_dir = Path(fold_dir)
    snapshots = list_snapshots(fold_dir)
    if not snapshots:
        raise FileNotFoundError(f"{fold_dir / 'snapshots'}: no snapshots (train with snapshot_every / "
                                f"nnUNet_mt_snapshot_every set)")
    predictor = _predictor(fold_dir, f"snapshots/{snapshots[0].name}", device)
    prepared = preprocess_cases(predictor, cases) if prepared is None else prepared
    rows = []
    for snap in snapshots:
        state = torch.load(snap, map_location="cpu", weights_only=False)
        for key in (keys(state) if callable(keys) else keys):
            if key not in state:
                continue
            values = []
            for case, c in prepared.items():
                scored = score(predict_mask(predictor, state[key], c.data), c.reference)
                rows.append({"epoch": state["current_epoch"], "step": state["step"], "model": key, "case": case,
                             **scored})
                values.append(scored[summary])
            shown = float("nan") if all(math.isnan(v) for v in values) else np.nanmean(values)
            log(f"{fold_dir.parent.name}/{fold_dir.name} {snap.name} (step {state['step']}) {key}: mean "
                f"{summary} {shown:.4f} over {len(values)} case(s)")
    return rows


def snapshot_dice(fold_dir: str | Path, cases: Mapping[str, tuple[Sequence[Path], Path]],
                  keys: Sequence[str] = ("network_weights",), device: str = "cpu",
                  log: Callable[[str], None] = print) -> list[dict]:
    """Dice of every snapshot on ``cases`` (:func:`snapshot_scores`): rows ``{"epoch", "step", "model",
    "case", "dice"}``; a case with an empty reference and an empty prediction has Dice NaN (nnU-Net's
    convention), an empty prediction of a lesion 0."""
    return snapshot_scores(fold_dir, cases, lambda p, r: {"dice": dice(p, r)}, keys, device, log)


def mean_by_step(rows: Sequence[dict], model: str = "network_weights") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean Dice, std Dice) of one model's rows, by step; NaN Dice (both masks empty) left out."""
    steps = sorted({r["step"] for r in rows if r["model"] == model})
    means, stds = [], []
    for s in steps:
        d = np.array([r["dice"] for r in rows if r["model"] == model and r["step"] == s], dtype=float)
        d = d[~np.isnan(d)]
        means.append(d.mean() if d.size else np.nan)
        stds.append(d.std() if d.size else np.nan)
    return np.array(steps), np.array(means), np.array(stds)


def label_quality(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Voxel Dice, precision and recall of a predicted lesion mask against the true one."""
    p, t = np.asarray(predicted) > 0, np.asarray(truth) > 0
    tp = float(np.logical_and(p, t).sum())
    return {"dice": dice(p, t), "precision": tp / p.sum() if p.any() else float("nan"),
            "recall": tp / t.sum() if t.any() else float("nan"),
            "predicted_voxels": int(p.sum()), "true_voxels": int(t.sum()), "true_positive_voxels": int(tp)}


def pseudo_label_quality(fold_dir: str | Path, label_maps: Mapping[str, np.ndarray],
                         cases: Mapping[str, tuple[Sequence[Path], Path]]) -> dict[str, dict[str, float]]:
    """Per unannotated case: :func:`label_quality` of its pseudo-label map (preprocessed space, as the
    pseudo-lesion pass stores it) against its true mask (raw file, preprocessed here the same way)."""
    fold_dir = Path(fold_dir)
    snapshots = list_snapshots(fold_dir)
    checkpoint = f"snapshots/{snapshots[0].name}" if snapshots else "checkpoint_final.pth"
    predictor = _predictor(fold_dir, checkpoint, "cpu")
    prepared = preprocess_cases(predictor, cases)
    out = {}
    for case, c in prepared.items():
        labels = np.asarray(label_maps[case])
        labels = labels[0] if labels.ndim == 4 else labels
        if labels.shape != c.reference.shape:
            raise ValueError(f"pseudo-label map of {case} has shape {labels.shape}, its preprocessed true mask "
                             f"{c.reference.shape}: they are not on the same grid")
        out[case] = label_quality(labels, c.reference)
    return out

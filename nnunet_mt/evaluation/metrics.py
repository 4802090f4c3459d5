"""Per-case segmentation metrics of a predicted lesion mask against the reference.

Dice is the paper's metric (Cui et al., IPMI 2019, Tables 2-3); HD95, absolute volume difference
and lesion-wise F1 are the usual companions in stroke-lesion challenges (ISLES) and are reported
beside it. Dice counts come from nnU-Net's own ``compute_tp_fp_fn_tn`` so the numbers agree with
``nnUNetv2_evaluate_folder``; surface distances come from MONAI.

Empty masks. A prediction that misses a lesion entirely scores Dice 0 and is flagged
``missed``; it has no HD95 (a distance to nothing), so :mod:`~nnunet_mt.evaluation.report` averages
HD95 over the cases where it is defined for every method and reports the misses beside it, rather than
letting a method that predicts nothing lose its worst cases from the mean.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

METRIC_KEYS = ("dice", "hd95_mm", "missed", "avd_ml", "ref_ml", "pred_ml", "lesion_f1", "lesions_ref",
               "lesions_pred", "lesions_tp", "lesions_fp", "lesions_fn")

# 26-connectivity: voxels touching at a corner belong to the same lesion
_CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


def dice(pred_mask: np.ndarray, ref_mask: np.ndarray) -> float:
    """Foreground Dice 2TP / (2TP + FP + FN), counted by nnU-Net's ``compute_tp_fp_fn_tn``.

    NaN when both masks are empty (nnU-Net's convention in ``compute_metrics``), 0 when exactly one is.
    """
    from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn

    tp, fp, fn, _ = compute_tp_fp_fn_tn(ref_mask.astype(bool), pred_mask.astype(bool))
    if tp + fp + fn == 0:
        return float("nan")
    return float(2 * tp / (2 * tp + fp + fn))


def hd95(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing_zyx: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (MONAI ``compute_hausdorff_distance``).

    MONAI takes the surface voxels of each mask (voxels with a 6-neighbour outside it), the Euclidean
    distances in mm from every surface voxel of one mask to the nearest surface voxel of the other, the
    95th percentile of each directed set, and returns the larger of the two. NaN when either mask is
    empty: a distance to nothing is undefined (MONAI would return inf/NaN with a warning).
    """
    if not pred_mask.any() or not ref_mask.any():
        return float("nan")
    import torch
    from monai.metrics import compute_hausdorff_distance

    # MONAI wants one-hot (batch, channel, *spatial); one channel = the lesion, so include it
    y_pred = torch.from_numpy(np.ascontiguousarray(pred_mask, dtype=bool))[None, None]
    y_ref = torch.from_numpy(np.ascontiguousarray(ref_mask, dtype=bool))[None, None]
    with warnings.catch_warnings():
        # MONAI >= 1.5 passes its own deprecated ``always_return_as_numpy`` internally: not ours to fix
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
        value = compute_hausdorff_distance(y_pred, y_ref, include_background=True, percentile=95,
                                           spacing=[float(s) for s in spacing_zyx])
    return float(value.reshape(-1)[0])


def lesion_detection(pred_mask: np.ndarray, ref_mask: np.ndarray) -> dict[str, float]:
    """Lesion-wise detection from 3D connected components (26-connectivity, ``scipy.ndimage.label``).

    A reference lesion is detected (TP) if any predicted foreground voxel overlaps it, missed (FN)
    otherwise; a predicted component that overlaps no reference lesion is a false positive (FP).
    F1 = 2TP / (2TP + FP + FN); NaN when neither mask has a lesion.
    """
    ref_components, n_ref = ndimage.label(ref_mask, structure=_CONNECTIVITY_26)
    pred_components, n_pred = ndimage.label(pred_mask, structure=_CONNECTIVITY_26)
    hit_ref = np.unique(ref_components[pred_mask & ref_mask])
    overlapping_pred = np.unique(pred_components[pred_mask & ref_mask])
    tp = int(np.count_nonzero(hit_ref))
    fn = n_ref - tp
    fp = n_pred - int(np.count_nonzero(overlapping_pred))
    f1 = float("nan") if n_ref == 0 and n_pred == 0 else 2 * tp / (2 * tp + fp + fn)
    return {"lesion_f1": f1, "lesions_ref": n_ref, "lesions_pred": n_pred, "lesions_tp": tp, "lesions_fp": fp,
            "lesions_fn": fn}


def case_metrics(pred: np.ndarray, ref: np.ndarray, spacing_zyx: Sequence[float], label: int = 1
                 ) -> dict[str, float]:
    """All metrics of one test case for ``label`` on integer label arrays of shape (z, y, x).

    Keys (see ``METRIC_KEYS``):

    - ``dice``: foreground Dice; NaN if both masks are empty (nnU-Net), 0 if exactly one is.
    - ``hd95_mm``: 95th-percentile symmetric Hausdorff distance in mm; NaN if either mask is empty.
    - ``missed``: 1 if the reference has lesion voxels and the prediction none (Dice 0, no HD95), else 0.
    - ``avd_ml``: |V_pred - V_ref| in mL, voxel volume = prod(spacing_zyx) mm³ / 1000 (0 if both empty);
      ``ref_ml`` and ``pred_ml`` are the two volumes.
    - ``lesion_f1`` and the counts ``lesions_ref/pred/tp/fp/fn``: lesion-wise detection (see
      ``lesion_detection``); F1 is NaN if neither mask has a lesion.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if len(spacing_zyx) != ref.ndim:
        raise ValueError(f"spacing {tuple(spacing_zyx)} has {len(spacing_zyx)} values for a {ref.ndim}D image")
    pred_mask, ref_mask = pred == label, ref == label
    voxel_ml = math.prod(float(s) for s in spacing_zyx) / 1000.0
    ref_ml = float(np.count_nonzero(ref_mask)) * voxel_ml
    pred_ml = float(np.count_nonzero(pred_mask)) * voxel_ml
    out = {"dice": dice(pred_mask, ref_mask), "hd95_mm": hd95(pred_mask, ref_mask, spacing_zyx),
           "missed": int(ref_ml > 0 and pred_ml == 0), "avd_ml": abs(pred_ml - ref_ml), "ref_ml": ref_ml, "pred_ml": pred_ml}
    out.update(lesion_detection(pred_mask, ref_mask))
    return out


def _read(path: Path):
    import SimpleITK as sitk

    if not Path(path).is_file():
        raise ValueError(f"{path}: file not found")
    return sitk.ReadImage(str(path))


def _check_same_grid(pred_image, ref_image, pred_file: Path, ref_file: Path) -> None:
    """A prediction must lie on its reference's voxel grid: same size, spacing, origin and direction."""
    # tolerances absorb the float32 rounding of NIfTI headers, not real resampling differences
    checks = (("shape (x, y, z)", pred_image.GetSize(), ref_image.GetSize(), 0.0),
              ("spacing (x, y, z) mm", pred_image.GetSpacing(), ref_image.GetSpacing(), 1e-4),
              ("origin (x, y, z) mm", pred_image.GetOrigin(), ref_image.GetOrigin(), 1e-3),
              ("direction", pred_image.GetDirection(), ref_image.GetDirection(), 1e-4))
    for what, p, r, tol in checks:
        if len(p) != len(r) or not np.allclose(p, r, rtol=0, atol=tol):
            raise ValueError(f"{pred_file}: {what} {tuple(p)} differs from the reference {ref_file}: {tuple(r)}")


def evaluate_cases(pred_files: dict[str, Path], ref_files: dict[str, Path], label: int = 1
                   ) -> dict[str, dict[str, float]]:
    """Case id -> ``case_metrics`` for every case of ``ref_files``, read as NIfTI with SimpleITK.

    The spacing is the reference's (SimpleITK gives x, y, z; arrays are z, y, x, so it is reversed).
    Raises ValueError naming the file when a reference case has no prediction or when a prediction
    is not on its reference's grid. Predictions of cases without a reference are ignored.
    """
    import SimpleITK as sitk

    missing = sorted(set(ref_files) - set(pred_files))
    if missing:
        raise ValueError(f"no prediction for {len(missing)} reference case(s): "
                         + ", ".join(f"{c} ({ref_files[c]})" for c in missing))
    out = {}
    for case in sorted(ref_files):
        ref_image, pred_image = _read(ref_files[case]), _read(pred_files[case])
        _check_same_grid(pred_image, ref_image, pred_files[case], ref_files[case])
        spacing_zyx = tuple(reversed(ref_image.GetSpacing()))
        out[case] = case_metrics(sitk.GetArrayFromImage(pred_image), sitk.GetArrayFromImage(ref_image),
                                 spacing_zyx, label=label)
    return out

"""Lesions and confounders: where and how focal signal changes are drawn and shaped.

Acute lesions (labelled): 1-3 irregular blobs (or a shower of small embolic ones) in GM/WM of a vascular
territory, ADC reduced by 15-55 %, b0 slightly raised; label = slab fraction >= 0.5. Confounders (never labelled):
T2 shine-through from old infarcts and white-matter hyperintensities, bright on b0 *and* DWI with normal/high ADC.
Blobs are shaped on a thin-slice grid so that labels and signals get slab partial volume.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .params import BlobParams, SubjectParams, _choice, _log_uniform, _uniform
from .anatomy import (Grid, TissueTemplate, _smooth_noise, mni_to_subject_index, sample_template, slab_average,
                      subject_index_to_mni)

LESION_SUBSLICES = 5  # thin sub-slices per thick slab for lesions and labels (6.5 mm / 5 = 1.3 mm)
PARENCHYMA_MIN_FRACTION = 0.6  # lesions live where GM + WM fraction >= this (not CSF/ventricles)

# Difficulty knobs.  Defaults aim at a task where a supervised DeepMedic trained on 10-20 annotated
# scans reaches Dice ~0.6 (paper Table 2), leaving room for semi-supervised gains.
# Lowering ADC reduction, raising edge softness, confounder probabilities or the low-SNR share makes
# the task harder.
ADC_REDUCTION_RANGE = (0.15, 0.55)  # acute lesion ADC reduction at the core: subtle .. obvious
ADC_REDUCTION_BETA = (2.0, 1.6)  # Beta(a, b) shape inside that range (mean ~0.37)
ADC_REDUCTION_LESION_JITTER = 0.04  # per-lesion deviation from the subject's reduction (same age)
LESION_EDGE_FRACTION_RANGE = (0.45, 0.8)  # share of the core change at the lesion rim (fuzzy rims)
LESION_B0_INCREASE_MAX = 0.12  # acute vasogenic oedema: b0 raised by U(0, this)
LESION_IRREGULARITY_RANGE = (0.3, 0.8)  # weight of smooth noise against the ellipsoid profile
LESION_NOISE_SCALE_RANGE = (0.25, 0.5)  # smoothing of shape noise, fraction of the mean radius
LESION_ENVELOPE_FACTOR = 1.8  # ellipsoid volume / target volume: room for the irregular shape
P_OLD_INFARCT = 0.25  # T2 shine-through from an old (chronic/subacute) infarct
OLD_INFARCT_VOLUME_ML = (1.0, 25.0)  # log-uniform
OLD_INFARCT_S0_FACTOR = (1.5, 2.2)
OLD_INFARCT_ADC_FACTOR = (1.0, 1.35)  # normal/high ADC: bright on DWI only through T2
P_WMH = 0.4  # periventricular / deep white-matter hyperintensities
WMH_COUNT = (2, 8)
WMH_VOLUME_ML = (0.15, 2.5)  # log-uniform, per blob
WMH_S0_FACTOR = (1.3, 1.7)
WMH_ADC_FACTOR = (1.05, 1.3)

# Acute lesion burden.  Total volume per subject ~ log-normal truncated to the range: with these
# values ~35 % of subjects are below 10 mL, ~7 % below 2 mL, and the tail reaches 150 mL (large MCA).
LESION_VOLUME_LOG_MEAN, LESION_VOLUME_LOG_SD = 3.0, 1.5  # ln(mL)
LESION_VOLUME_RANGE_ML = (0.4, 150.0)
LESION_MIN_PIECE_ML = 0.25  # smallest embolic/satellite lesion

# Vascular territories in MNI space (RAS mm).  "x" is |x| (the hemisphere sign is drawn), ranges are
# uniform; aspect = relative semi-axes (x, y, z) of the lesion ellipsoid.
TERRITORIES: dict[str, dict] = {
    "MCA": {"x": (30.0, 50.0), "y": (-35.0, 20.0), "z": (0.0, 40.0), "aspect": (0.7, 1.2, 1.1)},
    "MCA_large": {"x": (28.0, 40.0), "y": (-25.0, 10.0), "z": (5.0, 30.0), "aspect": (0.8, 1.2, 1.1)},
    "ACA": {"x": (4.0, 12.0), "y": (-30.0, 30.0), "z": (30.0, 60.0), "aspect": (0.6, 1.4, 1.0)},
    "PCA": {"x": (10.0, 30.0), "y": (-90.0, -62.0), "z": (-10.0, 18.0), "aspect": (0.9, 1.2, 0.9)},
    "lacunar_basal_ganglia": {"x": (15.0, 28.0), "y": (-5.0, 12.0), "z": (-2.0, 12.0),
                              "aspect": (0.8, 0.8, 1.6)},
    "lacunar_thalamus": {"x": (8.0, 16.0), "y": (-25.0, -12.0), "z": (0.0, 12.0), "aspect": (0.8, 0.8, 1.6)},
    "lacunar_corona_radiata": {"x": (18.0, 30.0), "y": (-25.0, 10.0), "z": (18.0, 32.0),
                               "aspect": (0.8, 0.8, 1.6)},
    "lacunar_pons": {"x": (2.0, 7.0), "y": (-32.0, -22.0), "z": (-36.0, -24.0), "aspect": (0.8, 0.8, 1.5)},
    "cerebellar": {"x": (12.0, 38.0), "y": (-80.0, -52.0), "z": (-42.0, -25.0), "aspect": (1.0, 1.0, 0.9)},
    "periventricular": {"x": (14.0, 30.0), "y": (-40.0, 20.0), "z": (8.0, 35.0), "aspect": (1.0, 1.3, 1.0)},
}
EMBOLIC_TERRITORY_WEIGHTS = {"MCA": 0.6, "ACA": 0.1, "PCA": 0.2, "cerebellar": 0.1}
LACUNAR_TERRITORY_WEIGHTS = {"lacunar_basal_ganglia": 0.35, "lacunar_thalamus": 0.2,
                             "lacunar_corona_radiata": 0.35, "lacunar_pons": 0.1}


def draw_total_lesion_volume(rng: np.random.Generator) -> float:
    """Total acute lesion volume of a subject in mL: log-normal truncated to LESION_VOLUME_RANGE_ML
    (rejection sampling, so the shape inside the range is log-normal and the maximum is never exceeded)."""
    lo, hi = LESION_VOLUME_RANGE_ML
    while True:
        v = float(math.exp(rng.normal(LESION_VOLUME_LOG_MEAN, LESION_VOLUME_LOG_SD)))
        if lo <= v <= hi:
            return v


def _ellipsoid_radii(*, volume_ml: float, aspect: Sequence[float], rng: np.random.Generator
                     ) -> tuple[float, float, float]:
    """Semi-axes (mm) of an ellipsoid of LESION_ENVELOPE_FACTOR x volume with jittered aspect ratios."""
    a = np.asarray(aspect, dtype=np.float64) * np.exp(rng.normal(0.0, 0.15, size=3))
    k = (3.0 * LESION_ENVELOPE_FACTOR * volume_ml * 1000.0 / (4.0 * math.pi * float(np.prod(a)))) ** (1 / 3)
    return tuple(float(v) for v in k * a)


def _territory_center(*, territory: str, hemisphere: int, rng: np.random.Generator
                      ) -> tuple[float, float, float]:
    """A random MNI point (RAS mm) inside the territory's box, on the given hemisphere."""
    t = TERRITORIES[territory]
    side = hemisphere if hemisphere != 0 else 1
    return (side * _uniform(rng, t["x"]), _uniform(rng, t["y"]), _uniform(rng, t["z"]))


def _draw_blob(*, rng: np.random.Generator, kind: str, territory: str, hemisphere: int, volume_ml: float,
               s0_factor: float, adc_factor: float,
               center_mni: tuple[float, float, float] | None = None) -> BlobParams:
    """Draw shape parameters of one blob; location from the territory unless ``center_mni`` is given."""
    center = center_mni if center_mni is not None else _territory_center(
        territory=territory, hemisphere=hemisphere, rng=rng)
    radii = _ellipsoid_radii(volume_ml=volume_ml, aspect=TERRITORIES[territory]["aspect"], rng=rng)
    return BlobParams(kind=kind, territory=territory, hemisphere=hemisphere,
                      center_mni=tuple(float(c) for c in center), radii_mm=radii,
                      target_volume_ml=float(volume_ml), s0_factor=float(s0_factor),
                      adc_factor=float(adc_factor), edge_fraction=_uniform(rng, LESION_EDGE_FRACTION_RANGE),
                      irregularity=_uniform(rng, LESION_IRREGULARITY_RANGE),
                      noise_scale=_uniform(rng, LESION_NOISE_SCALE_RANGE),
                      shape_seed=int(rng.integers(0, 2 ** 31 - 1)))


def _split_volume(*, total_ml: float, n: int, rng: np.random.Generator) -> list[float]:
    """Split ``total_ml`` into ``n`` pieces, each >= LESION_MIN_PIECE_ML (Dirichlet shares), largest first."""
    n = max(1, min(n, int(total_ml // LESION_MIN_PIECE_ML)))
    shares = rng.dirichlet(np.full(n, 1.5))
    pieces = LESION_MIN_PIECE_ML + (total_ml - n * LESION_MIN_PIECE_ML) * shares
    return sorted((float(p) for p in pieces), reverse=True)


def draw_acute_lesions(rng: np.random.Generator) -> tuple[str, tuple[BlobParams, ...]]:
    """Acute lesions of one subject: (pattern, blobs).

    The total volume is drawn first (so the cohort's volume distribution is controlled exactly), then a
    pattern that suits it: small totals are often lacunes, mid-size ones territorial or embolic, large
    ones territorial (mostly MCA).  Lesions of a subject share the same age, hence similar ADC reduction.
    """
    total = draw_total_lesion_volume(rng)
    if total < 2.0:
        pattern = _choice(rng, {"lacunar": 0.5, "embolic": 0.2, "territorial": 0.3})
    elif total < 40.0:
        pattern = _choice(rng, {"territorial": 0.7, "embolic": 0.3})
    else:
        pattern = "territorial"
    lo, hi = ADC_REDUCTION_RANGE
    reduction = lo + (hi - lo) * float(rng.beta(*ADC_REDUCTION_BETA))
    hemisphere = int(rng.choice([-1, 1]))

    def acute(territory: str, volume: float, side: int, center=None) -> BlobParams:
        r = float(np.clip(reduction + rng.normal(0.0, ADC_REDUCTION_LESION_JITTER), 0.1, 0.65))
        return _draw_blob(rng=rng, kind="acute", territory=territory, hemisphere=side, volume_ml=volume,
                          s0_factor=1.0 + _uniform(rng, (0.0, LESION_B0_INCREASE_MAX)),
                          adc_factor=1.0 - r, center_mni=center)

    blobs: list[BlobParams] = []
    if pattern == "lacunar":
        n = 1 if rng.random() < 0.8 else 2
        for v in _split_volume(total_ml=total, n=n, rng=rng):
            blobs.append(acute(_choice(rng, LACUNAR_TERRITORY_WEIGHTS), v, hemisphere))
    elif pattern == "embolic":
        n = int(rng.integers(2, 4)) if total < 2.0 else int(rng.integers(3, 7))
        bilateral = rng.random() < 0.25
        for v in _split_volume(total_ml=total, n=n, rng=rng):
            side = int(rng.choice([-1, 1])) if bilateral else hemisphere
            blobs.append(acute(_choice(rng, EMBOLIC_TERRITORY_WEIGHTS), v, side))
    else:
        if total >= 40.0:
            territory = _choice(rng, {"MCA_large": 0.85, "PCA": 0.1, "ACA": 0.05})
        else:
            territory = _choice(rng, {"MCA": 0.7, "ACA": 0.1, "PCA": 0.2})
        n = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
        pieces = [total] if n == 1 else [total * _uniform(rng, (0.75, 0.95))]
        if n > 1:
            pieces += _split_volume(total_ml=max(total - pieces[0], LESION_MIN_PIECE_ML), n=n - 1, rng=rng)
        main = acute(territory, pieces[0], hemisphere)
        blobs.append(main)
        for v in pieces[1:]:
            # Satellites: same territory, a little outside the main lesion.
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction) + 1e-9
            dist = float(np.mean(main.radii_mm)) * _uniform(rng, (1.0, 1.8))
            center = tuple(float(c) for c in np.asarray(main.center_mni) + dist * direction)
            blobs.append(acute(territory, v, hemisphere, center))
    return pattern, tuple(blobs)


def draw_confounders(rng: np.random.Generator) -> tuple[BlobParams, ...]:
    """Unlabelled T2 shine-through: an old infarct and/or white-matter hyperintensities (some subjects)."""
    blobs: list[BlobParams] = []
    if rng.random() < P_OLD_INFARCT:
        territory = _choice(rng, {"MCA": 0.6, "PCA": 0.2, "ACA": 0.1, "cerebellar": 0.1})
        blobs.append(_draw_blob(rng=rng, kind="old_infarct", territory=territory,
                                hemisphere=int(rng.choice([-1, 1])),
                                volume_ml=_log_uniform(rng, OLD_INFARCT_VOLUME_ML),
                                s0_factor=_uniform(rng, OLD_INFARCT_S0_FACTOR),
                                adc_factor=_uniform(rng, OLD_INFARCT_ADC_FACTOR)))
    if rng.random() < P_WMH:
        for _ in range(int(rng.integers(WMH_COUNT[0], WMH_COUNT[1] + 1))):
            blobs.append(_draw_blob(rng=rng, kind="wmh", territory="periventricular",
                                    hemisphere=int(rng.choice([-1, 1])),
                                    volume_ml=_log_uniform(rng, WMH_VOLUME_ML),
                                    s0_factor=_uniform(rng, WMH_S0_FACTOR),
                                    adc_factor=_uniform(rng, WMH_ADC_FACTOR)))
    return tuple(blobs)


@dataclass
class BlobRender:
    """A blob on the fine grid: ``box`` (z, y, x) slices (z aligned to slabs), mask and core in [0, 1]."""

    box: tuple[slice, slice, slice]
    mask: np.ndarray
    core: np.ndarray
    gm: np.ndarray
    wm: np.ndarray


def render_blob(*, blob: BlobParams, params: SubjectParams, template: TissueTemplate, grid: Grid,
                occupied: np.ndarray) -> BlobRender | None:
    """Shape a blob on the fine ``grid``: the ``N`` highest voxels (N = target volume) of
    ``1 - rho^2 + irregularity * noise`` (rho: normalised ellipsoid radius) among voxels that are
    parenchyma (GM+WM), on the blob's hemisphere and not yet ``occupied`` (non-zero on the fine grid:
    blobs never overlap, so signal changes never stack).  The box grows if it is too
    small.  Returns None when the blob lies outside the field of view.
    """
    step = np.asarray(grid.step)
    spacing_zyx = np.array([params.spacing[2], params.spacing[1], params.spacing[0]]) * step
    center_sub = mni_to_subject_index(params, np.asarray(blob.center_mni)[None])[0]
    center = (center_sub - np.asarray(grid.origin)) / step  # fine-grid index (z, y, x)
    radii = np.array([blob.radii_mm[2], blob.radii_mm[1], blob.radii_mm[0]]) / spacing_zyx
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    n_target = max(1, int(round(blob.target_volume_ml / voxel_ml)))
    rng = np.random.default_rng(blob.shape_seed)
    sub = int(round(1.0 / grid.step[0]))
    to_mni = subject_index_to_mni(params) @ grid.matrix()
    for attempt in range(4):
        half = radii * 1.1 * (1.3 ** attempt) + 1.0
        lo = np.floor(center - half).astype(int)
        hi = np.ceil(center + half).astype(int) + 1
        lo[0], hi[0] = (lo[0] // sub) * sub, -(-hi[0] // sub) * sub  # whole slabs in z
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, grid.shape)
        if np.any(hi <= lo):
            return None
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        shape = tuple(int(b - a) for a, b in zip(lo, hi))
        box_grid = Grid(origin=tuple(np.asarray(grid.origin) + step * lo), step=grid.step, shape=shape)
        tissue = sample_template(template, params, box_grid)
        zz, yy, xx = (np.arange(a, b, dtype=np.float32) for a, b in zip(lo, hi))
        rho2 = (((zz - center[0]) / radii[0]) ** 2)[:, None, None] \
            + (((yy - center[1]) / radii[1]) ** 2)[None, :, None] \
            + (((xx - center[2]) / radii[2]) ** 2)[None, None, :]
        sigma = blob.noise_scale * radii  # noise correlation length follows the blob size per axis
        field = (1.0 - rho2) + blob.irregularity * _smooth_noise(shape, np.maximum(sigma, 1.0), rng)
        allowed = (tissue["gm"] + tissue["wm"] >= PARENCHYMA_MIN_FRACTION) & (occupied[box] == 0)
        if blob.hemisphere != 0:
            # Vascular territories are unilateral: keep the blob on its side of the midline (MNI x = 0).
            x_mni = (to_mni[0, 0] * zz[:, None, None] + to_mni[0, 1] * yy[None, :, None]
                     + to_mni[0, 2] * xx[None, None, :] + to_mni[0, 3])
            allowed &= blob.hemisphere * x_mni >= 1.0
        n_allowed = int(allowed.sum())
        if n_allowed >= n_target or attempt == 3:
            break
        rng = np.random.default_rng(blob.shape_seed)  # same noise realisation for every attempt
    if n_allowed == 0:
        return None
    values = field[allowed]
    n = min(n_target, n_allowed)
    thr = np.partition(values, values.size - n)[values.size - n]
    mask = allowed & (field >= thr)
    core = np.clip((field - thr) / max(float(values.max() - thr), 1e-6), 0.0, 1.0) * mask
    return BlobRender(box=box, mask=mask, core=core.astype(np.float32), gm=tissue["gm"], wm=tissue["wm"])


def blob_signal_change(render: BlobRender, blob: BlobParams, params: SubjectParams
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(delta b0, delta DWI) on the blob's fine box, relative units.

    The GM/WM compartments of blob voxels get S0 * s and ADC * a, where s and a go from the full
    change at the core to ``edge_fraction`` of it at the rim; the CSF compartment is untouched.
    """
    strength = (blob.edge_fraction + (1.0 - blob.edge_fraction) * render.core) * render.mask
    s = 1.0 + (blob.s0_factor - 1.0) * strength
    a = 1.0 + (blob.adc_factor - 1.0) * strength
    d_b0 = np.zeros_like(render.core)
    d_dwi = np.zeros_like(render.core)
    for t, frac in (("gm", render.gm), ("wm", render.wm)):
        s0, adc = params.s0[t], params.adc[t]
        d_b0 += frac * s0 * (s - 1.0)
        d_dwi += frac * s0 * (s * np.exp(-params.b_value * adc * a) - math.exp(-params.b_value * adc))
    return d_b0 * render.mask, d_dwi * render.mask


def add_slab_averaged(thick: np.ndarray, fine_box: np.ndarray, box: tuple[slice, slice, slice],
                      subslices: int) -> None:
    """Add a fine-grid box (z aligned to slabs) into the thick (z, y, x) array, averaging each slab."""
    z0 = box[0].start // subslices
    avg = slab_average(fine_box, subslices)
    thick[z0:z0 + avg.shape[0], box[1], box[2]] += avg


def label_from_fine(lesion_fine: np.ndarray, brain_mask: np.ndarray, subslices: int) -> np.ndarray:
    """Thick-slice label: voxels whose slab is >= 50 % lesion.  If that leaves the label empty although
    lesion exists (a tiny lesion split between slabs), the voxels at least half as covered as the best
    one are labelled, as a reader would still mark the visible spot."""
    nz = lesion_fine.shape[0] // subslices
    counts = lesion_fine.reshape(nz, subslices, *lesion_fine.shape[1:]).sum(axis=1, dtype=np.uint8)
    label = (2 * counts >= subslices) & brain_mask
    if not label.any() and counts.max() > 0:
        label = (2 * counts >= counts.max()) & (counts > 0) & brain_mask
    return label.astype(np.uint8)

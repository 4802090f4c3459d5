"""Synthetic acute ischemic stroke DWI cohort written as an nnU-Net v2 raw dataset.

The cohort imitates the data of Cui et al. 2019 (Sec. 3.1): 246 DWI scans of acute ischemic stroke
patients, 3T, b = 1000 s/mm^2 plus a b0 image, 0.96 x 0.96 x 6.5 mm, 240 x 240 x 21 voxels, 50 of them
annotated (20 train / 30 test) and 196 unannotated.  It is used as demo, test and benchmark data for
``nnunet_mt``.

How a subject is made (every step is one small function below):

1. *Parameters first.*  Every random quantity of a subject is drawn up front from its own generator
   ``np.random.default_rng([seed, subject_index, role])`` into a :class:`SubjectParams` dataclass
   (:func:`draw_subject_params`).  Rendering is a deterministic function of these parameters (noise
   fields use seeds stored in them), so a subject can be replayed and the files do not depend on the
   number of worker processes.
2. *Anatomy.*  The MNI152 2009a GM / WM probability maps and brain mask bundled with nilearn (no
   download) give tissue fractions; CSF = brain - GM - WM.  The template is resampled through a small
   random affine (rotation, scaling, translation) into the subject grid on a fine grid (thin
   sub-slices) and then averaged over each 6.5 mm slab, which gives thick-slice partial volume.
3. *Contrast.*  b0 is T2-like (CSF bright, GM > WM).  DWI follows ``S = S0 * exp(-b * ADC)`` with
   per-tissue ADC.  Partial-volume voxels mix the tissue signals linearly (signals, not ADCs, add).
4. *Acute lesions* (labelled): 1-3 irregular blobs (or a shower of small embolic ones) in GM/WM of a
   vascular territory, ADC reduced by 15-55 %, b0 slightly raised.  Label = slab fraction >= 0.5.
5. *Confounders* (never labelled, present in some subjects only): T2 shine-through (old infarcts,
   white-matter hyperintensities: bright on b0 *and* DWI, ADC normal/high), susceptibility
   drop-out / pile-up near the skull base, N/2 ghost, smooth bias field, gain, Rician noise with some
   low-SNR subjects.
6. *Skull stripping*, as in the paper: outside the subject's brain mask both channels are exactly 0,
   inside every voxel is > 0. With ``background="noisy"`` (``--background noisy``) nothing is stripped
   and the Rician noise covers the whole field of view, as in raw DWI.

Array conventions: numpy arrays of images are indexed ``(z, y, x)`` (SimpleITK order); ``shape`` and
``spacing`` arguments are given in ``(x, y, z)`` order like SimpleITK.  The subject frame is LPS (ITK
convention, identity direction): array x increases to the patient's left, y to posterior, z to
superior.  MNI coordinates are RAS millimetres.  Volumes are in mL, lengths in mm, ADC in mm^2/s.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

# ----------------------------------------------------------------------------------------------------
# Identity of the dataset
# ----------------------------------------------------------------------------------------------------
DATASET_NAME = "SyntheticStrokeDWI"
DEFAULT_DATASET_ID = 990
CASE_PREFIX = "SDWI"
FILE_ENDING = ".nii.gz"
GENERATOR_VERSION = "1.0"
ROLE_TRAIN, ROLE_TEST, ROLE_UNLABELED = 0, 1, 2
ROLE_NAMES = {ROLE_TRAIN: "train", ROLE_TEST: "test", ROLE_UNLABELED: "unlabeled"}
CHANNEL_NAMES = {0: "DWI", 1: "b0"}
LABELS = {"background": 0, "lesion": 1}
PAPER_REFERENCE = ("Cui W. et al., Semi-Supervised Brain Lesion Segmentation with an Adapted Mean "
                   "Teacher Model (2019)")

# ----------------------------------------------------------------------------------------------------
# Acquisition / geometry
# ----------------------------------------------------------------------------------------------------
B_VALUE = 1000.0  # s/mm^2 (paper)
LESION_SUBSLICES = 5  # thin sub-slices per thick slab for lesions and labels (6.5 mm / 5 = 1.3 mm)
TISSUE_SUBSLICES = 3  # sub-slices for anatomy: the template is 2 mm, finer sampling adds nothing
TEMPLATE_RESOLUTION_MM = 2.0  # nilearn's bundled MNI152 maps; anatomy is sampled in-plane at ~this
FOV_CENTER_MNI_Y = -17.0  # mm; the MNI brain spans y = -104..70, centre the in-plane FOV on it
SLAB_CENTER_MNI_Z = (4.0, 16.0)  # mm, range of the slab centre; 21 x 6.5 = 136.5 mm covers ~ -58..+82
ROTATION_MAX_DEG = 8.0  # per axis, uniform: head positioning
SCALE_MAX = 0.08  # global head size +-8 %, plus +-3 % per axis
SCALE_AXIS_JITTER = 0.03
TRANSLATION_MAX_MM = 5.0  # per axis

# ----------------------------------------------------------------------------------------------------
# Tissue contrast (relative units: S0 of white matter = 1)
# ----------------------------------------------------------------------------------------------------
S0_MEAN = {"wm": 1.0, "gm": 1.25, "csf": 2.6}  # T2-weighted EPI b0: CSF >> GM > WM
ADC_MEAN = {"wm": 0.70e-3, "gm": 0.83e-3, "csf": 3.0e-3}  # mm^2/s, healthy adult brain
TISSUE_JITTER = 0.06  # relative sd of per-subject S0 and ADC values
PARENCHYMA_MIN_FRACTION = 0.6  # lesions live where GM + WM fraction >= this (not CSF/ventricles)
BRAIN_MASK_MIN_FRACTION = 0.5  # skull-strip mask: slab-averaged brain fraction >= this

# ----------------------------------------------------------------------------------------------------
# Difficulty knobs.  Defaults aim at a task where a supervised DeepMedic trained on 10-20 annotated
# scans reaches Dice ~0.6 (paper Table 2), leaving room for semi-supervised gains.
# Lowering ADC reduction, raising edge softness, confounder probabilities or the low-SNR share makes
# the task harder.
# ----------------------------------------------------------------------------------------------------
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
P_SUSCEPTIBILITY = 0.6  # EPI distortion near air/bone at the skull base
SUSCEPTIBILITY_DROP = (0.3, 0.7)  # fractional signal loss at the drop-out centre
SUSCEPTIBILITY_PILEUP = (0.3, 1.0)  # fractional signal gain at the pile-up centre
P_GHOST = 0.4  # N/2 (Nyquist) ghost
GHOST_AMPLITUDE = (0.02, 0.06)  # relative to the image
BIAS_COEFF_STD = 0.07  # sd of the quadratic log-bias coefficients (coords in [-1, 1]): ~+-20 %
TEXTURE_STD = (0.02, 0.05)  # sd of smooth multiplicative tissue texture (~4 mm scale)
TEXTURE_SCALE_MM = 4.0
GAIN_LOG_MEAN, GAIN_LOG_SD = math.log(400.0), 0.3  # scanner units per relative S0 unit
DWI_SCALE_RANGE = (0.9, 1.1)  # channel-specific scaling of the stored trace image
P_LOW_SNR = 0.2
SNR_B0_NORMAL = (18.0, 35.0)  # WM b0 signal / noise sd
SNR_B0_LOW = (7.0, 13.0)
DWI_NOISE_RELATIVE = 0.6  # trace DWI averages 3 directions (and NEX), so its sd is lower than b0's

# ----------------------------------------------------------------------------------------------------
# Acute lesion burden.  Total volume per subject ~ log-normal truncated to the range: with these
# values ~35 % of subjects are below 10 mL, ~7 % below 2 mL, and the tail reaches 150 mL (large MCA).
# ----------------------------------------------------------------------------------------------------
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
# Skull-base susceptibility sources (RAS mm): orbitofrontal (frontal sinus) and temporal base (mastoid).
SUSCEPTIBILITY_SITES = {
    "orbitofrontal": {"x": (-8.0, 8.0), "y": (30.0, 45.0), "z": (-25.0, -15.0)},
    "temporal_base": {"x": (35.0, 50.0), "y": (-25.0, 5.0), "z": (-38.0, -25.0)},
}


# ====================================================================================================
# Parameter dataclasses
# ====================================================================================================
@dataclass(frozen=True)
class BlobParams:
    """One focal region of altered signal: thresholded smooth noise inside an ellipsoid, in GM/WM.

    ``kind`` 'acute' blobs are labelled lesions; 'old_infarct' and 'wmh' are unlabelled confounders.
    The core changes b0 by ``s0_factor`` and ADC by ``adc_factor``; at the rim only
    ``edge_fraction`` of that change is applied (signal changes taper towards the border).
    """

    kind: str
    territory: str
    hemisphere: int  # +1 right (MNI x > 0), -1 left, 0 unconstrained
    center_mni: tuple[float, float, float]  # mm, RAS
    radii_mm: tuple[float, float, float]  # ellipsoid semi-axes along subject x, y, z
    target_volume_ml: float
    s0_factor: float
    adc_factor: float
    edge_fraction: float
    irregularity: float
    noise_scale: float
    shape_seed: int


@dataclass(frozen=True)
class SusceptibilityParams:
    """EPI susceptibility artefact: a Gaussian drop-out plus a pile-up displaced along phase-encode (y)."""

    site: str
    center_mni: tuple[float, float, float]  # mm, RAS
    sigma_mm: tuple[float, float, float]  # Gaussian sd along subject x, y, z
    drop: float  # fractional signal loss at the drop-out centre (0..1)
    pileup: float  # fractional signal gain at the pile-up centre
    shift_mm: float  # pile-up displacement along subject y (phase-encode, anterior-posterior)


@dataclass(frozen=True)
class SubjectParams:
    """All random parameters of one subject; rendering is deterministic given these."""

    case_id: str
    role: int
    subject_index: int
    seed: int
    shape: tuple[int, int, int]  # voxels (x, y, z)
    spacing: tuple[float, float, float]  # mm (x, y, z)
    rotation_deg: tuple[float, float, float]  # about RAS x, y, z
    scale: tuple[float, float, float]  # head size relative to MNI along x, y, z
    fov_center_mni: tuple[float, float, float]  # MNI point (mm) imaged at the FOV centre
    s0: dict  # tissue -> relative S0 (b0 signal)
    adc: dict  # tissue -> ADC in mm^2/s
    b_value: float
    lesion_pattern: str  # 'territorial' | 'lacunar' | 'embolic'
    lesions: tuple[BlobParams, ...]
    confounders: tuple[BlobParams, ...]
    susceptibility: tuple[SusceptibilityParams, ...]
    ghost_amplitude: float  # 0 = no ghost
    bias_coeffs: tuple[float, ...]  # 9 quadratic log-field coefficients (x, y, z, x2, y2, z2, xy, xz, yz)
    texture_std: float
    gain: float
    dwi_scale: float
    snr_b0: float
    low_snr: bool
    noise_seed: int

    @property
    def total_lesion_volume_ml(self) -> float:
        """Sum of the target volumes of the acute (labelled) lesions, mL."""
        return float(sum(b.target_volume_ml for b in self.lesions))


@dataclass
class RenderedSubject:
    """Rendered arrays, all (z, y, x): dwi / b0 float32 (skull-stripped unless rendered with a noisy
    background), label uint8, brain bool."""

    dwi: np.ndarray
    b0: np.ndarray
    label: np.ndarray
    brain_mask: np.ndarray
    lesion_volumes_ml: list[float]  # rendered volume of each acute lesion on the fine grid
    label_volume_ml: float


@dataclass(frozen=True)
class TissueTemplate:
    """MNI152 tissue fractions, arrays indexed like the NIfTI (i, j, k) = (x, y, z), 2 mm voxels."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    affine: np.ndarray  # voxel index -> MNI mm
    brain_bbox_mni: np.ndarray  # (2, 3) min / max corner of the brain in MNI mm


# ====================================================================================================
# Template (anatomy)
# ====================================================================================================
_TEMPLATE: TissueTemplate | None = None


def load_tissue_template() -> TissueTemplate:
    """Load (once per process) GM, WM and CSF fraction maps from nilearn's bundled MNI152 files.

    CSF = brain mask - GM - WM (clipped), which gives ventricles and sulcal CSF; the three fractions
    are renormalised to sum to at most 1.
    """
    global _TEMPLATE
    if _TEMPLATE is None:
        # Imported lazily: nilearn is slow to import and only needed here.
        from nilearn.datasets import (load_mni152_brain_mask, load_mni152_gm_template,
                                      load_mni152_wm_template)

        res = int(TEMPLATE_RESOLUTION_MM)
        gm_img = load_mni152_gm_template(resolution=res)
        mask = np.asarray(load_mni152_brain_mask(resolution=res).get_fdata(), dtype=np.float32)
        gm = np.clip(np.asarray(gm_img.get_fdata(), dtype=np.float32), 0, 1) * mask
        wm = np.clip(np.asarray(load_mni152_wm_template(resolution=res).get_fdata(), dtype=np.float32),
                     0, 1) * mask
        csf = np.clip(mask - gm - wm, 0, 1)
        total = gm + wm + csf
        norm = np.where(total > 1, 1.0 / np.maximum(total, 1e-6), 1.0).astype(np.float32)
        affine = np.asarray(gm_img.affine, dtype=np.float64)
        idx = np.argwhere(mask > 0)
        corners = np.stack([idx.min(0), idx.max(0)]).astype(np.float64)
        bbox = (affine[:3, :3] @ corners.T).T + affine[:3, 3]
        _TEMPLATE = TissueTemplate(gm=np.ascontiguousarray(gm * norm), wm=np.ascontiguousarray(wm * norm),
                                   csf=np.ascontiguousarray(csf * norm), affine=affine,
                                   brain_bbox_mni=np.sort(bbox, axis=0))
    return _TEMPLATE


def _set_template(template: TissueTemplate) -> None:
    """Worker initializer: reuse the parent's template instead of re-importing nilearn."""
    global _TEMPLATE
    _TEMPLATE = template


# ====================================================================================================
# Parameter drawing
# ====================================================================================================
def case_identifier(*, role: int, subject_index: int) -> str:
    """Case id: SDWI_0001 (train), SDWI_T0001 (test), SDWI_U0001 (unlabeled); index is 1-based."""
    tag = {ROLE_TRAIN: "", ROLE_TEST: "T", ROLE_UNLABELED: "U"}[role]
    return f"{CASE_PREFIX}_{tag}{subject_index:04d}"


def _uniform(rng: np.random.Generator, lo_hi: Sequence[float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def _log_uniform(rng: np.random.Generator, lo_hi: Sequence[float]) -> float:
    return float(math.exp(rng.uniform(math.log(lo_hi[0]), math.log(lo_hi[1]))))


def _choice(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


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


def draw_susceptibility(rng: np.random.Generator) -> tuple[SusceptibilityParams, ...]:
    """Skull-base susceptibility artefacts (some subjects): orbitofrontal and/or temporal base."""
    if rng.random() >= P_SUSCEPTIBILITY:
        return ()
    out = []
    sites = ["orbitofrontal", "temporal_base", "temporal_base"]
    sides = [0, -1, 1]
    for site, side in zip(sites, sides):
        if rng.random() < 0.6:
            s = SUSCEPTIBILITY_SITES[site]
            x = _uniform(rng, s["x"]) * (side if side != 0 else 1)
            out.append(SusceptibilityParams(
                site=site if side == 0 else f"{site}_{'right' if side > 0 else 'left'}",
                center_mni=(x, _uniform(rng, s["y"]), _uniform(rng, s["z"])),
                sigma_mm=(_uniform(rng, (6.0, 14.0)), _uniform(rng, (5.0, 10.0)), _uniform(rng, (5.0, 9.0))),
                drop=_uniform(rng, SUSCEPTIBILITY_DROP), pileup=_uniform(rng, SUSCEPTIBILITY_PILEUP),
                shift_mm=float(rng.choice([-1, 1])) * _uniform(rng, (6.0, 14.0))))
    return tuple(out)


def draw_subject_params(*, seed: int, subject_index: int, role: int,
                        shape: tuple[int, int, int] = (240, 240, 21),
                        spacing: tuple[float, float, float] = (0.96, 0.96, 6.5)) -> SubjectParams:
    """Draw every random parameter of one subject from ``default_rng([seed, subject_index, role])``.

    shape: voxels (x, y, z); spacing: mm (x, y, z).  Cheap (no rendering), so it can be sampled often.
    """
    rng = np.random.default_rng([int(seed), int(subject_index), int(role)])
    rotation = tuple(_uniform(rng, (-ROTATION_MAX_DEG, ROTATION_MAX_DEG)) for _ in range(3))
    global_scale = 1.0 + _uniform(rng, (-SCALE_MAX, SCALE_MAX))
    scale = tuple(global_scale * (1.0 + _uniform(rng, (-SCALE_AXIS_JITTER, SCALE_AXIS_JITTER))) for _ in range(3))
    translation = [_uniform(rng, (-TRANSLATION_MAX_MM, TRANSLATION_MAX_MM)) for _ in range(3)]
    fov_center = (translation[0], FOV_CENTER_MNI_Y + translation[1],
                  _uniform(rng, SLAB_CENTER_MNI_Z) + translation[2])
    s0 = {t: float(v * math.exp(rng.normal(0.0, TISSUE_JITTER))) for t, v in S0_MEAN.items()}
    adc = {t: float(v * math.exp(rng.normal(0.0, TISSUE_JITTER))) for t, v in ADC_MEAN.items()}
    pattern, lesions = draw_acute_lesions(rng)
    confounders = draw_confounders(rng)
    susceptibility = draw_susceptibility(rng)
    ghost = _uniform(rng, GHOST_AMPLITUDE) if rng.random() < P_GHOST else 0.0
    bias = tuple(float(c) for c in rng.normal(0.0, BIAS_COEFF_STD, size=9))
    low_snr = bool(rng.random() < P_LOW_SNR)
    snr = _uniform(rng, SNR_B0_LOW if low_snr else SNR_B0_NORMAL)
    return SubjectParams(
        case_id=case_identifier(role=role, subject_index=subject_index), role=int(role),
        subject_index=int(subject_index), seed=int(seed), shape=tuple(int(s) for s in shape),
        spacing=tuple(float(s) for s in spacing), rotation_deg=rotation, scale=scale,
        fov_center_mni=tuple(float(c) for c in fov_center), s0=s0, adc=adc, b_value=B_VALUE,
        lesion_pattern=pattern, lesions=lesions, confounders=confounders, susceptibility=susceptibility,
        ghost_amplitude=float(ghost), bias_coeffs=bias, texture_std=_uniform(rng, TEXTURE_STD),
        gain=float(math.exp(rng.normal(GAIN_LOG_MEAN, GAIN_LOG_SD))), dwi_scale=_uniform(rng, DWI_SCALE_RANGE),
        snr_b0=snr, low_snr=low_snr, noise_seed=int(rng.integers(0, 2 ** 31 - 1)))


# ====================================================================================================
# Geometry
# ====================================================================================================
def _rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation Rz @ Ry @ Rx for angles (deg) about the RAS x, y, z axes."""
    ax, ay, az = (math.radians(a) for a in angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def subject_index_to_mni(params: SubjectParams) -> np.ndarray:
    """4x4 matrix: homogeneous continuous subject voxel index (z, y, x, 1) -> MNI mm (x, y, z, 1).

    index -> LPS mm about the FOV centre -> RAS -> undo head size/rotation -> shift to the imaged MNI point.
    """
    shape_xyz = np.asarray(params.shape, dtype=np.float64)
    spacing_xyz = np.asarray(params.spacing, dtype=np.float64)
    perm = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.float64)  # (z, y, x) -> (x, y, z)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    head = _rotation_matrix(params.rotation_deg) @ np.diag(1.0 / np.asarray(params.scale))
    linear = head @ lps_to_ras @ np.diag(spacing_xyz) @ perm
    center_idx_xyz = (shape_xyz - 1.0) / 2.0
    offset = np.asarray(params.fov_center_mni) - head @ lps_to_ras @ (spacing_xyz * center_idx_xyz)
    m = np.eye(4)
    m[:3, :3] = linear
    m[:3, 3] = offset
    return m


def mni_to_subject_index(params: SubjectParams, points_mni: np.ndarray) -> np.ndarray:
    """MNI mm points (..., 3) in (x, y, z) -> continuous subject voxel indices (..., 3) in (z, y, x)."""
    inv = np.linalg.inv(subject_index_to_mni(params))
    pts = np.asarray(points_mni, dtype=np.float64)
    return pts @ inv[:3, :3].T + inv[:3, 3]


@dataclass(frozen=True)
class Grid:
    """Regular sampling grid in continuous subject voxel index coordinates, all tuples (z, y, x).

    Element ``g`` of the grid sits at subject index ``origin + step * g``.
    """

    origin: tuple[float, float, float]
    step: tuple[float, float, float]
    shape: tuple[int, int, int]

    def matrix(self) -> np.ndarray:
        """4x4 homogeneous map: grid index (z, y, x) -> subject index (z, y, x)."""
        m = np.diag([*self.step, 1.0])
        m[:3, 3] = self.origin
        return m


def fine_grid(params: SubjectParams, *, subslices: int) -> Grid:
    """Full-FOV grid with ``subslices`` thin slices per thick slab (centred in the slab) and
    in-plane voxels equal to the subject's."""
    nx, ny, nz = params.shape
    z0 = -(subslices - 1) / (2.0 * subslices)
    return Grid(origin=(z0, 0.0, 0.0), step=(1.0 / subslices, 1.0, 1.0), shape=(nz * subslices, ny, nx))


def sample_template(template: TissueTemplate, params: SubjectParams, grid: Grid) -> dict[str, np.ndarray]:
    """Trilinear samples of GM / WM / CSF fractions on ``grid`` (arrays shaped grid.shape, (z, y, x))."""
    to_template = np.linalg.inv(template.affine) @ subject_index_to_mni(params) @ grid.matrix()
    out = {}
    for name in ("gm", "wm", "csf"):
        out[name] = ndimage.affine_transform(
            getattr(template, name), to_template[:3, :3], offset=to_template[:3, 3], output_shape=grid.shape,
            order=1, mode="constant", cval=0.0, prefilter=False, output=np.float32)
    return out


def linear_resize(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Separable linear resize of a (z, y, x) array to ``shape``, treating voxels as cells (the first
    and last cell centres of input and output cover the same extent; edges are clamped).

    Same result as ``ndimage.zoom(..., order=1, grid_mode=True, mode='nearest')`` but several times
    faster, because each axis is a gather of two neighbours and a blend.
    """
    out = np.asarray(array, dtype=np.float32)
    for axis, n_out in enumerate(shape):
        n_in = out.shape[axis]
        if n_in == n_out:
            continue
        pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        pos = np.clip(pos, 0.0, n_in - 1.0)
        i0 = np.floor(pos).astype(np.intp)
        i1 = np.minimum(i0 + 1, n_in - 1)
        w = (pos - i0).astype(np.float32).reshape([n_out if k == axis else 1 for k in range(out.ndim)])
        out = out.take(i0, axis=axis) * (1.0 - w) + out.take(i1, axis=axis) * w
    return out


def slab_average(fine: np.ndarray, subslices: int) -> np.ndarray:
    """Average groups of ``subslices`` consecutive thin slices (axis 0) into thick slices."""
    nz = fine.shape[0] // subslices
    return fine.reshape(nz, subslices, *fine.shape[1:]).mean(axis=1, dtype=np.float32)


def _brain_bbox_in_plane(template: TissueTemplate, params: SubjectParams, margin: int = 3
                         ) -> tuple[int, int, int, int]:
    """Subject in-plane bounding box (y0, y1, x0, x1), half-open, of the transformed template brain."""
    lo, hi = template.brain_bbox_mni
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    idx = mni_to_subject_index(params, corners)
    nx, ny, _ = params.shape
    y0 = max(0, int(math.floor(idx[:, 1].min())) - margin)
    y1 = min(ny, int(math.ceil(idx[:, 1].max())) + margin + 1)
    x0 = max(0, int(math.floor(idx[:, 2].min())) - margin)
    x1 = min(nx, int(math.ceil(idx[:, 2].max())) + margin + 1)
    return y0, max(y0, y1), x0, max(x0, x1)


def render_tissue_fractions(template: TissueTemplate, params: SubjectParams) -> dict[str, np.ndarray]:
    """Thick-slice GM / WM / CSF fractions (z, y, x) with slab partial volume.

    Anatomy is sampled on a grid of TISSUE_SUBSLICES thin slices per slab and ~2 mm in-plane (the
    template resolution; finer sampling only costs time), restricted to the brain's bounding box,
    averaged over each slab and then linearly upsampled in-plane to the subject voxels.
    """
    nx, ny, nz = params.shape
    fy = max(1, int(round(TEMPLATE_RESOLUTION_MM / params.spacing[1])))
    fx = max(1, int(round(TEMPLATE_RESOLUTION_MM / params.spacing[0])))
    y0, y1, x0, x1 = _brain_bbox_in_plane(template, params)
    # Align the box to whole coarse voxels (one coarse voxel covers fy x fx subject voxels).
    y0, x0 = (y0 // fy) * fy, (x0 // fx) * fx
    ncy, ncx = -(-(y1 - y0) // fy), -(-(x1 - x0) // fx)
    sub = TISSUE_SUBSLICES
    grid = Grid(origin=(-(sub - 1) / (2.0 * sub), y0 + (fy - 1) / 2.0, x0 + (fx - 1) / 2.0),
                step=(1.0 / sub, float(fy), float(fx)), shape=(nz * sub, ncy, ncx))
    coarse = sample_template(template, params, grid)
    out = {}
    for name, arr in coarse.items():
        thick = slab_average(arr, sub)
        if fy > 1 or fx > 1:
            # grid_mode: each coarse voxel covers exactly fy x fx subject voxels.
            thick = linear_resize(thick, (nz, ncy * fy, ncx * fx))
        full = np.zeros((nz, ny, nx), dtype=np.float32)
        hy, hx = min(thick.shape[1], ny - y0), min(thick.shape[2], nx - x0)
        full[:, y0:y0 + hy, x0:x0 + hx] = thick[:, :hy, :hx]
        out[name] = full
    return out


# ====================================================================================================
# Contrast
# ====================================================================================================
def tissue_signals(fractions: dict[str, np.ndarray], params: SubjectParams) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free (b0, DWI) in relative units from tissue fractions: partial-volume voxels add the
    compartment signals S0_t and S0_t * exp(-b * ADC_t)."""
    b0 = np.zeros_like(fractions["gm"])
    dwi = np.zeros_like(fractions["gm"])
    for t in ("gm", "wm", "csf"):
        b0 += params.s0[t] * fractions[t]
        dwi += params.s0[t] * math.exp(-params.b_value * params.adc[t]) * fractions[t]
    return b0, dwi


@dataclass
class BlobRender:
    """A blob on the fine grid: ``box`` (z, y, x) slices (z aligned to slabs), mask and core in [0, 1]."""

    box: tuple[slice, slice, slice]
    mask: np.ndarray
    core: np.ndarray
    gm: np.ndarray
    wm: np.ndarray


def _smooth_noise(shape: tuple[int, int, int], sigma_vox: Sequence[float], rng: np.random.Generator
                  ) -> np.ndarray:
    """Unit-sd Gaussian random field on ``shape`` (z, y, x) with correlation length ``sigma_vox``.

    Generated on a grid ~sigma/2 coarser and upsampled linearly: same look, far cheaper for big blobs.
    """
    down = [max(1, int(s // 2)) for s in sigma_vox]
    coarse_shape = tuple(max(2, -(-n // d) + 1) for n, d in zip(shape, down))
    noise = rng.standard_normal(coarse_shape, dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, [s / d for s, d in zip(sigma_vox, down)], mode="wrap", truncate=3.0)
    noise = linear_resize(noise, shape)
    return (noise - noise.mean()) / (noise.std() + 1e-6)


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


# ====================================================================================================
# Acquisition effects
# ====================================================================================================
def _normalised_axes(shape_zyx: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable coordinates in [-1, 1] along z, y, x."""
    return tuple(np.linspace(-1.0, 1.0, n, dtype=np.float32).reshape(
        [n if i == k else 1 for i in range(3)]) for k, n in enumerate(shape_zyx))


def bias_field(params: SubjectParams, shape_zyx: Sequence[int]) -> np.ndarray:
    """Smooth multiplicative receive-coil bias: exp(quadratic polynomial), (z, y, x) float32."""
    z, y, x = _normalised_axes(shape_zyx)
    terms = (x, y, z, x * x - 1 / 3, y * y - 1 / 3, z * z - 1 / 3, x * y, x * z, y * z)
    log_field = np.zeros(tuple(shape_zyx), dtype=np.float32)
    for c, t in zip(params.bias_coeffs, terms):
        log_field += np.float32(c) * t
    return np.exp(log_field)


def texture_field(params: SubjectParams, shape_zyx: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative tissue texture (1 + sd * field), ~TEXTURE_SCALE_MM in-plane correlation.

    The MNI template is a 152-subject average and therefore unrealistically smooth.
    """
    sigma_y = TEXTURE_SCALE_MM / params.spacing[1]
    sigma_x = TEXTURE_SCALE_MM / params.spacing[0]
    noise = _smooth_noise(tuple(shape_zyx), (0.5, max(sigma_y, 1.0), max(sigma_x, 1.0)), rng)
    return (1.0 + params.texture_std * noise).astype(np.float32)


def _gaussian_blob(shape_zyx: Sequence[int], center_zyx: Sequence[float], sigma_zyx: Sequence[float]
                   ) -> np.ndarray:
    """Separable (z, y, x) Gaussian with peak 1."""
    axes = [np.exp(-0.5 * ((np.arange(n, dtype=np.float32) - c) / s) ** 2)
            for n, c, s in zip(shape_zyx, center_zyx, sigma_zyx)]
    return axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]


def susceptibility_field(params: SubjectParams, shape_zyx: Sequence[int]) -> np.ndarray:
    """Multiplicative EPI susceptibility distortion near the skull base (z, y, x): signal drop-out at
    the source and pile-up displaced along phase-encode (y).  Same for b0 and DWI (same readout)."""
    field = np.ones(tuple(shape_zyx), dtype=np.float32)
    for art in params.susceptibility:
        c = mni_to_subject_index(params, np.asarray(art.center_mni)[None])[0]
        sig = (art.sigma_mm[2] / params.spacing[2], art.sigma_mm[1] / params.spacing[1],
               art.sigma_mm[0] / params.spacing[0])
        field *= 1.0 - art.drop * _gaussian_blob(shape_zyx, c, sig)
        shifted = (c[0], c[1] + art.shift_mm / params.spacing[1], c[2])
        field *= 1.0 + art.pileup * _gaussian_blob(shape_zyx, shifted, sig)
    return field


def add_nyquist_ghost(image: np.ndarray, amplitude: float) -> np.ndarray:
    """N/2 ghost: the image shifted by half the FOV along phase-encode (y, axis 1) at ``amplitude``."""
    if amplitude <= 0:
        return image
    return image + np.float32(amplitude) * np.roll(image, image.shape[1] // 2, axis=1)


def add_rician_noise(image: np.ndarray, sigma: float, rng: np.random.Generator, mask: np.ndarray
                     ) -> np.ndarray:
    """Magnitude of (image + complex Gaussian noise of sd ``sigma``), computed inside ``mask`` only
    (the rest is discarded by skull stripping)."""
    out = np.zeros_like(image)
    n = int(mask.sum())
    re = image[mask] + np.float32(sigma) * rng.standard_normal(n, dtype=np.float32)
    im = np.float32(sigma) * rng.standard_normal(n, dtype=np.float32)
    out[mask] = np.sqrt(re * re + im * im)
    return out


def skull_strip(image: np.ndarray, brain_mask: np.ndarray, floor: float) -> np.ndarray:
    """Zero outside the brain mask, and at least ``floor`` (> 0) inside it."""
    return np.where(brain_mask, np.maximum(image, np.float32(floor)), np.float32(0.0)).astype(np.float32)


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


# ====================================================================================================
# Subject rendering
# ====================================================================================================
#: ``background`` values: skull-stripped (zero outside the brain, the paper's network inputs) or raw
#: magnitude images whose background is Rician noise (as unstripped DWI: nnU-Net's crop to non-zero then
#: keeps the whole field of view)
BACKGROUNDS = ("skull-stripped", "noisy")


def render_subject(params: SubjectParams, template: TissueTemplate | None = None,
                   background: str = "skull-stripped") -> RenderedSubject:
    """Render one subject from its parameters (deterministic).  Arrays (z, y, x).

    background: ``"skull-stripped"`` (default) or ``"noisy"``: no stripping, Rician noise of the same
    sigma over the whole field of view (pure Rayleigh noise outside the head)."""
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    template = template or load_tissue_template()
    nx, ny, nz = params.shape
    shape_zyx = (nz, ny, nx)
    fractions = render_tissue_fractions(template, params)
    b0, dwi = tissue_signals(fractions, params)
    brain_mask = (fractions["gm"] + fractions["wm"] + fractions["csf"]) >= BRAIN_MASK_MIN_FRACTION

    # Focal signal changes on a thin-slice grid so that labels and signals get slab partial volume.
    sub = LESION_SUBSLICES
    grid = fine_grid(params, subslices=sub)
    fine_kind = np.zeros(grid.shape, dtype=np.uint8)  # 0 free, 1 acute lesion, 2 confounder
    lesion_volumes = []
    voxel_ml = params.spacing[0] * params.spacing[1] * params.spacing[2] / sub / 1000.0
    for kind_code, blobs in ((1, params.lesions), (2, params.confounders)):
        for blob in blobs:
            render = render_blob(blob=blob, params=params, template=template, grid=grid, occupied=fine_kind)
            if render is None:
                if kind_code == 1:
                    lesion_volumes.append(0.0)
                continue
            fine_kind[render.box][render.mask] = kind_code
            d_b0, d_dwi = blob_signal_change(render, blob, params)
            add_slab_averaged(b0, d_b0, render.box, sub)
            add_slab_averaged(dwi, d_dwi, render.box, sub)
            if kind_code == 1:
                lesion_volumes.append(float(render.mask.sum()) * voxel_ml)
    label = label_from_fine(fine_kind == 1, brain_mask, sub)

    # Acquisition: texture, bias and susceptibility multiply both channels (same coil and readout).
    rng = np.random.default_rng(params.noise_seed)
    common = texture_field(params, shape_zyx, rng) * bias_field(params, shape_zyx)
    if params.susceptibility:
        common *= susceptibility_field(params, shape_zyx)
    b0 *= common * np.float32(params.gain)
    dwi *= common * np.float32(params.gain * params.dwi_scale)
    b0 = add_nyquist_ghost(b0, params.ghost_amplitude)
    dwi = add_nyquist_ghost(dwi, params.ghost_amplitude)
    sigma_b0 = params.gain * params.s0["wm"] / params.snr_b0
    noise_mask = brain_mask if background == "skull-stripped" else np.ones_like(brain_mask)
    b0 = add_rician_noise(b0, sigma_b0, rng, noise_mask)
    dwi = add_rician_noise(dwi, sigma_b0 * DWI_NOISE_RELATIVE * params.dwi_scale, rng, noise_mask)
    floor = 1e-3 * params.gain
    voxel_thick_ml = params.spacing[0] * params.spacing[1] * params.spacing[2] / 1000.0
    if background == "skull-stripped":
        dwi, b0 = skull_strip(dwi, brain_mask, floor), skull_strip(b0, brain_mask, floor)
    return RenderedSubject(dwi=dwi.astype(np.float32), b0=b0.astype(np.float32),
                           label=label, brain_mask=brain_mask, lesion_volumes_ml=lesion_volumes,
                           label_volume_ml=float(label.sum()) * voxel_thick_ml)


# ====================================================================================================
# Writing
# ====================================================================================================
def write_nifti(array_zyx: np.ndarray, path: Path, spacing: Sequence[float]) -> None:
    """Write a (z, y, x) array as compressed NIfTI with ``spacing`` (x, y, z) mm, identity direction
    (LPS) and the origin at the FOV centre."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array_zyx)
    img.SetSpacing(tuple(float(s) for s in spacing))
    size_xyz = array_zyx.shape[::-1]
    img.SetOrigin(tuple(-(n - 1) / 2.0 * float(s) for n, s in zip(size_xyz, spacing)))
    sitk.WriteImage(img, str(path), useCompression=True)


def _role_folders(role: int) -> tuple[str, str | None]:
    """(images folder, labels folder or None) of a role inside the dataset folder."""
    return {ROLE_TRAIN: ("imagesTr", "labelsTr"), ROLE_TEST: ("imagesTs", "labelsTs"),
            ROLE_UNLABELED: ("imagesUnlabeled", None)}[role]


@dataclass(frozen=True)
class CaseJob:
    """What a worker needs to make one case."""

    dataset_dir: str
    seed: int
    subject_index: int
    role: int
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    background: str = "skull-stripped"


def generate_case(job: CaseJob) -> dict:
    """Draw, render and write one case; returns a JSON-able summary (parameters and volumes)."""
    params = draw_subject_params(seed=job.seed, subject_index=job.subject_index, role=job.role,
                                 shape=job.shape, spacing=job.spacing)
    rendered = render_subject(params, background=job.background)
    images_dir, labels_dir = _role_folders(job.role)
    root = Path(job.dataset_dir)
    write_nifti(rendered.dwi, root / images_dir / f"{params.case_id}_0000{FILE_ENDING}", job.spacing)
    write_nifti(rendered.b0, root / images_dir / f"{params.case_id}_0001{FILE_ENDING}", job.spacing)
    if labels_dir is not None:
        write_nifti(rendered.label, root / labels_dir / f"{params.case_id}{FILE_ENDING}", job.spacing)
    return {"case_id": params.case_id, "role": ROLE_NAMES[job.role], "labelled": labels_dir is not None,
            "label_volume_ml": round(rendered.label_volume_ml, 3),
            "lesion_volumes_ml": [round(v, 3) for v in rendered.lesion_volumes_ml],
            "params": asdict(params)}


# ====================================================================================================
# Montage
# ====================================================================================================
def _lesion_slice(label: np.ndarray, dwi: np.ndarray) -> int:
    """Slice with the largest labelled area, else the slice with the most brain."""
    area = label.reshape(label.shape[0], -1).sum(1)
    if area.max() > 0:
        return int(area.argmax())
    return int((dwi > 0).reshape(dwi.shape[0], -1).sum(1).argmax())


def write_montage(dataset_dir: Path, path: Path, max_subjects: int = 4) -> None:
    """PNG montage of a few annotated training subjects: DWI, b0, ADC (from the two channels) and DWI
    with the label outline, on the slice with the largest lesion area.

    Display is radiological (patient left on the image right, anterior at the top), matching the
    LPS array axes: rows = y (anterior first), columns = x (right to left of the patient).
    """
    import SimpleITK as sitk
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cases = []
    for images_dir, labels_dir in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs"), ("imagesUnlabeled", None)):
        for f in sorted((dataset_dir / images_dir).glob(f"*_0000{FILE_ENDING}")):
            if len(cases) < max_subjects:
                cases.append((f.name[:-len(f"_0000{FILE_ENDING}")], dataset_dir / images_dir, labels_dir))
    if not cases:
        return
    fig = Figure(figsize=(12, 3.1 * len(cases)), dpi=90, facecolor="black")
    FigureCanvasAgg(fig)
    for row, (case, images_dir, labels_dir) in enumerate(cases):
        dwi = sitk.GetArrayFromImage(sitk.ReadImage(str(images_dir / f"{case}_0000{FILE_ENDING}")))
        b0 = sitk.GetArrayFromImage(sitk.ReadImage(str(images_dir / f"{case}_0001{FILE_ENDING}")))
        label = np.zeros(dwi.shape, np.uint8)
        if labels_dir is not None:
            label = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset_dir / labels_dir / f"{case}{FILE_ENDING}")))
        z = _lesion_slice(label, dwi)
        brain = dwi[z] > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            adc = np.where(brain, np.log(np.maximum(b0[z], 1e-6) / np.maximum(dwi[z], 1e-6)) / B_VALUE, 0.0)
        vol_ml = float(label.sum()) * np.prod(sitk.ReadImage(str(images_dir / f"{case}_0000{FILE_ENDING}")
                                                             ).GetSpacing()) / 1000.0
        panels = [(dwi[z], "DWI b=1000", np.percentile(dwi[dwi > 0], 99.5)),
                  (b0[z], "b0", np.percentile(b0[b0 > 0], 99.5)),
                  (adc * 1e3, "ADC (10^-3 mm2/s)", 3.0),
                  (dwi[z], f"DWI + label ({vol_ml:.1f} mL)" if labels_dir else "DWI (unlabelled)",
                   np.percentile(dwi[dwi > 0], 99.5))]
        for col, (img, title, vmax) in enumerate(panels):
            ax = fig.add_subplot(len(cases), 4, row * 4 + col + 1)
            ax.imshow(img, cmap="gray", vmin=0.0, vmax=float(vmax), interpolation="nearest")
            if col == 3 and label[z].any():
                ax.contour(label[z], levels=[0.5], colors="red", linewidths=0.8)
            ax.set_title(f"{case} z={z}: {title}" if col == 0 else title, color="white", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(str(path), facecolor="black")


# ====================================================================================================
# Dataset generation
# ====================================================================================================
def dataset_folder_name(dataset_id: int) -> str:
    """nnU-Net dataset folder name, e.g. Dataset990_SyntheticStrokeDWI."""
    return f"Dataset{dataset_id:03d}_{DATASET_NAME}"


def _check_target(raw_root: Path, dataset_id: int, overwrite: bool) -> Path:
    """Target folder; refuse an existing one (unless overwrite) and a different dataset with the same id."""
    target = raw_root / dataset_folder_name(dataset_id)
    if target.exists() and not overwrite:
        raise FileExistsError(f"Dataset folder {target} already exists; pass overwrite=True "
                              f"(CLI: --overwrite) to replace it.")
    if raw_root.is_dir():
        clashes = [p.name for p in raw_root.iterdir()
                   if p.is_dir() and p.name.startswith(f"Dataset{dataset_id:03d}_") and p != target]
        if clashes:
            raise FileExistsError(f"{raw_root} already holds dataset id {dataset_id} as {clashes}; nnU-Net "
                                  f"could not tell them apart. Choose another dataset id.")
    return target


def _run_jobs(jobs: list[CaseJob], num_workers: int, log_every: int) -> list[dict]:
    """Run case jobs serially or in a spawn-based process pool, printing one progress line per
    ``log_every`` cases.  Results are sorted by role, then index (independent of completion order)."""
    results = []
    start = time.time()

    def progress(done: int) -> None:
        if done % log_every == 0 or done == len(jobs):
            el = time.time() - start
            print(f"[synthetic_stroke_dwi] {done}/{len(jobs)} subjects, {el:.1f} s "
                  f"({el / max(done, 1):.2f} s/subject)", flush=True)

    if num_workers <= 1:
        for job in jobs:
            results.append(generate_case(job))
            progress(len(results))
    else:
        # spawn: safe even when the caller holds threads (torch, BLAS); the template is shipped to the
        # workers once so they need not import nilearn.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=num_workers, mp_context=ctx, initializer=_set_template,
                                 initargs=(load_tissue_template(),)) as pool:
            for fut in as_completed([pool.submit(generate_case, job) for job in jobs]):
                results.append(fut.result())
                progress(len(results))
    order = {n: i for i, n in ROLE_NAMES.items()}
    return sorted(results, key=lambda r: (order[r["role"]], r["case_id"]))


def generate_synthetic_stroke_dwi(raw_root: str | Path, dataset_id: int = DEFAULT_DATASET_ID, num_train: int = 20,
                                  num_test: int = 30, num_unlabeled: int = 196,
                                  shape: tuple[int, int, int] = (240, 240, 21),
                                  spacing: tuple[float, float, float] = (0.96, 0.96, 6.5), seed: int = 0,
                                  num_workers: int = 1, montage: bool = True, overwrite: bool = False,
                                  background: str = "skull-stripped") -> Path:
    """Write the synthetic stroke DWI cohort as ``raw_root/Dataset{id:03d}_SyntheticStrokeDWI``.

    shape: voxels (x, y, z); spacing: mm (x, y, z).  Defaults mirror the paper: 20 annotated training
    + 30 annotated test + 196 unannotated scans of 240 x 240 x 21 at 0.96 x 0.96 x 6.5 mm.
    Files: imagesTr/labelsTr, imagesTs/labelsTs, imagesUnlabeled (lesions but no labels),
    dataset.json, synthetic_cases.json (per-case parameters and lesion volumes) and montage.png.
    background: ``"skull-stripped"`` (the paper's inputs) or ``"noisy"`` (unstripped, Rician-noise
    background; see ``render_subject``).
    The dataset is built in a hidden temporary sibling folder and renamed into place at the end, so an
    interrupted run leaves no partial dataset.  Returns the dataset folder.
    """
    if not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"dataset_id must be in 1..999, got {dataset_id}")
    if min(num_train, num_test, num_unlabeled) < 0 or num_train + num_test + num_unlabeled == 0:
        raise ValueError("case counts must be >= 0 and not all zero")
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or min(shape) < 1 or len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"shape and spacing need 3 positive values (x, y, z), got {shape}, {spacing}")
    if int(seed) < 0:
        raise ValueError("seed must be >= 0")
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    raw_root = Path(raw_root).expanduser().resolve()
    target = _check_target(raw_root, int(dataset_id), overwrite)
    raw_root.mkdir(parents=True, exist_ok=True)
    tmp = raw_root / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        for role in (ROLE_TRAIN, ROLE_TEST, ROLE_UNLABELED):
            for folder in _role_folders(role):
                if folder is not None:
                    (tmp / folder).mkdir(parents=True, exist_ok=True)
        jobs = [CaseJob(dataset_dir=str(tmp), seed=int(seed), subject_index=i, role=role, shape=shape,
                        spacing=spacing, background=background)
                for role, n in ((ROLE_TRAIN, num_train), (ROLE_TEST, num_test), (ROLE_UNLABELED, num_unlabeled))
                for i in range(1, n + 1)]
        print(f"[synthetic_stroke_dwi] writing {len(jobs)} subjects ({num_train} train, {num_test} test, "
              f"{num_unlabeled} unlabeled), shape {shape}, spacing {spacing}, seed {seed} -> {target}",
              flush=True)
        load_tissue_template()
        summaries = _run_jobs(jobs, max(1, int(num_workers)), log_every=max(1, min(10, len(jobs) // 10 or 1)))
        generator_args = {"module": __name__, "version": GENERATOR_VERSION, "seed": int(seed),
                          "dataset_id": int(dataset_id), "num_train": int(num_train), "num_test": int(num_test),
                          "num_unlabeled": int(num_unlabeled), "shape_xyz": list(shape),
                          "spacing_xyz_mm": list(spacing), "background": background, "b_value": B_VALUE,
                          "rng": "numpy.random.default_rng([seed, subject_index, role]), role 0 train / "
                                 "1 test / 2 unlabeled, subject_index 1-based",
                          "anatomy": "MNI152 2009a GM/WM/brain mask bundled with nilearn",
                          "unlabeled_folder": "imagesUnlabeled"}
        from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

        generate_dataset_json(
            str(tmp), channel_names=dict(CHANNEL_NAMES), labels=dict(LABELS), num_training_cases=int(num_train),
            file_ending=FILE_ENDING, dataset_name=target.name, reference=PAPER_REFERENCE,
            description=("Synthetic acute ischemic stroke DWI (b=1000 s/mm2) + b0, "
                         + ("skull-stripped" if background == "skull-stripped" else
                            "not skull-stripped (Rician-noise background)") + ", imitating "
                         "Cui et al. 2019 (240x240x21, 0.96x0.96x6.5 mm). Anatomy from MNI152 with random "
                         "affine; acute lesions (reduced ADC) in vascular territories are labelled; T2 "
                         "shine-through, susceptibility, N/2 ghost, bias field and Rician noise are not. "
                         "imagesUnlabeled holds unannotated scans (with lesions), imagesTs/labelsTs the "
                         "annotated test scans."),
            license="Synthetic data; anatomy from the MNI ICBM152 2009a template (see nilearn)",
            converted_by="nnunet_mt.dataset_conversion.synthetic_stroke_dwi",
            numTest=int(num_test), numUnlabeled=int(num_unlabeled), synthetic_generator=generator_args)
        with open(tmp / "synthetic_cases.json", "w") as f:
            json.dump({"synthetic_generator": generator_args, "cases": summaries}, f, indent=1)
        if montage:
            write_montage(tmp, tmp / "montage.png")
        old = None
        if target.exists():  # overwrite=True (checked above): swap, then delete the old one
            old = raw_root / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"[synthetic_stroke_dwi] done: {target}", flush=True)
    return target


def main(argv: Sequence[str] | None = None) -> None:
    """CLI (console script ``nnunet_mt_synthetic``)."""
    parser = argparse.ArgumentParser(
        prog="nnunet_mt_synthetic",
        description="Write the synthetic acute-stroke DWI cohort (DWI b=1000 + b0) as an nnU-Net v2 raw dataset.")
    parser.add_argument("-d", "--dataset-id", type=int, default=DEFAULT_DATASET_ID,
                        help=f"nnU-Net dataset id (default {DEFAULT_DATASET_ID})")
    parser.add_argument("--num-train", type=int, default=20, help="annotated training scans (imagesTr)")
    parser.add_argument("--num-test", type=int, default=30, help="annotated test scans (imagesTs/labelsTs)")
    parser.add_argument("--num-unlabeled", type=int, default=196, help="unannotated scans (imagesUnlabeled)")
    parser.add_argument("--shape", type=int, nargs=3, default=(240, 240, 21), metavar=("X", "Y", "Z"),
                        help="voxels (default 240 240 21)")
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.96, 0.96, 6.5), metavar=("X", "Y", "Z"),
                        help="mm (default 0.96 0.96 6.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--background", choices=BACKGROUNDS, default="skull-stripped",
                        help="skull-stripped (default; zero outside the brain, the paper's inputs) or noisy "
                             "(unstripped: Rician noise over the whole field of view, as raw DWI)")
    parser.add_argument("--num-workers", type=int, default=1, help="worker processes")
    parser.add_argument("--no-montage", action="store_true", help="skip montage.png")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    parser.add_argument("--raw-root", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    args = parser.parse_args(argv)
    raw_root = args.raw_root or os.environ.get("nnUNet_raw")
    if not raw_root:
        parser.error("no output folder: pass --raw-root or set the environment variable nnUNet_raw")
    try:
        generate_synthetic_stroke_dwi(raw_root, dataset_id=args.dataset_id, num_train=args.num_train,
                                      num_test=args.num_test, num_unlabeled=args.num_unlabeled,
                                      shape=tuple(args.shape), spacing=tuple(args.spacing), seed=args.seed,
                                      num_workers=args.num_workers, montage=not args.no_montage,
                                      overwrite=args.overwrite, background=args.background)
    except (FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()

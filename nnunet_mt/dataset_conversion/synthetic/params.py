"""What a synthetic subject is: the dataset's identity and every random parameter of one subject.

Rendering (:mod:`.subject`) is a deterministic function of a :class:`SubjectParams`, so a subject can be replayed
from its parameters and the files do not depend on the number of worker processes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

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

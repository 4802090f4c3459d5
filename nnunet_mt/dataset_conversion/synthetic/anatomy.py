"""Anatomy: the MNI152 tissue template, the subject's head pose and voxel grid, and healthy tissue contrast.

The MNI152 2009a GM / WM probability maps and brain mask bundled with nilearn (no download) give tissue
fractions; CSF = brain - GM - WM. The template is resampled through a small random affine (rotation, scaling,
translation) into the subject grid on a fine grid (thin sub-slices) and then averaged over each 6.5 mm slab, which
gives thick-slice partial volume. b0 is T2-like (CSF bright, GM > WM); DWI follows ``S = S0 * exp(-b * ADC)`` per
tissue, and partial-volume voxels mix the tissue signals (signals, not ADCs, add).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from .params import SubjectParams

TISSUE_SUBSLICES = 3  # sub-slices for anatomy: the template is 2 mm, finer sampling adds nothing
TEMPLATE_RESOLUTION_MM = 2.0  # nilearn's bundled MNI152 maps; anatomy is sampled in-plane at ~this
FOV_CENTER_MNI_Y = -17.0  # mm; the MNI brain spans y = -104..70, centre the in-plane FOV on it
SLAB_CENTER_MNI_Z = (4.0, 16.0)  # mm, range of the slab centre; 21 x 6.5 = 136.5 mm covers ~ -58..+82
ROTATION_MAX_DEG = 8.0  # per axis, uniform: head positioning
SCALE_MAX = 0.08  # global head size +-8 %, plus +-3 % per axis
SCALE_AXIS_JITTER = 0.03
TRANSLATION_MAX_MM = 5.0  # per axis
S0_MEAN = {"wm": 1.0, "gm": 1.25, "csf": 2.6}  # T2-weighted EPI b0: CSF >> GM > WM
ADC_MEAN = {"wm": 0.70e-3, "gm": 0.83e-3, "csf": 3.0e-3}  # mm^2/s, healthy adult brain
TISSUE_JITTER = 0.06  # relative sd of per-subject S0 and ADC values
BRAIN_MASK_MIN_FRACTION = 0.5  # skull-strip mask: slab-averaged brain fraction >= this


@dataclass(frozen=True)
class TissueTemplate:
    """MNI152 tissue fractions, arrays indexed like the NIfTI (i, j, k) = (x, y, z), 2 mm voxels."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    affine: np.ndarray  # voxel index -> MNI mm
    brain_bbox_mni: np.ndarray  # (2, 3) min / max corner of the brain in MNI mm


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


def tissue_signals(fractions: dict[str, np.ndarray], params: SubjectParams) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free (b0, DWI) in relative units from tissue fractions: partial-volume voxels add the
    compartment signals S0_t and S0_t * exp(-b * ADC_t)."""
    b0 = np.zeros_like(fractions["gm"])
    dwi = np.zeros_like(fractions["gm"])
    for t in ("gm", "wm", "csf"):
        b0 += params.s0[t] * fractions[t]
        dwi += params.s0[t] * math.exp(-params.b_value * params.adc[t]) * fractions[t]
    return b0, dwi


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

"""One subject: draw all its random parameters, then render it from anatomy, lesions and acquisition."""
from __future__ import annotations

import math

import numpy as np

from .params import RenderedSubject, SubjectParams, _uniform, case_identifier
from .anatomy import (ADC_MEAN, BRAIN_MASK_MIN_FRACTION, FOV_CENTER_MNI_Y, ROTATION_MAX_DEG, S0_MEAN,
                      SCALE_AXIS_JITTER, SCALE_MAX, SLAB_CENTER_MNI_Z, TISSUE_JITTER, TRANSLATION_MAX_MM,
                      TissueTemplate, fine_grid, load_tissue_template, render_tissue_fractions, tissue_signals)
from .lesions import (LESION_SUBSLICES, add_slab_averaged, blob_signal_change, draw_acute_lesions, draw_confounders,
                      label_from_fine, render_blob)
from .acquisition import (BACKGROUNDS, BIAS_COEFF_STD, B_VALUE, DWI_NOISE_RELATIVE, DWI_SCALE_RANGE, GAIN_LOG_MEAN,
                          GAIN_LOG_SD, GHOST_AMPLITUDE, P_GHOST, P_LOW_SNR, SNR_B0_LOW, SNR_B0_NORMAL, TEXTURE_STD,
                          add_nyquist_ghost, add_rician_noise, bias_field, draw_susceptibility, skull_strip,
                          susceptibility_field, texture_field)


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

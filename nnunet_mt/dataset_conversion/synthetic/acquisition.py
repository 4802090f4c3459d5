"""Acquisition: what the scanner adds to the noise-free subject.

Susceptibility drop-out / pile-up near the skull base, N/2 ghost, smooth bias field and tissue texture, gain,
Rician noise (some subjects with low SNR), and skull stripping (zero outside the brain mask, > 0 inside), or a
noisy background as in raw DWI.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .params import SubjectParams, SusceptibilityParams, _uniform
from .anatomy import _smooth_noise, mni_to_subject_index

B_VALUE = 1000.0  # s/mm^2 (paper)
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

# Skull-base susceptibility sources (RAS mm): orbitofrontal (frontal sinus) and temporal base (mastoid).
SUSCEPTIBILITY_SITES = {
    "orbitofrontal": {"x": (-8.0, 8.0), "y": (30.0, 45.0), "z": (-25.0, -15.0)},
    "temporal_base": {"x": (35.0, 50.0), "y": (-25.0, 5.0), "z": (-38.0, -25.0)},
}


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


#: ``background`` values: skull-stripped (zero outside the brain, the paper's network inputs) or raw
#: magnitude images whose background is Rician noise (as unstripped DWI: nnU-Net's crop to non-zero then
#: keeps the whole field of view)
BACKGROUNDS = ("skull-stripped", "noisy")

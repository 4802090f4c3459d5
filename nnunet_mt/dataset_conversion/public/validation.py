"""Checking a discovered case before anything is written: every problem, each naming its file.

On top of :mod:`nnunet_mt.dataset_conversion.image_checks` (the messages of every converter), for what the
releases have and a plain folder has not: 4-D files holding several channels (MSD) and channels resampled onto the
case's grid (ISLES' FLAIR).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunet_mt.dataset_conversion.convert_folder import validate_label
from nnunet_mt.dataset_conversion.image_checks import (Geometry, check_finite, check_same_geometry, read_geometry,
                                                       read_voxels)
from nnunet_mt.dataset_conversion.public.cases import SourceCase


def spatial_geometry(geometry: Geometry) -> Geometry:
    """The first three axes of a 4-D geometry (as nnU-Net's own MSD conversion splits it)."""
    n = len(geometry.size)
    direction = np.asarray(geometry.direction).reshape(n, n)[:3, :3].reshape(-1)
    return Geometry(size=geometry.size[:3], spacing=geometry.spacing[:3], origin=geometry.origin[:3],
                    direction=tuple(float(v) for v in direction))


# not convert_folder.validate_case: a release's case may take channels from one 4-D file (MSD) or resample one (ISLES)
def validate_case(case: SourceCase, allowed_label_values: set[int]) -> list[str]:
    """Every problem of one case, each naming its file: unreadable, non-finite, wrong dimension or number of
    volumes, a channel or the label off the first channel's grid, label values outside the release's set."""
    problems: list[str] = []
    geometries: dict[Path, Geometry] = {}
    volumes_used: dict[Path, list[int]] = {}
    for channel in case.channels:
        if channel.volume is not None:
            volumes_used.setdefault(channel.path, []).append(channel.volume)
    for path in dict.fromkeys(channel.path for channel in case.channels):
        geometry = read_geometry(path=path, problems=problems)
        if geometry is None:
            continue
        voxels = read_voxels(path=path, problems=problems)
        if voxels is None:
            continue
        check_finite(voxels=voxels, path=path, problems=problems)
        expected_dim = 4 if path in volumes_used else 3
        if len(geometry.size) != expected_dim:
            problems.append(f"{path}: expected a {expected_dim}-D image, found {len(geometry.size)}-D of size "
                            f"{geometry.size}")
            continue
        if expected_dim == 4:
            if geometry.size[3] != len(volumes_used[path]):
                problems.append(f"{path}: expected {len(volumes_used[path])} volumes (channels) along the 4th "
                                f"axis, found {geometry.size[3]}")
                continue
            geometry = spatial_geometry(geometry)
        geometries[path] = geometry
    reference_path = case.channels[0].path if case.channels else None
    reference = geometries.get(reference_path) if reference_path is not None else None
    if reference is not None:
        for channel in case.channels[1:]:
            other = geometries.get(channel.path)
            if other is None or channel.resample or channel.path == reference_path:
                continue
            check_same_geometry(reference=reference, reference_path=reference_path, other=other,
                                other_path=channel.path, problems=problems)
    if case.label is not None:
        validate_label(path=case.label, reference=reference, reference_path=reference_path,
                       allowed=allowed_label_values, problems=problems)
    return problems

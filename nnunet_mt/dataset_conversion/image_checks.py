"""Reading one image file and checking what nnU-Net would trip over, each problem naming its file.

Shared by every converter (``convert_folder``, the public releases in ``public/``) and by the unannotated
preprocessing, so that all of them accept the same files and say the same thing about the others. Each check
appends its problems (one line each) to a list instead of raising, so that all problems are reported together.
"""
from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import SimpleITK as sitk

SPACING_RTOL = 1e-4
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4

_MAX_LISTED_VALUES = 10  # keep messages readable when a label map is full of garbage


@dataclass(frozen=True)
class Geometry:
    """The voxel grid of one file, as SimpleITK (and therefore nnU-Net) sees it."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    components: int = 1  # values per voxel: >1 for a vector image, which nnU-Net reads as 4-D


def one_line(text: str) -> str:
    """Reader errors span several lines; collapse them so each problem stays one list item."""
    return " ".join(str(text).split())


def read_geometry(*, path: Path, problems: list[str]) -> Geometry | None:
    """Header-only SimpleITK read (the reader nnU-Net uses); a failure becomes a problem with SimpleITK's reason."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        problems.append(f"{path}: unreadable or corrupt file (SimpleITK: {one_line(str(error))})")
        return None
    return Geometry(size=tuple(reader.GetSize()), spacing=tuple(reader.GetSpacing()),
                    origin=tuple(reader.GetOrigin()), direction=tuple(reader.GetDirection()),
                    components=int(reader.GetNumberOfComponents()))


def check_3d(*, geometry: Geometry, path: Path, problems: list[str], role: str = "image") -> bool:
    """One 3-D scalar volume per file. nnU-Net would read a 2-D file as one slice of ~1000x its largest spacing,
    and a 4-D or vector file as several channels, so both would reach training silently wrong or fail late.

    Dimensionality as SimpleITK (nnU-Net's reader) sees it: a 4-D NIfTI with one volume counts as 3-D."""
    if len(geometry.size) != 3:
        problems.append(f"{path}: expected a 3-D {role}, found a {len(geometry.size)}-D {role} of size "
                        f"{geometry.size}; give one 3-D volume per file")
        return False
    if geometry.components != 1:
        problems.append(f"{path}: expected a 3-D {role} with one value per voxel, found {geometry.components} "
                        f"values per voxel (a vector image); give one 3-D volume per file")
        return False
    return True


def read_voxels(*, path: Path, problems: list[str]) -> np.ndarray | None:
    """Voxel values exactly as stored (scaled by the NIfTI slope/intercept), or None and a problem; for a ``.gz``
    file its compressed stream is also read to the end.

    Deliberately not SimpleITK: its NIfTI reader silently turns NaN/Inf into 0 and zero-fills truncated
    files, which would hide exactly the corruption we must report. nibabel returns the stored values and
    refuses short files, but stops reading once it has the voxels, so a download cut off inside the gzip trailer
    (its CRC and size) reads without complaint: reading to the end checks both.
    """
    try:
        voxels = np.asanyarray(nib.load(str(path), mmap=False).dataobj)
    except Exception as error:  # nibabel raises many types (OSError, EOFError, zlib.error, ImageFileError...)
        problems.append(f"{path}: unreadable or corrupt file (nibabel: {one_line(str(error))})")
        return None
    if path.name.lower().endswith(".gz"):
        try:
            with gzip.open(path, "rb") as stream:
                while stream.read(1 << 24):
                    pass
        except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile (a CRC or size mismatch) is an OSError
            problems.append(f"{path}: truncated or corrupt gzip file ({error}); download it again")
            return None
    return voxels


def check_finite(*, voxels: np.ndarray, path: Path, problems: list[str]) -> bool:
    """NaN/Inf would poison nnU-Net's intensity statistics (and SimpleITK would silently zero them)."""
    if not np.issubdtype(voxels.dtype, np.floating):
        return True  # integer voxels cannot hold NaN/Inf
    n_nan = int(np.count_nonzero(np.isnan(voxels)))
    n_inf = int(np.count_nonzero(np.isinf(voxels)))
    if n_nan or n_inf:
        problems.append(f"{path}: {n_nan + n_inf} non-finite voxel(s) ({n_nan} NaN, {n_inf} Inf)")
        return False
    return True


def _format_values(values: np.ndarray) -> str:
    """First few values as plain Python numbers, with a count of the rest."""
    shown = [v.item() for v in values[:_MAX_LISTED_VALUES]]
    rest = len(values) - len(shown)
    return f"{shown}" + (f" and {rest} more" if rest > 0 else "")


def check_label_values(*, voxels: np.ndarray, path: Path, allowed: set[int], problems: list[str]) -> None:
    """Label voxels must be whole numbers from the dataset's label definition."""
    if np.issubdtype(voxels.dtype, np.floating):
        non_integer = voxels != np.round(voxels)
        count = int(np.count_nonzero(non_integer))
        if count:
            examples = np.unique(voxels[non_integer])
            problems.append(f"{path}: {count} voxel(s) with non-integer label values {_format_values(examples)}")
            return  # membership of fractional values in the label set is meaningless
    values = np.unique(voxels)
    unexpected = np.array([v for v in values if v not in allowed])
    if unexpected.size:
        problems.append(f"{path}: label values {_format_values(unexpected)} are not in the dataset labels "
                        f"(allowed: {sorted(allowed)})")


def plain_floats(values: Sequence[float]) -> tuple[float, ...]:
    """Geometry as short floats: NIfTI stores float32, so '0.9' comes back as 0.8999999761581421."""
    return tuple(float(f"{v:.7g}") for v in values)


def geometry_differences(reference: Geometry, other: Geometry) -> list[str]:
    """Human-readable size/spacing/origin/direction differences beyond the converter's tolerances."""
    if len(reference.size) != len(other.size):
        return [f"dimension {len(reference.size)} vs {len(other.size)}"]
    differences = []
    if reference.size != other.size:
        differences.append(f"size {reference.size} vs {other.size}")
    checks = (
        ("spacing", reference.spacing, other.spacing, dict(rtol=SPACING_RTOL, atol=0.0)),
        ("origin", reference.origin, other.origin, dict(rtol=0.0, atol=ORIGIN_ATOL_MM)),
        ("direction", reference.direction, other.direction, dict(rtol=0.0, atol=DIRECTION_ATOL)),
    )
    for name, a, b, tolerance in checks:
        if not np.allclose(a, b, **tolerance):
            differences.append(f"{name} {plain_floats(a)} vs {plain_floats(b)}")
    return differences


def check_same_geometry(*, reference: Geometry, reference_path: Path, other: Geometry, other_path: Path,
                        problems: list[str]) -> None:
    """Channels and label of a case must share one voxel grid."""
    differences = geometry_differences(reference, other)
    if differences:
        problems.append(f"geometry mismatch between {reference_path} and {other_path}: " + "; ".join(differences))


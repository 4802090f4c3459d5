"""Tiny synthetic files in the exact layouts of the public releases, and checks shared by their tests."""
from __future__ import annotations

import hashlib
import itertools
import json
import types
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mt.dataset_conversion.convert_folder import DatasetConversionError

SHAPE_ZYX = (16, 24, 20)  # SimpleITK size (20, 24, 16): tiny, thick slices so DeepMedic runs fast
SPACING = (1.5, 1.5, 5.0)
ORIGIN = (-15.0, -18.0, -40.0)


def write(path: Path, array: np.ndarray, *, spacing=SPACING, origin=ORIGIN, direction=None) -> Path:
    image = sitk.GetImageFromArray(array, isVector=False)  # a 4-D array is a 4-D image (MSD), not vectors
    image.SetSpacing(spacing if array.ndim == 3 else (*spacing, 1.0))
    image.SetOrigin(origin if array.ndim == 3 else (*origin, 0.0))
    if direction is not None:
        image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def lesion(seed: int, shape=SHAPE_ZYX) -> np.ndarray:
    """An ellipsoid lesion somewhere inside the volume (uint8 0/1)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    cz, cy, cx = rng.integers([5, 8, 7], [shape[0] - 5, shape[1] - 8, shape[2] - 7])
    return ((((z - cz) / 2.5) ** 2 + ((y - cy) / 4.0) ** 2 + ((x - cx) / 3.5) ** 2) < 1).astype(np.uint8)


def image(seed: int, mask: np.ndarray, contrast: float = 1.0, shape=SHAPE_ZYX) -> np.ndarray:
    rng = np.random.default_rng(seed + 1000)
    return (100.0 + 60.0 * contrast * mask + rng.normal(0, 8.0, shape)).astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# ISLES 2022
# --------------------------------------------------------------------------------------------------------------
def isles_case(root: Path, number: int, *, flat: bool = False, adc: str = "adc", flair: str = "FLAIR",
               with_mask: bool = True, with_flair: bool = True, rawdata: bool = True,
               flair_origin: tuple[float, float, float] | None = None) -> dict[str, Path]:
    """One ISLES 2022 subject: BIDS tree (dwi/, anat/) or the early flat ses-0001/, with the given name cases.

    ``rawdata=False``: the subject folder lies directly in ``root`` beside ``derivatives/``, as the Zenodo archive
    unpacks. ``flair_origin`` moves the FLAIR's field of view (default :data:`FLAIR_ORIGIN`, which covers the DWI).
    """
    subject = f"sub-strokecase{number:04d}"
    session = (root / "rawdata" if rawdata else root) / subject / "ses-0001"
    mask = lesion(number)
    dwi_dir, anat_dir = (session, session) if flat else (session / "dwi", session / "anat")
    files = {
        "dwi": write(dwi_dir / f"{subject}_ses-0001_dwi.nii.gz", image(number, mask, 1.0)),
        "adc": write(dwi_dir / f"{subject}_ses-0001_{adc}.nii.gz", image(number + 50, mask, -1.0)),
    }
    (dwi_dir / f"{subject}_ses-0001_dwi.json").write_text("{}")  # BIDS sidecar, to be ignored
    if with_flair:
        files["flair"] = write(anat_dir / f"{subject}_ses-0001_{flair}.nii.gz", flair_ramp(flair_origin),
                               spacing=FLAIR_SPACING, origin=flair_origin or FLAIR_ORIGIN)
    if with_mask:
        files["mask"] = write(root / "derivatives" / subject / "ses-0001" / f"{subject}_ses-0001_msk.nii.gz", mask)
    return files


#: FLAIR on its own grid: coarser, shifted field of view (as an unregistered acquisition would be)
FLAIR_SPACING = (1.0, 1.0, 4.0)
FLAIR_SHAPE_ZYX = (24, 40, 34)
FLAIR_ORIGIN = (-17.0, -20.0, -46.0)


def flair_ramp(origin: tuple[float, float, float] | None = None) -> np.ndarray:
    """FLAIR intensity = physical x (mm) + 100: linear, so linear resampling reproduces it exactly inside."""
    x = (origin or FLAIR_ORIGIN)[0] + FLAIR_SPACING[0] * np.arange(FLAIR_SHAPE_ZYX[2])
    return np.broadcast_to(x + 100.0, FLAIR_SHAPE_ZYX).astype(np.float32).copy()


# --------------------------------------------------------------------------------------------------------------
# ATLAS v2.0
# --------------------------------------------------------------------------------------------------------------
ATLAS_SPACE = "space-MNI152NLin2009aSym"


def atlas_case(root: Path, subset: str, site: str, subject: str, *, with_mask: bool = True) -> dict[str, Path]:
    anat = root / subset / site / f"sub-{subject}" / "ses-1" / "anat"
    seed = int("".join(c for c in subject if c.isdigit()))
    mask = lesion(seed)
    files = {"t1w": write(anat / f"sub-{subject}_ses-1_{ATLAS_SPACE}_T1w.nii.gz", image(seed, mask, -0.8))}
    (anat / f"sub-{subject}_ses-1_{ATLAS_SPACE}_T1w.json").write_text("{}")
    if with_mask:
        files["mask"] = write(anat / f"sub-{subject}_ses-1_{ATLAS_SPACE}_label-L_desc-T1lesion_mask.nii.gz", mask)
    return files


# --------------------------------------------------------------------------------------------------------------
# BraTS 2021 and MSD Task01
# --------------------------------------------------------------------------------------------------------------
def brats_labels(seed: int) -> np.ndarray:
    """Nested BraTS regions: oedema (2) around necrosis (1) around enhancing (4) voxels."""
    seg = np.zeros(SHAPE_ZYX, np.uint8)
    o = seed % 3
    seg[4 + o:12 + o, 6:18, 5:15] = 2
    seg[6 + o:10 + o, 9:15, 8:12] = 1
    seg[7 + o:9 + o, 11:13, 9:11] = 4
    return seg


def brats_case(folder: Path, number: int, *, with_seg: bool = True) -> dict[str, Path]:
    case = f"BraTS2021_{number:05d}"
    seg = brats_labels(number)
    files = {m: write(folder / case / f"{case}_{m}.nii.gz", image(number + i, (seg > 0).astype(np.uint8)))
             for i, m in enumerate(("flair", "t1", "t1ce", "t2"))}
    if with_seg:
        files["seg"] = write(folder / case / f"{case}_seg.nii.gz", seg)
    return files


def msd_volumes(number: int) -> np.ndarray:
    """4 channels (c, z, y, x), channel c = 1000 c + noise, so the split order is checkable."""
    rng = np.random.default_rng(number)
    return np.stack([1000.0 * c + rng.normal(0, 5, SHAPE_ZYX) for c in range(4)]).astype(np.float32)


def msd_labels(number: int) -> np.ndarray:
    """MSD convention: 1 oedema, 2 non-enhancing, 3 enhancing."""
    seg = brats_labels(number)
    return np.select([seg == 2, seg == 1, seg == 4], [1, 2, 3], 0).astype(np.uint8)


def msd_task01(root: Path, train: tuple[int, ...] = (1, 2, 3), test: tuple[int, ...] = (4,)) -> Path:
    folder = root / "Task01_BrainTumour"
    for number in train:
        write(folder / "imagesTr" / f"BRATS_{number:03d}.nii.gz", msd_volumes(number))
        write(folder / "labelsTr" / f"BRATS_{number:03d}.nii.gz", msd_labels(number))
    for number in test:
        write(folder / "imagesTs" / f"BRATS_{number:03d}.nii.gz", msd_volumes(number))
    (folder / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (folder / "dataset.json").write_text(json.dumps({"name": "BRATS", "modality": {
        "0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}}))
    return folder


# --------------------------------------------------------------------------------------------------------------
# Releases assembled from links
# --------------------------------------------------------------------------------------------------------------
def linked_release(plain: Path, where: Path, is_case_folder) -> Path:
    """A copy of the release ``plain`` made of links only: each case folder (``is_case_folder(path relative to
    plain)``) a link to a folder in ``where/store`` whose files are links to ``plain``'s, every other file a link to
    its link in the store (a chain of two)."""
    store, linked = where / "store", where / plain.name
    for path in sorted(plain.rglob("*")):
        if path.is_file():
            (store / path.relative_to(plain)).parent.mkdir(parents=True, exist_ok=True)
            (store / path.relative_to(plain)).symlink_to(path)
    for path in sorted(plain.rglob("*")):
        relative = path.relative_to(plain)
        if any(is_case_folder(parent) for parent in relative.parents):
            continue  # inside a case folder, which is linked as a whole
        if path.is_dir() and is_case_folder(relative) or path.is_file():
            (linked / relative).parent.mkdir(parents=True, exist_ok=True)
            (linked / relative).symlink_to(store / relative, target_is_directory=path.is_dir())
    return linked


def same_dataset(a: Path, b: Path) -> None:
    """Two converted datasets hold the same files (the conversion record apart, which names the sources) with the
    same voxels and geometry, and the same dataset.json."""
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    for name in files:
        if name.endswith(".nii.gz"):
            left, right = read(a / name), read(b / name)
            np.testing.assert_array_equal(sitk.GetArrayFromImage(left), sitk.GetArrayFromImage(right))
            assert (left.GetSpacing(), left.GetOrigin()) == (right.GetSpacing(), right.GetOrigin())
    assert (a / "dataset.json").read_text() == (b / "dataset.json").read_text()


# --------------------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------------------
def checksums(root: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every file below root: the sources must come out of a conversion untouched."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_refused(convert, source: Path, raw: Path, fragments) -> str:
    """``convert()`` stops with every one of ``fragments`` in its message, the source untouched and nothing written
    below ``raw``; returns the message."""
    before = checksums(source)
    with pytest.raises(DatasetConversionError) as info:
        convert()
    for fragment in fragments:
        assert fragment in str(info.value)
    assert checksums(source) == before
    assert not raw.exists()
    return str(info.value)


def cli_error(main, argv: list[str], capsys) -> str:
    """What a converter command that must stop (exit status 2) writes on stderr."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


class _SerialPool:
    def __init__(self, *_args, **_kwargs) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def starmap(self, function, iterable):
        return list(itertools.starmap(function, iterable))


def verify_with_nnunet(folder: Path, monkeypatch) -> None:
    """nnU-Net's own ``verify_dataset_integrity`` (what ``nnUNetv2_plan_and_preprocess --verify_dataset_integrity``
    runs), with its worker pool made serial and in-process: spawning a worker costs seconds per call here."""
    import nnunetv2.experiment_planning.verify_dataset_integrity as vdi

    fake = types.SimpleNamespace(get_context=lambda *_: types.SimpleNamespace(Pool=_SerialPool))
    monkeypatch.setattr(vdi, "multiprocessing", fake)
    vdi.verify_dataset_integrity(str(folder), num_processes=1)


def read(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


def array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(read(path))


#: ``nnUNetv2_plan_and_preprocess`` with nnU-Net's own code, but drawing 1e5 instead of 1e8 foreground voxels per
#: channel for the intensity statistics of the fingerprint: that draw takes minutes on a loaded 2-core machine
#: even for 20 x 24 x 16 volumes, and the statistics are only used for CT normalisation (these MR channels are
#: z-scored per case). Run as ``python -c PLAN_AND_PREPROCESS_FEW_SAMPLES -d ID ...``.
PLAN_AND_PREPROCESS_FEW_SAMPLES = """
import sys
from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
original_init = DatasetFingerprintExtractor.__init__
def init_with_few_samples(self, *args, **kwargs):
    original_init(self, *args, **kwargs)
    self.num_foreground_voxels_for_intensitystats = 1e5
DatasetFingerprintExtractor.__init__ = init_with_few_samples
from nnunetv2.experiment_planning.plan_and_preprocess_entrypoints import plan_and_preprocess_entry
sys.argv = ["nnUNetv2_plan_and_preprocess", *sys.argv[1:]]
plan_and_preprocess_entry()
"""

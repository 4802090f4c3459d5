"""Convert a plain folder of NIfTI scans into an nnU-Net v2 raw dataset (with unlabelled scans).

Input convention
----------------
``images_dir`` holds one file per case and channel, named ``<case>_<channel>.nii.gz`` (or ``.nii``),
for exactly the channel names passed in ``channels``. With ``channels=['DWI', 'b0']``::

    images_dir/pat01_DWI.nii.gz   images_dir/pat01_b0.nii.gz
    images_dir/pat02_DWI.nii      images_dir/pat02_b0.nii.gz

The case id is everything before ``_<channel>``; when one channel name is itself a suffix of another
(``T1`` and ``post_T1``) the longest channel name wins. Every other entry of ``images_dir`` is an error.

``labels_dir`` (optional) holds one label map per annotated case, named ``<case>.nii.gz`` (or ``.nii``),
with integer values taken from ``labels`` (default ``{'background': 0, 'lesion': 1}``).

Output layout (``<output_raw_root>/Dataset{ID:03d}_{Name}/``)
-------------------------------------------------------------
- ``imagesTr/<case>_0000.nii.gz`` ... + ``labelsTr/<case>.nii.gz``: cases with a label;
- ``imagesTs/`` + ``labelsTs/``: the cases listed in ``test_cases`` (they must have a label);
- ``imagesUnlabeled/<case>_0000.nii.gz`` ...: cases without a label, same channel naming as ``imagesTr``;
- ``dataset.json`` written by nnU-Net's ``generate_dataset_json`` (``numTraining`` counts labelled
  training cases only, channel indices follow the order of ``channels``).

Images are re-written with SimpleITK keeping their pixel type (float stays float). Label maps are cast to
uint8 (uint16 when a label value exceeds 255). The geometry of the case's first channel is kept exactly; the
other channels and the label must match it within the tolerances of ``image_checks`` and are then written with
exactly that geometry, because nnU-Net's readers compare channels/labels with tolerances tighter than ours.

Safety
------
Every input is validated before anything is written; all problems are collected and raised together as one
:class:`DatasetConversionError` naming each offending file, so a bad input writes nothing. The source folders
are only ever read, and an output folder inside them (symlinks resolved) is refused. Every image must be 3-D
(2-D and 4-D files are refused, annotated or not). The dataset is built in a hidden sibling folder
(``.Dataset{ID:03d}_{Name}.partial-<pid>@<host>-<token>``) and renamed into place, so an interrupted run never
leaves a half-written ``Dataset{ID:03d}_{Name}`` behind; the next run removes such folders whose writer process is
gone, and says so. The command line turns SIGTERM into a normal exit, so a terminated run cleans up at once.
The dataset keeps a record of its sources and options (``nnunet_mt_conversion.json``, :mod:`.rerun_record`): the
same command run again finds it up to date (or writes it again where one of its files was changed or deleted), and
one with other sources or options is refused, saying what differs, unless ``--overwrite`` is given.

Console script ``nnunet_mt_convert`` (see :func:`main`)::

    nnunet_mt_convert -i scans/ -l masks/ -d 501 -n StrokeDWI -c DWI b0 \\
        [--labels background=0 lesion=1] [--test-cases pat07 pat08] [--raw-root DIR] [--overwrite]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunet_mt.dataset_conversion import help_text
from nnunet_mt.dataset_conversion.dataset_checks import (check_label_definitions, check_output_location,
                                                          dataset_dir_for, is_plain_int, lies_inside)
from nnunet_mt.dataset_conversion.errors import DatasetConversionError, OldDatasetLeft, reported_on_stderr, writing
from nnunet_mt.dataset_conversion.image_checks import (Geometry, check_3d, check_finite, check_label_values,
                                                       check_same_geometry, read_geometry, read_voxels)
from nnunet_mt.dataset_conversion.rerun_record import RECORD_VERSION, Rerun, compare_with_existing, write_record
from nnunet_mt.dataset_conversion.staging import remove_stale_temporaries, sigterm_as_exit, temporary_sibling
from nnunet_mt.utils.file_fingerprint import files_fingerprint

NIFTI_ENDINGS: tuple[str, ...] = (".nii.gz", ".nii")  # ".nii.gz" first: ".nii" is not a suffix of it anyway
OUTPUT_FILE_ENDING = ".nii.gz"
DEFAULT_LABELS: dict[str, int] = {"background": 0, "lesion": 1}
CONVERTER = "nnunet_mt_convert"
UNLABELED_IMAGES_FOLDER = "imagesUnlabeled"

SPLIT_TRAIN = "train"
SPLIT_TEST = "test"
SPLIT_UNLABELED = "unlabeled"
# split -> (images folder, labels folder or None)
SPLIT_FOLDERS: dict[str, tuple[str, str | None]] = {
    SPLIT_TRAIN: ("imagesTr", "labelsTr"),
    SPLIT_TEST: ("imagesTs", "labelsTs"),
    SPLIT_UNLABELED: (UNLABELED_IMAGES_FOLDER, None),
}


@dataclass(frozen=True)
class CasePlan:
    """Where one case comes from and which split it goes to.

    ``image_paths`` follows the order of the channel list; for a case with a missing channel it only holds the
    files that exist (such a case is an error and is validated only so that all problems get reported).
    """

    case_id: str
    image_paths: tuple[Path, ...]
    label_path: Path | None
    split: str


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------
def convert_folder(
    images_dir: str | os.PathLike,
    output_raw_root: str | os.PathLike,
    dataset_id: int,
    dataset_name: str,
    channels: list[str],
    labels_dir: str | os.PathLike | None = None,
    labels: dict[str, int] | None = None,
    test_cases: list[str] | None = None,
    overwrite: bool = False,
    report: list[str] | None = None,
) -> Path:
    """Validate the folder(s) and write ``<output_raw_root>/Dataset{ID:03d}_{Name}``; return that path.

    Raises :class:`DatasetConversionError` (listing every problem) before writing anything if any input is bad.
    A dataset this very conversion wrote (same sources, same options: see :mod:`.rerun_record`) is left as it is,
    or written again where one of its files changed since. ``report``, where given, receives what was done, one
    line each (``wrote DIR`` or ``up to date, nothing written: DIR``, then the files found changed).
    """
    images_dir = Path(images_dir)
    labels_dir = Path(labels_dir) if labels_dir is not None else None
    labels = dict(DEFAULT_LABELS if labels is None else labels)
    channels = list(channels)

    problems: list[str] = []
    dataset_dir = dataset_dir_for(output_raw_root=Path(output_raw_root), dataset_id=dataset_id,
                                  dataset_name=dataset_name, problems=problems)
    sources = [d for d in (images_dir, labels_dir) if d is not None]
    if not lies_inside(Path(output_raw_root), sources):  # never delete in the sources, which are only read
        remove_stale_temporaries(Path(output_raw_root))  # first: a restored backup counts as an existing dataset
    plans = plan_cases(images_dir=images_dir, labels_dir=labels_dir, channels=channels,
                       test_cases=list(test_cases or []), problems=problems)
    check_label_definitions(labels=labels, problems=problems)
    report = report if report is not None else []
    record, previous = _record(plans=plans, channels=channels, labels=labels, test_cases=test_cases), Rerun()
    if dataset_dir is not None and not problems:
        previous = compare_with_existing(dataset_dir, record, overwrite=overwrite, converter=CONVERTER)
        if previous.up_to_date:
            report.append(f"up to date, nothing written: {dataset_dir}")
            return dataset_dir
        problems.extend(previous.problems)
    if dataset_dir is not None:  # an existing dataset with a record is explained by previous.problems
        check_output_location(dataset_dir=dataset_dir, dataset_id=dataset_id, source_dirs=sources,
                              overwrite=overwrite or previous.existing is not None, problems=problems)
    allowed_label_values = {value for value in labels.values() if is_plain_int(value)}
    for plan in plans:
        validate_case(plan=plan, allowed_label_values=allowed_label_values, problems=problems)
    if problems:
        target = dataset_dir if dataset_dir is not None else output_raw_root
        raise DatasetConversionError(problems, context=f"cannot convert {images_dir} into {target}")

    _write_dataset(plans=plans, dataset_dir=dataset_dir, channels=channels, labels=labels, record=record)
    report.extend([f"wrote {dataset_dir}", *previous.notes(dataset_dir)])
    return dataset_dir


def _record(*, plans: list[CasePlan], channels: list[str], labels: dict[str, int], test_cases: list[str] | None
            ) -> dict:
    """The rerun record (:mod:`.rerun_record`): the options that change the output and every source file."""
    files = sorted({Path(path).absolute() for plan in plans for path in (*plan.image_paths, plan.label_path)
                    if path is not None})
    return {"version": RECORD_VERSION, "converter": CONVERTER,
            "options": {"channels": channels, "labels": labels, "test_cases": sorted(test_cases or [])},
            "sources": files_fingerprint(files), "problems": {}, "summary": {}}


# --------------------------------------------------------------------------------------------------------------
# Discovering cases
# --------------------------------------------------------------------------------------------------------------
def plan_cases(*, images_dir: Path, labels_dir: Path | None, channels: list[str], test_cases: list[str],
               problems: list[str]) -> list[CasePlan]:
    """Pair image files into cases, attach labels and assign splits; append naming problems to ``problems``."""
    if not _check_channel_names(channels=channels, problems=problems):
        return []  # without a usable channel list no file name can be interpreted
    image_files = _scan_images(images_dir=images_dir, channels=channels, problems=problems)
    label_files = _scan_labels(labels_dir=labels_dir, problems=problems) if labels_dir is not None else {}
    _check_missing_channels(image_files=image_files, images_dir=images_dir, channels=channels, problems=problems)
    _check_orphan_labels(label_files=label_files, case_ids=set(image_files), problems=problems)
    _check_test_cases(test_cases=test_cases, case_ids=set(image_files), label_files=label_files,
                      labels_dir=labels_dir, problems=problems)
    return [
        CasePlan(
            case_id=case_id,
            image_paths=tuple(image_files[case_id][c] for c in channels if c in image_files[case_id]),
            label_path=label_files.get(case_id),
            split=_split_of(case_id=case_id, has_label=case_id in label_files, test_cases=test_cases),
        )
        for case_id in sorted(image_files)
    ]


def _check_channel_names(*, channels: list[str], problems: list[str]) -> bool:
    """Channel names must be non-empty, unique and usable inside a file name."""
    if not channels:
        problems.append("channel name list is empty: give at least one channel name (e.g. ['DWI', 'b0'])")
        return False
    ok = True
    duplicates = sorted({c for c in channels if channels.count(c) > 1})
    if duplicates:
        problems.append(f"channel names are duplicated: {duplicates} in {channels}")
        ok = False
    for channel in channels:
        if not isinstance(channel, str) or not channel or os.sep in channel or "/" in channel:
            problems.append(f"invalid channel name {channel!r} in {channels}: must be a non-empty file-name part")
            ok = False
    return ok


def nifti_stem(filename: str, *, any_case: bool = False) -> str | None:
    """``'pat01_DWI.nii.gz'`` -> ``'pat01_DWI'``; None when the name has no NIfTI ending (in exactly that letter
    case, or in any with ``any_case``: the public releases' converters accept ``.NII.GZ`` too)."""
    name = filename.lower() if any_case else filename
    for ending in NIFTI_ENDINGS:
        if name.endswith(ending) and len(filename) > len(ending):
            return filename[: -len(ending)]
    return None


def _match_channel(stem: str, channels: list[str]) -> tuple[str, str] | None:
    """Split ``'<case>_<channel>'`` into ``(case, channel)``; the longest matching channel name wins."""
    for channel in sorted(channels, key=len, reverse=True):
        suffix = f"_{channel}"
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)], channel
    return None


def _list_dir(*, directory: Path, role: str, problems: list[str]) -> list[Path] | None:
    """Sorted entries of ``directory``; None (and a problem) when it is missing or not a directory."""
    if not directory.is_dir():
        problems.append(f"{role} {directory} does not exist or is not a directory")
        return None
    return sorted(directory.iterdir())


def _scan_images(*, images_dir: Path, channels: list[str], problems: list[str]) -> dict[str, dict[str, Path]]:
    """Map case id -> channel -> file; report stray and duplicated files."""
    entries = _list_dir(directory=images_dir, role="images dir", problems=problems)
    if entries is None:
        return {}
    cases: dict[str, dict[str, Path]] = {}
    for path in entries:
        stem = nifti_stem(path.name) if path.is_file() else None
        match = _match_channel(stem, channels) if stem is not None else None
        if match is None:
            problems.append(f"{path}: stray file, matches no '<case>_<channel>.nii.gz' pattern "
                            f"for channels {channels}")
            continue
        case_id, channel = match
        if channel in cases.setdefault(case_id, {}):
            problems.append(f"case '{case_id}' channel '{channel}' has two files: "
                            f"{cases[case_id][channel]} and {path}")
            continue
        cases[case_id][channel] = path
    if not cases:
        problems.append(f"images dir {images_dir} contains no image files named '<case>_<channel>.nii.gz' "
                        f"for channels {channels}")
    return cases


def _scan_labels(*, labels_dir: Path, problems: list[str]) -> dict[str, Path]:
    """Map case id -> label file; report stray and duplicated files."""
    entries = _list_dir(directory=labels_dir, role="labels dir", problems=problems)
    if entries is None:
        return {}
    found: dict[str, Path] = {}
    for path in entries:
        case_id = nifti_stem(path.name) if path.is_file() else None
        if case_id is None:
            problems.append(f"{path}: stray file in labels dir, expected '<case>.nii.gz' or '<case>.nii'")
        elif case_id in found:
            problems.append(f"case '{case_id}' has two label files: {found[case_id]} and {path}")
        else:
            found[case_id] = path
    return found


def _check_missing_channels(*, image_files: dict[str, dict[str, Path]], images_dir: Path, channels: list[str],
                            problems: list[str]) -> None:
    """Every case needs one file per channel."""
    for case_id in sorted(image_files):
        for channel in channels:
            if channel not in image_files[case_id]:
                expected = images_dir / f"{case_id}_{channel}{NIFTI_ENDINGS[0]}"
                problems.append(f"case '{case_id}' is missing channel '{channel}': expected {expected}")


def _check_orphan_labels(*, label_files: dict[str, Path], case_ids: set[str], problems: list[str]) -> None:
    """A label without images is almost always a naming mistake, so it is an error, not silently dropped."""
    for case_id in sorted(set(label_files) - case_ids):
        problems.append(f"{label_files[case_id]}: label file has no matching image case '{case_id}' "
                        f"(no '{case_id}_<channel>' images)")


def _check_test_cases(*, test_cases: list[str], case_ids: set[str], label_files: dict[str, Path],
                      labels_dir: Path | None, problems: list[str]) -> None:
    """Test cases must exist, be unique and have a label (nnU-Net evaluates them against labelsTs)."""
    duplicates = sorted({c for c in test_cases if test_cases.count(c) > 1})
    if duplicates:
        problems.append(f"test case ids are duplicated: {duplicates}")
    for case_id in dict.fromkeys(test_cases):
        if case_id not in case_ids:
            problems.append(f"test case '{case_id}' has no image files '{case_id}_<channel>.nii.gz'")
        if case_id not in label_files:
            where = (f"expected {labels_dir / (case_id + NIFTI_ENDINGS[0])}" if labels_dir is not None
                     else "no labels dir was given")
            problems.append(f"test case '{case_id}' has no label: {where}")


def _split_of(*, case_id: str, has_label: bool, test_cases: list[str]) -> str:
    """Test cases go to imagesTs, other labelled cases to imagesTr, the rest to imagesUnlabeled."""
    if case_id in test_cases:
        return SPLIT_TEST
    return SPLIT_TRAIN if has_label else SPLIT_UNLABELED


# --------------------------------------------------------------------------------------------------------------
# Checking the files of each case (the checks themselves: image_checks)
# --------------------------------------------------------------------------------------------------------------
def validate_case(*, plan: CasePlan, allowed_label_values: set[int], problems: list[str]) -> None:
    """Check every file of one case: readable, complete, finite, valid label values, one shared voxel grid.

    Nothing is kept in memory: files are read again when writing, so memory stays bounded by one file.
    """
    reference: Geometry | None = None
    reference_path: Path | None = None
    for path in plan.image_paths:
        geometry = read_geometry(path=path, problems=problems)
        voxels = read_voxels(path=path, problems=problems) if geometry is not None else None
        if voxels is not None:
            check_finite(voxels=voxels, path=path, problems=problems)
        if geometry is None or not check_3d(geometry=geometry, path=path, problems=problems):
            continue
        if reference is None:
            reference, reference_path = geometry, path
        else:
            check_same_geometry(reference=reference, reference_path=reference_path, other=geometry,
                                other_path=path, problems=problems)
    if plan.label_path is not None:
        _validate_label(path=plan.label_path, reference=reference, reference_path=reference_path,
                        allowed=allowed_label_values, problems=problems)


def _validate_label(*, path: Path, reference: Geometry | None, reference_path: Path | None, allowed: set[int],
                    problems: list[str]) -> None:
    """A label map must be readable, hold only known whole-number labels and lie on its images' grid."""
    geometry = read_geometry(path=path, problems=problems)
    if geometry is None or not check_3d(geometry=geometry, path=path, problems=problems, role="label map"):
        return
    voxels = read_voxels(path=path, problems=problems)
    if voxels is not None and check_finite(voxels=voxels, path=path, problems=problems):
        check_label_values(voxels=voxels, path=path, allowed=allowed, problems=problems)
    if reference is not None:
        check_same_geometry(reference=reference, reference_path=reference_path, other=geometry, other_path=path,
                            problems=problems)


# --------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------
def _label_pixel_type(labels: dict[str, int]) -> int:
    """uint8 suffices for almost every dataset; uint16 only when a label value needs it."""
    return sitk.sitkUInt8 if max(labels.values()) <= np.iinfo(np.uint8).max else sitk.sitkUInt16


def _write_dataset(*, plans: list[CasePlan], dataset_dir: Path, channels: list[str],
                   labels: dict[str, int], record: dict) -> None:
    """Build the dataset in a hidden staging sibling and move it into place only once complete."""
    # Hidden ('.') and on the same file system as the target, so the final rename is atomic and nnU-Net's
    # 'Dataset###_*' lookup never sees a staging folder left by a killed run.
    staging = temporary_sibling(dataset_dir, "partial")
    with writing(dataset_dir):
        dataset_dir.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        try:
            label_type = _label_pixel_type(labels)
            for plan in plans:
                _write_case(plan=plan, staging=staging, label_pixel_type=label_type)
            _write_dataset_json(staging=staging, dataset_name=dataset_dir.name, channels=channels, labels=labels,
                                num_training=sum(plan.split == SPLIT_TRAIN for plan in plans))
            write_record(staging, record)
            _move_into_place(staging=staging, dataset_dir=dataset_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def _write_case(*, plan: CasePlan, staging: Path, label_pixel_type: int) -> None:
    """Write one case's channels (and label) into its split's folders, on the first channel's exact grid."""
    images_folder, labels_folder = SPLIT_FOLDERS[plan.split]
    reference: sitk.Image | None = None
    for index, source in enumerate(plan.image_paths):
        image = sitk.ReadImage(str(source))
        if reference is None:
            reference = image
        else:
            # within tolerance (validated) -> snap, because nnU-Net compares channels with tighter tolerances
            image.CopyInformation(reference)
        _write_image(image=image, path=staging / images_folder / f"{plan.case_id}_{index:04d}{OUTPUT_FILE_ENDING}")
    if plan.label_path is not None and labels_folder is not None:
        label = sitk.Cast(sitk.ReadImage(str(plan.label_path)), label_pixel_type)
        label.CopyInformation(reference)
        _write_image(image=label, path=staging / labels_folder / f"{plan.case_id}{OUTPUT_FILE_ENDING}")


def _write_image(*, image: sitk.Image, path: Path) -> None:
    """Write compressed NIfTI, creating the split folder on first use."""
    path.parent.mkdir(exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)


def _write_dataset_json(*, staging: Path, dataset_name: str, channels: list[str], labels: dict[str, int],
                        num_training: int) -> None:
    """dataset.json via nnU-Net's own helper so the format tracks the installed nnU-Net version."""
    (staging / SPLIT_FOLDERS[SPLIT_TRAIN][0]).mkdir(exist_ok=True)  # nnU-Net expects these even if empty
    (staging / SPLIT_FOLDERS[SPLIT_TRAIN][1]).mkdir(exist_ok=True)
    generate_dataset_json(
        str(staging),
        channel_names={index: name for index, name in enumerate(channels)},
        labels={name: int(value) for name, value in labels.items()},
        num_training_cases=num_training,
        file_ending=OUTPUT_FILE_ENDING,
        dataset_name=dataset_name,
        description="Converted by nnunet_mt.dataset_conversion.convert_folder; unlabelled cases are in "
                    f"{UNLABELED_IMAGES_FOLDER}/",
        converted_by=CONVERTER,
    )


def _move_into_place(*, staging: Path, dataset_dir: Path) -> None:
    """Rename staging to the final name; an existing dataset (overwrite) is swapped out, then deleted."""
    if not dataset_dir.exists():
        staging.rename(dataset_dir)
        return
    backup = temporary_sibling(dataset_dir, "replaced")
    dataset_dir.rename(backup)
    try:
        staging.rename(dataset_dir)
    except BaseException:
        backup.rename(dataset_dir)  # put the old dataset back rather than leave nothing
        raise
    try:
        shutil.rmtree(backup)
    except OSError as error:  # the new dataset is in place: say so, and where the old one is
        raise OldDatasetLeft(dataset_dir, backup, error) from error


# Public names of the checks and writers above, for the dataset-specific converters
# (nnunet_mt.dataset_conversion.public), so that every converter reports problems the same way
# (the checks of the files themselves are in image_checks).
move_into_place = _move_into_place
validate_label = _validate_label
write_image = _write_image


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------
def _parse_labels(items: list[str] | None) -> dict[str, int] | None:
    """``['background=0', 'lesion=1']`` -> ``{'background': 0, 'lesion': 1}``."""
    if items is None:
        return None
    parsed: dict[str, int] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep or not name or not re.fullmatch(r"-?\d+", value.strip()):
            raise DatasetConversionError([f"--labels entry {item!r} is not of the form name=integer"],
                                         context="invalid arguments")
        if name in parsed:
            raise DatasetConversionError([f"--labels name {name!r} is given twice"], context="invalid arguments")
        parsed[name] = int(value)
    return parsed


def _build_parser() -> argparse.ArgumentParser:
    parser = help_text.parser(
        CONVERTER, "Convert a folder of '<case>_<channel>.nii.gz' scans (+ optional '<case>.nii.gz' labels) into an "
                   "nnU-Net v2 raw dataset; unlabelled cases go to imagesUnlabeled/.",
        example="-i scans/ -l masks/ -d 501 -n StrokeDWI -c DWI b0")
    parser.add_argument("-i", "--images-dir", required=True, help="folder with <case>_<channel>.nii.gz files")
    parser.add_argument("-l", "--labels-dir", default=None, help="folder with <case>.nii.gz label maps")
    parser.add_argument("-d", "--dataset-id", required=True, type=int, help="dataset id (0..999)")
    parser.add_argument("-n", "--dataset-name", required=True, help="dataset name, e.g. StrokeDWI")
    parser.add_argument("-c", "--channels", required=True, nargs="+", help="channel names, in channel order")
    parser.add_argument("--labels", nargs="+", default=None, metavar="NAME=VALUE",
                        help="label definition (default: background=0 lesion=1)")
    parser.add_argument("--test-cases", nargs="+", default=None, metavar="CASE",
                        help="labelled case ids to put in imagesTs/labelsTs")
    parser.add_argument("--raw-root", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``nnunet_mt_convert``; conversion errors go to stderr with exit status 2."""
    args = _build_parser().parse_args(argv)
    with reported_on_stderr(CONVERTER):
        raw_root = args.raw_root or os.environ.get("nnUNet_raw")
        if not raw_root:
            raise DatasetConversionError(["no output folder: pass --raw-root or set the nnUNet_raw environment "
                                          "variable"], context="invalid arguments")
        report: list[str] = []
        with sigterm_as_exit():
            convert_folder(
                images_dir=args.images_dir, output_raw_root=raw_root, dataset_id=args.dataset_id,
                dataset_name=args.dataset_name, channels=args.channels, labels_dir=args.labels_dir,
                labels=_parse_labels(args.labels), test_cases=args.test_cases, overwrite=args.overwrite,
                report=report)
    print("\n".join(report))


if __name__ == "__main__":
    main()

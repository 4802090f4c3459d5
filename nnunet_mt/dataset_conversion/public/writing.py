"""Writing a converted public dataset: into a hidden staging folder beside the target, renamed into place.

Channels are written on the first channel's grid (a 4-D file split into 3-D volumes as nnU-Net's MSD conversion
does, a channel marked ``resample`` resampled onto that grid), labels mapped with the spec's ``label_map``, the
rerun record last; the hidden labels are listed in a file *outside* the dataset folder.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import SimpleITK as sitk
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunet_mt.dataset_conversion.convert_folder import (OUTPUT_FILE_ENDING, UNLABELED_IMAGES_FOLDER, move_into_place,
                                                         write_image)
from nnunet_mt.dataset_conversion.errors import OutputError, writing
from nnunet_mt.dataset_conversion.image_checks import Geometry
from nnunet_mt.dataset_conversion.public.cases import DatasetSpec, SourceCase
from nnunet_mt.dataset_conversion.public.validation import spatial_geometry
from nnunet_mt.dataset_conversion.rerun_record import write_record
from nnunet_mt.dataset_conversion.staging import temporary_sibling

IMAGES_TR, LABELS_TR = "imagesTr", "labelsTr"


def write_hidden_labels(path: Path, hidden: Mapping[str, str], dataset_dir: Path) -> None:
    """The hidden labels' case ids and source files, written atomically outside the dataset folder."""
    content = json.dumps({"dataset": str(dataset_dir), "hidden_labels": dict(sorted(hidden.items())),
                          "note": f"these cases are in {UNLABELED_IMAGES_FOLDER}/ without their labels"}, indent=2)
    if path.is_file() and path.read_text() == content:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = temporary_sibling(path, "partial")
        temporary.write_text(content)
        os.replace(temporary, path)
    except OSError as error:  # written after the dataset, which is in place: say both
        raise OutputError(f"wrote {dataset_dir}, but cannot write its hidden-labels file {path}: "
                          f"{error.strerror or error}; rerun the same command once it can be written") from error


def remove_stale_hidden_labels(candidates: Sequence[Path], keep: Path | None, dataset_dir: Path) -> list[Path]:
    """Remove the hidden-labels files among ``candidates`` (but ``keep``) that list ``dataset_dir``'s labels: once
    the dataset is replaced they name cases whose labels may be in labelsTr now. Return those removed.

    A file that lists another dataset, or cannot be read as one of these files, is not this converter's to remove."""
    removed = []
    for path in dict.fromkeys(candidates):
        if path == keep or not path.is_file():
            continue
        try:
            listed = json.loads(path.read_text()).get("dataset")
        except (OSError, ValueError, AttributeError):
            continue
        if listed == str(dataset_dir):
            path.unlink()
            removed.append(path)
    return removed



def write_dataset(spec: DatasetSpec, cases: Sequence[SourceCase], kept: set[str], dataset_dir: Path,
                  record: dict) -> None:
    """Build the dataset in a hidden staging sibling, then rename it into place (convert_folder's swap).

    Records, per resampled channel and case, the voxels outside that channel's field of view (in ``record``'s
    summary, where the caller finds them even when the dataset it replaces could not be deleted).
    """
    staging = temporary_sibling(dataset_dir, "partial")
    with writing(dataset_dir):
        dataset_dir.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        try:
            _write_cases_and_json(spec, cases, kept, staging, dataset_dir.name, record)
            move_into_place(staging=staging, dataset_dir=dataset_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def _write_cases_and_json(spec: DatasetSpec, cases: Sequence[SourceCase], kept: set[str], staging: Path,
                          dataset_name: str, record: dict) -> None:
    for folder in (IMAGES_TR, LABELS_TR):
        (staging / folder).mkdir()
    outside: dict[str, dict[str, list[int]]] = {}
    for case in cases:
        for channel, counts in _write_case(spec, case, staging, with_label=case.case_id in kept).items():
            outside.setdefault(channel, {})[case.case_id] = counts
    generate_dataset_json(
        str(staging),
        channel_names={index: name for index, name in enumerate(spec.channel_names)},
        labels={name: (tuple(value) if isinstance(value, tuple) else int(value))
                for name, value in spec.labels.items()},
        num_training_cases=len(kept),
        file_ending=OUTPUT_FILE_ENDING,
        regions_class_order=spec.regions_class_order,
        dataset_name=dataset_name,
        reference=spec.reference,
        license=spec.licence,
        description=spec.description + f" Unannotated cases are in {UNLABELED_IMAGES_FOLDER}/.",
        converted_by=spec.converter,
    )
    record["summary"]["outside_field_of_view"] = outside
    write_record(staging, record)


def _channel_images(case: SourceCase) -> list[sitk.Image]:
    """The case's channels as 3-D images; 4-D files split as nnU-Net's MSD conversion does."""
    cache: dict[Path, sitk.Image] = {}
    images = []
    for channel in case.channels:
        if channel.path not in cache:
            cache[channel.path] = sitk.ReadImage(str(channel.path))
        image = cache[channel.path]
        if channel.volume is not None:
            array = sitk.GetArrayFromImage(image)[channel.volume]
            volume = sitk.GetImageFromArray(array)
            spatial = spatial_geometry(Geometry(size=image.GetSize(), spacing=image.GetSpacing(),
                                                origin=image.GetOrigin(), direction=image.GetDirection()))
            volume.SetSpacing(spatial.spacing)
            volume.SetOrigin(spatial.origin)
            volume.SetDirection(spatial.direction)
            image = volume
        images.append(image)
    return images


def resample_onto(image: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Linear resampling of ``image`` onto ``reference``'s grid in scanner (physical) coordinates, as float32.

    This only aligns what the scanner coordinates align: it does not register the images. Outside the
    source's field of view the value is 0 (see :func:`voxels_outside_field_of_view`).
    """
    return sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), reference, sitk.Transform(), sitk.sitkLinear, 0.0,
                         sitk.sitkFloat32)


def voxels_outside_field_of_view(image: sitk.Image, reference: sitk.Image) -> int:
    """How many of ``reference``'s voxels lie outside ``image``'s field of view, where :func:`resample_onto` writes 0.

    SimpleITK's resampling treats a point as inside when it lies within half a voxel of the image's outer voxel
    centres, for nearest-neighbour as for linear interpolation, so resampling ones with the former counts them.
    """
    ones = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(image)
    inside = sitk.Resample(ones, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return int(np.prod(reference.GetSize())) - int(sitk.GetArrayViewFromImage(inside).sum(dtype=np.int64))


def _write_case(spec: DatasetSpec, case: SourceCase, staging: Path, *, with_label: bool) -> dict[str, list[int]]:
    """Write one case; return, per resampled channel, [voxels outside its field of view, voxels]."""
    images = _channel_images(case)
    reference = images[0]
    folder = IMAGES_TR if with_label else UNLABELED_IMAGES_FOLDER
    outside: dict[str, list[int]] = {}
    for index, (channel, image) in enumerate(zip(case.channels, images)):
        if channel.resample:
            outside[spec.channel_names[index]] = [voxels_outside_field_of_view(image, reference),
                                                  int(np.prod(reference.GetSize()))]
            image = resample_onto(image, reference)
        elif index:
            image.CopyInformation(reference)  # within tolerance (validated): snap, nnU-Net's check is tighter
        write_image(image=image, path=staging / folder / f"{case.case_id}_{index:04d}{OUTPUT_FILE_ENDING}")
    if with_label and case.label is not None:
        source = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
        mapped = np.zeros(source.shape, dtype=np.uint8)
        for value, target in spec.label_map.items():
            mapped[source == value] = target
        label = sitk.GetImageFromArray(mapped)
        label.CopyInformation(reference)
        write_image(image=label, path=staging / LABELS_TR / f"{case.case_id}{OUTPUT_FILE_ENDING}")
    return outside

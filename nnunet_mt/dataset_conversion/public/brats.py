"""BraTS 2021 and MSD Task01_BrainTumour (glioma, four MR sequences) -> nnU-Net raw datasets.

Both releases are glioma segmentation with the same three tumour sub-regions, so they share the label
handling here:

* default: **region-based**, as nnU-Net's own BraTS conversion
  (``nnunetv2/dataset_conversion/Dataset137_BraTS21.py``): BraTS labels 0/1/2/4 (background, necrotic
  core, oedema, enhancing) become 0/2/1/3 and dataset.json declares the regions whole tumour (1, 2, 3),
  tumour core (2, 3) and enhancing tumour (3) with ``regions_class_order`` (1, 2, 3). MSD's labels
  0/1/2/3 (background, oedema, non-enhancing, enhancing) already are that convention and are kept.
  nnU-Net's ``nnUNetTrainer`` trains these with sigmoid outputs per region; this project's DeepMedic
  trainers use softmax cross-entropy over exclusive classes and refuse region-based datasets.
* ``--whole-tumour``: a binary lesion task (every tumour label -> 1), what the DeepMedic and mean-teacher
  trainers train on.

BraTS 2021 layout (the training data; the validation data is the same without ``_seg``)::

    DIR/BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2,seg}.nii.gz

Channels in nnU-Net's order: T1, T1ce, T2, FLAIR. Cases without ``_seg`` go to ``imagesUnlabeled/``;
several input folders (training + validation) may be given, a case id found twice is an error. A folder that
holds no case folders but sub-folders that do (the parent of the training and validation data) is refused,
naming those sub-folders; input without any ``_seg`` (the validation data alone) is refused too, since nnU-Net
cannot train on it.

MSD layout::

    Task01_BrainTumour/imagesTr/BRATS_001.nii.gz   4-D: (x, y, z, 4) = FLAIR, T1w, T1gd, T2w
    Task01_BrainTumour/labelsTr/BRATS_001.nii.gz
    Task01_BrainTumour/imagesTs/BRATS_485.nii.gz   no labels: go to imagesUnlabeled/

The 4-D files are split into one file per channel as nnU-Net's ``convert_MSD_dataset`` does (the first
three axes' spacing, origin and direction). macOS ``._*`` files in the MSD tarball are ignored.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from nnunet_mt.dataset_conversion.convert_folder import nifti_stem
from nnunet_mt.dataset_conversion.public.cases import (ChannelSource, DatasetSpec, Discovery, Options, SourceCase,
                                                       files_by_case, is_hidden, require_dir, source_folder)
from nnunet_mt.dataset_conversion.public.command_line import command_line
from nnunet_mt.dataset_conversion.public.convert import convert
from nnunet_mt.dataset_conversion.public.links import child_dir, list_folder
from nnunet_mt.dataset_conversion.public.summary import Summary

PROG_BRATS = "nnunet_mt_convert_brats2021"
PROG_MSD = "nnunet_mt_convert_msd_brain"

#: nnU-Net's region definition for BraTS (Dataset137_BraTS21.py), in its label convention
REGION_LABELS = {"background": 0, "whole tumor": (1, 2, 3), "tumor core": (2, 3), "enhancing tumor": (3,)}
REGIONS_CLASS_ORDER = (1, 2, 3)
BINARY_LABELS = {"background": 0, "lesion": 1}

#: BraTS 0/1/2/4 (background, necrotic core, oedema, enhancing) -> nnU-Net's 0/2/1/3 (Dataset137)
BRATS_TO_NNUNET = {0: 0, 1: 2, 2: 1, 4: 3}
BRATS_WHOLE_TUMOUR = {0: 0, 1: 1, 2: 1, 4: 1}
#: MSD 0/1/2/3 (background, oedema, non-enhancing, enhancing) is nnU-Net's convention already
MSD_TO_NNUNET = {0: 0, 1: 1, 2: 2, 3: 3}
MSD_WHOLE_TUMOUR = {0: 0, 1: 1, 2: 1, 3: 1}

BRATS_MODALITIES = ("t1", "t1ce", "t2", "flair")  # nnU-Net's Dataset137 channel order
BRATS_CHANNEL_NAMES = ("T1", "T1ce", "T2", "FLAIR")
MSD_CHANNEL_NAMES = ("FLAIR", "T1w", "T1gd", "T2w")  # MSD Task01 dataset.json "modality"

_BRATS_CASE = re.compile(r"^BraTS2021_\d+$", re.IGNORECASE)
_BRATS_FILE = re.compile(r"^(BraTS2021_\d+)_(flair|t1|t1ce|t2|seg)$", re.IGNORECASE)
_MSD_FILE = re.compile(r"^BRATS_\d+$", re.IGNORECASE)


def _spec(converter: str, channel_names: tuple[str, ...], whole_tumour: bool, regions_map: dict[int, int],
          binary_map: dict[int, int], description: str, reference: str, licence: str) -> DatasetSpec:
    return DatasetSpec(
        converter=converter, channel_names=channel_names,
        labels=BINARY_LABELS if whole_tumour else REGION_LABELS,
        label_map=binary_map if whole_tumour else regions_map,
        regions_class_order=None if whole_tumour else REGIONS_CLASS_ORDER,
        description=description + (" Whole tumour (binary)." if whole_tumour else " Region-based labels as "
                                   "nnU-Net's Dataset137_BraTS21."),
        reference=reference, licence=licence)


def brats2021_spec(whole_tumour: bool) -> DatasetSpec:
    return _spec(PROG_BRATS, BRATS_CHANNEL_NAMES, whole_tumour, BRATS_TO_NNUNET, BRATS_WHOLE_TUMOUR,
                 "BraTS 2021 (RSNA-ASNR-MICCAI, Baid et al. 2021).",
                 "https://www.synapse.org/#!Synapse:syn25829067", "see the BraTS 2021 data terms on Synapse")


def msd_spec(whole_tumour: bool) -> DatasetSpec:
    return _spec(PROG_MSD, MSD_CHANNEL_NAMES, whole_tumour, MSD_TO_NNUNET, MSD_WHOLE_TUMOUR,
                 "Medical Segmentation Decathlon Task01_BrainTumour (Antonelli et al. 2022).",
                 "http://medicaldecathlon.com/", "CC BY-SA 4.0 (check the release you downloaded)")


# --------------------------------------------------------------------------------------------------------------
# BraTS 2021
# --------------------------------------------------------------------------------------------------------------
def discover_brats2021(roots: Sequence[Path]) -> Discovery:
    """Every ``BraTS2021_XXXXX`` folder below each root is a case; ``_seg`` makes it annotated."""
    discovery = Discovery(source_roots=list(roots), without_annotations_hint=_training_data_hint(roots))
    for root in roots:
        if not require_dir(root, "BraTS 2021 folder", discovery):
            continue
        case_dirs = _brats_case_dirs(root, discovery)
        if not case_dirs:
            discovery.global_problems.append(_no_case_folders(root))
        for case_dir in case_dirs:
            _brats_case(case_dir, discovery)
    return discovery


def _brats_case_dirs(folder: Path, discovery: Discovery | None = None) -> list[Path]:
    """The case folders in ``folder`` (linked ones too); with ``discovery``, links that cannot be followed are
    problems (of the case a link's name names)."""
    if discovery is None:
        return [p for p in sorted(folder.iterdir()) if p.is_dir() and _BRATS_CASE.match(p.name)]
    folders, _ = list_folder(folder, lambda link: link.name if _BRATS_CASE.match(link.name) else None, discovery)
    return [p for p in folders if _BRATS_CASE.match(p.name)]


def _no_case_folders(root: Path) -> str:
    """The problem of a folder without case folders, naming its sub-folders that hold some (a parent folder)."""
    holding = [p for p in sorted(root.iterdir()) if p.is_dir() and _brats_case_dirs(p)]
    if not holding:
        return f"{root}: no BraTS2021_XXXXX case folders"
    return (f"{root}: no BraTS2021_XXXXX case folders in it, but found some in "
            f"{' and '.join(f'{p.name}/' for p in holding)}: pass one or more of them with -i, e.g. -i "
            f"{' '.join(str(p) for p in holding)}")


def _training_data_hint(roots: Sequence[Path]) -> str:
    """What to pass when no case has a _seg: the training data as well, a sibling named so where there is one."""
    given = set(roots)
    siblings = [p for root in roots if root.parent.is_dir() for p in sorted(root.parent.iterdir())
                if p.is_dir() and "train" in p.name.lower() and p not in given]
    training = str(siblings[0]) if siblings else "TRAINING_DATA_FOLDER"
    return (f"give the training data folder together with it: -i {training} {' '.join(str(r) for r in roots)} "
            f"(its case folders hold the ..._seg.nii.gz masks)")


def _brats_case(case_dir: Path, discovery: Discovery) -> None:
    case_id = case_dir.name
    files: dict[str, Path] = {}
    for path in list_folder(case_dir, lambda _link: case_id, discovery)[1]:
        stem = nifti_stem(path.name, any_case=True)
        match = _BRATS_FILE.match(stem) if stem is not None and not is_hidden(path) else None
        if match is None and stem is not None and "_seg" in stem.lower() and not is_hidden(path):
            # a mask is there: ignoring it would file an annotated case as validation data
            discovery.problem(case_id, f"{path}: a segmentation whose name does not follow the release's (expected "
                                       f"{case_dir / f'{case_id}_seg.nii.gz'})")
            continue
        if match is None:
            if stem is not None:
                discovery.ignored.append(path)
            continue
        if match.group(1).lower() != case_id.lower():
            discovery.problem(case_id, f"{path}: file name says {match.group(1)} but it lies in {case_dir}")
            continue
        kind = match.group(2).lower()
        if kind in files:
            discovery.problem(case_id, f"case '{case_id}' has two '{kind}' files: {files[kind]} and {path}")
            continue
        files[kind] = path
    missing = [m for m in BRATS_MODALITIES if m not in files]
    for modality in missing:
        discovery.problem(case_id, f"case '{case_id}' is missing {modality}: expected "
                                   f"{case_dir / f'{case_id}_{modality}.nii.gz'}")
    if missing:
        return
    discovery.add_case(SourceCase(case_id=case_id, channels=tuple(ChannelSource(files[m]) for m in BRATS_MODALITIES),
                                  label=files.get("seg"), unlabeled_reason="without _seg (validation data)"),
                       where=case_dir)


def convert_brats2021(roots: Sequence[str | Path], options: Options, *, whole_tumour: bool = False) -> Summary:
    """Convert one or more BraTS 2021 folders (training data, validation data) into one dataset."""
    roots = [source_folder(r) for r in roots]
    options = replace(options, extra={**options.extra, "whole_tumour": whole_tumour})
    return convert(brats2021_spec(whole_tumour), discover_brats2021(roots), options,
                   context="BraTS 2021 " + " ".join(str(r) for r in roots))


# --------------------------------------------------------------------------------------------------------------
# MSD Task01_BrainTumour
# --------------------------------------------------------------------------------------------------------------
def discover_msd(root: Path) -> Discovery:
    """``imagesTr`` + ``labelsTr`` are the annotated cases, ``imagesTs`` the unannotated ones (4-D images)."""
    discovery = Discovery(source_roots=[root], without_annotations_hint="pass the Task01_BrainTumour folder whose "
                          "imagesTr/ and labelsTr/ hold the training cases")
    if not require_dir(root, "MSD Task01 folder", discovery):
        return discovery
    images_tr, labels_tr, images_ts = (child_dir(root, n, discovery) for n in ("imagesTr", "labelsTr", "imagesTs"))
    if images_tr is None or labels_tr is None:
        discovery.global_problems.append(f"{root}: expected imagesTr/ and labelsTr/ folders (MSD layout)")
        return discovery
    labels = _msd_files(labels_tr, discovery)
    channels = len(MSD_CHANNEL_NAMES)
    for folder, is_training in ((images_tr, True), (images_ts, False)):
        if folder is None:
            continue
        for case_id, image in _msd_files(folder, discovery).items():
            label = labels.pop(case_id, None) if is_training else None
            if is_training and label is None:
                discovery.problem(case_id, f"{image}: training image without label (expected "
                                           f"{labels_tr / image.name})")
                continue
            discovery.add_case(SourceCase(case_id=case_id,
                                          channels=tuple(ChannelSource(image, volume=v) for v in range(channels)),
                                          label=label, unlabeled_reason="from imagesTs (no labels)"), where=image)
    for case_id, label in sorted(labels.items()):
        discovery.global_problems.append(f"{label}: label without an image in {images_tr}")
    return discovery


def _msd_files(folder: Path, discovery: Discovery) -> dict[str, Path]:
    def case_of(path: Path) -> str | None:
        stem = nifti_stem(path.name, any_case=True)
        return stem.upper() if stem is not None and _MSD_FILE.match(stem) else None

    paths = [p for p in list_folder(folder, case_of, discovery)[1] if not is_hidden(p)]
    return files_by_case(paths, lambda stem: stem.upper() if _MSD_FILE.match(stem) else None, discovery, "files")


def convert_msd_brain(root: str | Path, options: Options, *, whole_tumour: bool = False) -> Summary:
    """Convert ``Task01_BrainTumour`` (4-D images) into an nnU-Net raw dataset."""
    root = source_folder(root)
    options = replace(options, extra={**options.extra, "whole_tumour": whole_tumour})
    return convert(msd_spec(whole_tumour), discover_msd(root), options, context=f"MSD Task01 {root}")


# --------------------------------------------------------------------------------------------------------------
# Command lines
# --------------------------------------------------------------------------------------------------------------
_WHOLE_TUMOUR_HELP = ("binary lesion task (every tumour label -> 1) instead of nnU-Net's region-based BraTS labels; "
                      "needed for the DeepMedic / mean-teacher trainers")


def main_brats2021(argv: list[str] | None = None) -> None:
    command_line(
        argv, prog=PROG_BRATS, convert_input=convert_brats2021, default_name="BraTS2021", several_inputs=True,
        example="-i RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021/ RSNA_ASNR_MICCAI_BraTS2021_ValidationData/ "
                "-d 537 --whole-tumour",
        description="Convert BraTS 2021 case folders into an nnU-Net raw dataset (cases without _seg go to "
                    "imagesUnlabeled/).",
        input_help="folder(s) holding BraTS2021_XXXXX/ case folders (training, validation)",
        flags={"--whole-tumour": _WHOLE_TUMOUR_HELP})


def main_msd(argv: list[str] | None = None) -> None:
    command_line(
        argv, prog=PROG_MSD, convert_input=convert_msd_brain, default_name="BrainTumour",
        example="-i Task01_BrainTumour/ -d 501",
        description="Convert MSD Task01_BrainTumour into an nnU-Net raw dataset (imagesTs go to imagesUnlabeled/).",
        input_help="the Task01_BrainTumour folder", flags={"--whole-tumour": _WHOLE_TUMOUR_HELP})


if __name__ == "__main__":
    main_brats2021()

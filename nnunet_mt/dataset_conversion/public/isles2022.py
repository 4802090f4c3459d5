"""ISLES 2022 (ischaemic stroke lesion segmentation, DWI/ADC/FLAIR) -> nnU-Net raw dataset.

Release layout (BIDS)::

    ROOT/rawdata/sub-strokecase0001/ses-0001/dwi/sub-strokecase0001_ses-0001_dwi.nii.gz
    ROOT/rawdata/sub-strokecase0001/ses-0001/dwi/sub-strokecase0001_ses-0001_adc.nii.gz
    ROOT/rawdata/sub-strokecase0001/ses-0001/anat/sub-strokecase0001_ses-0001_FLAIR.nii.gz
    ROOT/derivatives/sub-strokecase0001/ses-0001/sub-strokecase0001_ses-0001_msk.nii.gz

The Zenodo archive unpacks without the ``rawdata/`` level (``ROOT/sub-strokecase0001/ses-0001/...`` beside
``ROOT/derivatives/``); both are accepted, and the summary says which was found. Releases differ, so names
are matched case-insensitively (``FLAIR``/``flair``, ``adc``/``ADC``) and the images may also lie directly
in ``ses-0001/`` (early releases have no ``dwi/`` and ``anat/``). Sidecar files (``.json``) are ignored.

Channels: DWI (b = 1000) and ADC, which share the DWI grid, as in the challenge. FLAIR was acquired
separately and is *not* co-registered with the DWI; ``--with-flair`` adds it as a third channel,
resampled linearly onto the DWI grid in scanner coordinates. That is an approximation: it is only as
good as the patient's stillness between the sequences (no registration is done). The mask is on the DWI
grid. DWI voxels outside the FLAIR's field of view are 0 in the resampled FLAIR; the summary counts them.
Cases without a mask go to ``imagesUnlabeled/``.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from nnunet_mt.dataset_conversion.convert_folder import nifti_stem
from nnunet_mt.dataset_conversion.public.cases import (ChannelSource, DatasetSpec, Discovery, Options, SourceCase,
                                                       files_by_case, require_dir, source_folder)
from nnunet_mt.dataset_conversion.public.command_line import command_line
from nnunet_mt.dataset_conversion.public.convert import convert
from nnunet_mt.dataset_conversion.public.links import bids_subject, child_dir, list_folder, walk_files
from nnunet_mt.dataset_conversion.public.summary import Summary

PROG = "nnunet_mt_convert_isles2022"
_IMAGE = re.compile(r"^(sub-[a-z0-9]+)_(ses-[a-z0-9]+)_(dwi|adc|flair)$", re.IGNORECASE)
_MASK = re.compile(r"^(sub-[a-z0-9]+)_(ses-[a-z0-9]+)_msk$", re.IGNORECASE)
#: folders the images may lie in below the session folder: none (early releases) or the BIDS datatype
_DATATYPE_FOLDERS = {"dwi": {"", "dwi"}, "adc": {"", "dwi"}, "flair": {"", "anat"}}
_EXPECTED_FOLDER = {"dwi": "dwi", "adc": "dwi", "flair": "anat"}
_RELEASE_SUFFIX = {"dwi": "dwi", "adc": "adc", "flair": "FLAIR"}  # as the release names its files
_NAMES = {"dwi": "DWI", "adc": "ADC", "flair": "FLAIR"}


def spec(with_flair: bool) -> DatasetSpec:
    return DatasetSpec(
        converter=PROG,
        channel_names=("DWI", "ADC", "FLAIR") if with_flair else ("DWI", "ADC"),
        labels={"background": 0, "lesion": 1},
        label_map={0: 0, 1: 1},
        description="ISLES 2022 (Hernandez Petzsche et al., Sci Data 2022)."
                    + (" FLAIR resampled onto the DWI grid without registration (approximation)." if with_flair
                       else ""),
        reference="https://isles22.grand-challenge.org/ (data on Zenodo)",
        licence="CC BY 4.0 (check the release you downloaded)",
    )


def discover(root: Path, *, with_flair: bool) -> Discovery:
    """Find every subject (in ``rawdata/`` or directly in ``root``) and its mask under ``derivatives/``."""
    discovery = Discovery(source_roots=[root])
    if not require_dir(root, "ISLES 2022 folder", discovery):
        return discovery
    images, subject_dirs = _images_folder(root, discovery)
    if images is None:
        return discovery
    masks = _find_masks(root, discovery)
    wanted = ("dwi", "adc", "flair") if with_flair else ("dwi", "adc")
    seen: dict[str, Path] = {}
    for subject_dir in subject_dirs:
        case_id = subject_dir.name[4:].lower()
        if case_id in seen:
            discovery.problem(case_id, f"duplicate case id '{case_id}': subject folders {seen[case_id]} and "
                                       f"{subject_dir} differ only in letter case")
            continue
        seen[case_id] = subject_dir
        files = _subject_images(subject_dir, case_id, wanted, discovery)
        sessions = sorted({session for session, _ in files.values()})
        for modality in wanted:
            if modality not in files:
                session = sessions[0] if sessions else "ses-0001"
                expected = (subject_dir / session / _EXPECTED_FOLDER[modality]
                            / f"{subject_dir.name}_{session}_{_RELEASE_SUFFIX[modality]}.nii.gz")
                discovery.problem(case_id, f"case '{case_id}' is missing {_NAMES[modality]}: expected {expected} "
                                           f"(or directly in {subject_dir / session}/)")
        label = masks.pop(case_id, None)
        if not all(m in files for m in wanted):
            continue
        discovery.add_case(SourceCase(
            case_id=case_id,
            channels=tuple(ChannelSource(files[m][1], resample=(m == "flair")) for m in wanted),
            label=label, unlabeled_reason="without a mask in derivatives/"), where=subject_dir)
    for case_id, path in sorted(masks.items()):
        discovery.global_problems.append(f"{path}: mask has no images (no {images}/sub-{case_id}/ folder)")
    return discovery


def _subject_dirs(folder: Path, discovery: Discovery) -> list[Path]:
    """The subject folders in ``folder`` (linked ones too); every link in it that cannot be followed is a problem."""
    folders, _ = list_folder(folder, lambda link: bids_subject(link, folder), discovery)
    return [p for p in folders if p.name.lower().startswith("sub-")]


def _images_folder(root: Path, discovery: Discovery) -> tuple[Path | None, list[Path]]:
    """``rawdata/`` (the BIDS layout), or ``root`` itself where the subject folders lie beside ``derivatives/`` (the
    Zenodo archive), and the subject folders in it; None, and a problem, when neither or both hold subjects."""
    beside = _subject_dirs(root, discovery)  # first: it reports a broken rawdata/ or derivatives/ link
    rawdata = child_dir(root, "rawdata")
    if rawdata is not None and beside:
        discovery.global_problems.append(f"{root}: subject folders both in rawdata/ and directly in it (e.g. "
                                         f"{beside[0]}); keep one of the two layouts")
        return None, []
    if rawdata is not None:
        discovery.layout = f"images in {rawdata}/sub-strokecaseXXXX/ (with a rawdata/ level)"
        return rawdata, _subject_dirs(rawdata, discovery)
    if beside:
        discovery.layout = (f"images in {root}/sub-strokecaseXXXX/ beside derivatives/ (no rawdata/ level, as the "
                            f"Zenodo archive unpacks)")
        return root, beside
    discovery.global_problems.append(f"{root}: no sub-strokecaseXXXX/ subject folders: expected {root}/rawdata/"
                                     f"sub-strokecaseXXXX/ses-0001/... or {root}/sub-strokecaseXXXX/ses-0001/...")
    return None, []


def _subject_images(subject_dir: Path, case_id: str, wanted: tuple[str, ...], discovery: Discovery
                    ) -> dict[str, tuple[str, Path]]:
    """modality -> (session, file) for one subject; duplicates, foreign names and extra sessions are problems.

    Modalities not asked for (FLAIR without --with-flair) are passed over unread, so they cannot fail a case.
    """
    files: dict[str, tuple[str, Path]] = {}
    for path in walk_files(subject_dir, lambda _link: case_id, discovery):
        stem = nifti_stem(path.name, any_case=True)
        if stem is None:
            continue  # BIDS sidecars (.json) and other non-images
        match = _IMAGE.match(stem)
        relative = path.relative_to(subject_dir).parts
        if match is None or len(relative) not in (2, 3) \
                or (len(relative) == 3 and relative[1].lower() not in _DATATYPE_FOLDERS[match.group(3).lower()]):
            discovery.ignored.append(path)
            continue
        subject, session, modality = match.group(1), match.group(2).lower(), match.group(3).lower()
        if modality not in wanted:
            continue
        if subject.lower() != subject_dir.name.lower() or session != relative[0].lower():
            discovery.problem(case_id, f"{path}: file name says {subject}/{match.group(2)} but it lies in "
                                       f"{subject_dir.name}/{relative[0]}")
            continue
        if modality in files:
            discovery.problem(case_id, f"case '{case_id}' has two {_NAMES[modality]} files: {files[modality][1]} "
                                       f"and {path}")
            continue
        files[modality] = (session, path)
    sessions = sorted({session for session, _ in files.values()})
    if len(sessions) > 1:
        discovery.problem(case_id, f"{subject_dir}: more than one session ({sessions}); ISLES 2022 has one per "
                                   f"subject and this converter expects one")
    return files


def _find_masks(root: Path, discovery: Discovery) -> dict[str, Path]:
    """case id -> mask file, from anywhere below derivatives/ (absent folder: no case is annotated).

    A subject folder in derivatives/ says the subject is annotated: one without a mask is a problem of that case,
    not an unannotated case (a mask renamed or lost in the download)."""
    derivatives = child_dir(root, "derivatives")
    if derivatives is None:
        discovery.without_annotations_hint = (f"{root} has no derivatives/ folder (the masks): pass the ISLES 2022 "
                                              f"folder that holds derivatives/ beside the images")
        return {}
    discovery.without_annotations_hint = (f"no ..._msk.nii.gz below {derivatives} belongs to a subject found: pass the "
                                          f"ISLES 2022 folder whose derivatives/ holds the masks")

    def case_of(stem: str) -> str | None:
        match = _MASK.match(stem)
        return match.group(1)[4:].lower() if match else None

    masks = files_by_case(walk_files(derivatives, lambda link: bids_subject(link, derivatives), discovery), case_of,
                          discovery, "masks")
    for folder in sorted(p for p in derivatives.iterdir() if p.is_dir() and p.name.lower().startswith("sub-")):
        case_id = folder.name[4:].lower()
        if case_id not in masks and case_id not in discovery.case_problems:  # not again for a broken mask link
            discovery.problem(case_id, f"{folder}: folder of {case_id}'s mask, but no "
                                       f"{folder.name}_ses-XXXX_msk.nii.gz in it")
    return masks


def convert_isles2022(root: str | Path, options: Options, *, with_flair: bool = False) -> Summary:
    """Convert an ISLES 2022 download folder (the one holding ``derivatives/`` and the subjects, in ``rawdata/``
    or not)."""
    root = source_folder(root)
    options = replace(options, extra={**options.extra, "with_flair": with_flair})
    return convert(spec(with_flair), discover(root, with_flair=with_flair), options, context=f"ISLES 2022 {root}")


def main(argv: list[str] | None = None) -> None:
    command_line(
        argv, prog=PROG, convert_input=convert_isles2022, default_name="ISLES2022", example="-i ISLES-2022/ -d 522",
        description="Convert ISLES 2022 (subject folders, in rawdata/ or not, beside derivatives/) into an nnU-Net raw "
                    "dataset; cases without a mask go to imagesUnlabeled/.",
        input_help="the ISLES 2022 folder holding derivatives/ and the sub-strokecaseXXXX/ folders (directly or in "
                   "rawdata/)",
        flags={"--with-flair": "add FLAIR as channel 2, resampled linearly onto the DWI grid without registration (an "
                               "approximation: FLAIR is not co-registered with DWI); DWI voxels outside the FLAIR's "
                               "field of view are 0 in it, and the summary says how many"})


if __name__ == "__main__":
    main()

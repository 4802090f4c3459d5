"""ATLAS v2.0 (chronic stroke lesions on T1-weighted MRI, MNI space) -> nnU-Net raw dataset.

Release layout (BIDS, after decrypting the ICPSR/INDI archive)::

    ATLAS_2/Training/R001/sub-r001s001/ses-1/anat/sub-r001s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz
    ATLAS_2/Training/R001/sub-r001s001/ses-1/anat/sub-r001s001_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz
    ATLAS_2/Testing/R001/sub-r001s0xx/ses-1/anat/sub-r001s0xx_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz   (no label)

One channel (T1w). A lesion mask lies beside its T1w. The test and generalisation sets come without masks:
their scans go to ``imagesUnlabeled/``. A scan below ``Training/`` without a mask is an error (the
training set is fully annotated, so a missing mask means a broken download); a mask without its T1w too.
All ``*_T1w`` files below the input folder are found, whatever the site folder (``R001`` ...), and matched
case-insensitively; the case id is the subject (``r001s001``), which must be unique. ``Testing/`` alone has
no annotated scan, which nnU-Net cannot train on: it is refused, naming the folder to pass instead.
"""
from __future__ import annotations

import re
from pathlib import Path

from nnunet_mt.dataset_conversion.convert_folder import nifti_stem
from nnunet_mt.dataset_conversion.public.cases import (ChannelSource, DatasetSpec, Discovery, Options, SourceCase,
                                                       require_dir, source_folder)
from nnunet_mt.dataset_conversion.public.command_line import command_line
from nnunet_mt.dataset_conversion.public.convert import convert
from nnunet_mt.dataset_conversion.public.links import bids_subject, child_dir, walk_files
from nnunet_mt.dataset_conversion.public.summary import Summary

PROG = "nnunet_mt_convert_atlas2"
_SPACE = "space-MNI152NLin2009aSym"
_T1W = re.compile(rf"^(sub-[a-z0-9]+)_(ses-[a-z0-9]+)_{_SPACE}_T1w$", re.IGNORECASE)
_MASK = re.compile(rf"^(sub-[a-z0-9]+)_(ses-[a-z0-9]+)_{_SPACE}_label-L_desc-T1lesion_mask$", re.IGNORECASE)

SPEC = DatasetSpec(
    converter=PROG,
    channel_names=("T1w",),
    labels={"background": 0, "lesion": 1},
    label_map={0: 0, 1: 1},
    description="ATLAS v2.0 (Liew et al., Sci Data 2022), T1w in MNI152NLin2009aSym space.",
    reference="https://fcon_1000.projects.nitrc.org/indi/retro/atlas.html",
    licence="ATLAS v2.0 data use agreement (ICPSR / INDI); do not redistribute",
)


def discover(root: Path) -> Discovery:
    """Every MNI T1w below ``root`` is a case; its mask, if any, lies in the same folder."""
    discovery = Discovery(source_roots=[root])
    if not require_dir(root, "ATLAS v2.0 folder", discovery):
        return discovery
    beside_training = root.name.lower() == "testing" and child_dir(root.parent, "Training") is not None
    discovery.without_annotations_hint = (f"pass the folder holding Training/ and Testing/ instead: -i {root.parent}"
                                          if beside_training else "pass the ATLAS_2 folder holding Training/ (the "
                                          "annotated scans) and Testing/")
    t1w: dict[tuple[str, Path], Path] = {}
    masks: dict[tuple[str, Path], Path] = {}
    for path in walk_files(root, lambda link: bids_subject(link, root), discovery):
        stem = nifti_stem(path.name, any_case=True)
        if stem is None:
            continue  # sidecars, metadata tables
        for pattern, found in ((_T1W, t1w), (_MASK, masks)):
            match = pattern.match(stem)
            if match:
                found[(f"{match.group(1)}_{match.group(2)}".lower(), path.parent)] = path
                break
        else:
            if stem.lower().endswith("_mask") and bids_subject(path, root) is not None:
                # a mask is there: ignoring it would file an annotated scan as a test scan
                expected = "_".join(stem.split("_")[:2]) + f"_{_SPACE}_label-L_desc-T1lesion_mask.nii.gz"
                discovery.problem(bids_subject(path, root), f"{path}: a lesion mask whose name does not follow the "
                                                            f"release's (expected {expected})")
            else:
                discovery.ignored.append(path)
    for key, image in sorted(t1w.items(), key=lambda item: str(item[1])):
        case_id = image.name.split("_")[0][4:].lower()
        label = masks.pop(key, None)
        in_training = any(part.lower() == "training" for part in image.relative_to(root).parts[:-1]) \
            or root.name.lower() == "training"
        if label is None and in_training:
            expected = image.parent / image.name.replace("_T1w", "_label-L_desc-T1lesion_mask")
            discovery.problem(case_id, f"{image}: training scan without its lesion mask (expected {expected})")
            continue
        discovery.add_case(SourceCase(case_id=case_id, channels=(ChannelSource(image),), label=label,
                                      unlabeled_reason="without a mask (test / generalisation set)"),
                           where=image)
    for (_, folder), mask in sorted(masks.items(), key=lambda item: str(item[1])):
        discovery.global_problems.append(f"{mask}: lesion mask without its T1w in {folder} (expected a "
                                         f"'..._{_SPACE}_T1w.nii.gz' beside it)")
    return discovery


def convert_atlas2(root: str | Path, options: Options) -> Summary:
    """Convert the ATLAS v2.0 folder (``ATLAS_2``, holding ``Training/`` and ``Testing/``)."""
    root = source_folder(root)
    return convert(SPEC, discover(root), options, context=f"ATLAS v2.0 {root}")


def main(argv: list[str] | None = None) -> None:
    command_line(
        argv, prog=PROG, convert_input=convert_atlas2, default_name="ATLAS2", example="-i ATLAS_2/ -d 531",
        description="Convert ATLAS v2.0 (ATLAS_2/Training, ATLAS_2/Testing) into an nnU-Net raw dataset; scans without "
                    "a lesion mask go to imagesUnlabeled/.",
        input_help="the ATLAS_2 folder (holding Training/ and Testing/)")


if __name__ == "__main__":
    main()

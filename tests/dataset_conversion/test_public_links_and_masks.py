"""No annotated case lost silently: releases reached through links convert as the plain release; a link that
cannot be followed, or a mask the layout promises that cannot be read, is an error for that case (or, with
--skip-invalid, a skipped case), never a case dropped or filed as unannotated."""
from __future__ import annotations

from pathlib import Path

import pytest

from nnunet_mt.dataset_conversion.public.atlas2 import convert_atlas2
from nnunet_mt.dataset_conversion.public.brats import convert_brats2021, convert_msd_brain
from nnunet_mt.dataset_conversion.public.cases import Options
from nnunet_mt.dataset_conversion.public.isles2022 import convert_isles2022
from public_layouts import (ATLAS_SPACE, assert_refused, atlas_case, brats_case, checksums, isles_case,
                            linked_release, msd_task01, same_dataset, write, lesion)


def options(tmp_path: Path, **overrides) -> Options:
    return Options(**{**dict(raw_root=tmp_path / "raw", dataset_id=540, dataset_name="Linked"), **overrides})


def move_and_link(path: Path, elsewhere: Path) -> Path:
    """Move ``path`` to ``elsewhere`` (another disk, say) and leave a link to it in its place."""
    elsewhere.parent.mkdir(parents=True, exist_ok=True)
    path.rename(elsewhere)
    path.symlink_to(elsewhere, target_is_directory=elsewhere.is_dir())
    return elsewhere


def atlas_release(root: Path) -> Path:
    atlas_case(root, "Training", "R001", "r001s001")
    atlas_case(root, "Training", "R001", "r001s002")
    atlas_case(root, "Training", "R002", "r002s001")
    atlas_case(root, "Testing", "R003", "r003s001", with_mask=False)
    return root


def isles_release(root: Path) -> Path:
    for number in (1, 2, 3):
        isles_case(root, number)
    isles_case(root, 4, with_mask=False)
    return root


def brats_release(root: Path) -> Path:
    for number in (0, 2, 3):
        brats_case(root, number)
    brats_case(root, 1001, with_seg=False)
    return root


def anat(root: Path, subset: str, site: str, subject: str) -> Path:
    return root / subset / site / f"sub-{subject}" / "ses-1" / "anat"


# --------------------------------------------------------------------------------------------------------------
# Linked folders and files are followed
# --------------------------------------------------------------------------------------------------------------
def test_atlas_site_folder_through_a_link_is_entered(tmp_path):
    root = atlas_release(tmp_path / "ATLAS_2")
    move_and_link(root / "Training" / "R002", tmp_path / "disk2" / "R002")
    summary = convert_atlas2(root, options(tmp_path))
    assert summary.annotated == ["r001s001", "r001s002", "r002s001"]
    assert summary.unannotated == {"r003s001": "without a mask (test / generalisation set)"}


def test_isles_mask_folder_through_a_link_keeps_the_case_annotated(tmp_path):
    root = isles_release(tmp_path / "ISLES-2022")
    move_and_link(root / "derivatives" / "sub-strokecase0002", tmp_path / "masks" / "sub-strokecase0002")
    move_and_link(root / "rawdata" / "sub-strokecase0003" / "ses-0001" / "dwi", tmp_path / "disk2" / "dwi")
    summary = convert_isles2022(root, options(tmp_path))
    assert summary.annotated == ["strokecase0001", "strokecase0002", "strokecase0003"]
    assert summary.unannotated == {"strokecase0004": "without a mask in derivatives/"}


RELEASES = {
    "ISLES 2022": (isles_release, "ISLES-2022", convert_isles2022,
                   lambda rel: len(rel.parts) == 2 and rel.parts[0] in ("rawdata", "derivatives")),
    "ATLAS v2.0": (atlas_release, "ATLAS_2", convert_atlas2, lambda rel: len(rel.parts) == 2),  # the site folders
    "BraTS 2021": (brats_release, "Training", lambda root, opts: convert_brats2021([root], opts),
                   lambda rel: len(rel.parts) == 1),
    "MSD Task01": (lambda root: msd_task01(root.parent), "Task01_BrainTumour", convert_msd_brain,
                   lambda rel: str(rel) == "imagesTs"),
}


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_a_release_made_of_links_converts_as_the_plain_release(tmp_path, release):
    build, name, convert, is_case_folder = RELEASES[release]
    plain = build(tmp_path / "plain" / name)
    linked = linked_release(plain, tmp_path / "links", is_case_folder)
    assert not [p for p in linked.rglob("*") if p.is_file() and not p.is_symlink()]  # links only
    before = checksums(plain)
    from_plain = convert(plain, options(tmp_path / "from_plain"))
    from_links = convert(linked, options(tmp_path / "from_links"))
    assert from_links.annotated == from_plain.annotated and len(from_plain.annotated) >= 3
    assert from_links.unannotated == from_plain.unannotated and from_plain.unannotated
    assert from_links.skipped == from_plain.skipped == {}
    same_dataset(tmp_path / "from_plain" / "raw" / "Dataset540_Linked", tmp_path / "from_links" / "raw" /
                 "Dataset540_Linked")
    assert checksums(plain) == before


# --------------------------------------------------------------------------------------------------------------
# Links that cannot be followed
# --------------------------------------------------------------------------------------------------------------
def test_brats_dangling_seg_link_is_an_error_not_validation_data(tmp_path):
    training = brats_release(tmp_path / "Training").resolve()
    seg = training / "BraTS2021_00002" / "BraTS2021_00002_seg.nii.gz"
    seg.unlink()
    seg.symlink_to(tmp_path.resolve() / "gone" / "BraTS2021_00002_seg.nii.gz")
    assert_refused(lambda: convert_brats2021([training], options(tmp_path)), training, tmp_path / "raw",
                   [f"{seg}: dangling link to {tmp_path.resolve()}/gone/BraTS2021_00002_seg.nii.gz, which does not "
                    f"exist"])
    summary = convert_brats2021([training], options(tmp_path, skip_invalid=True))
    assert summary.annotated == ["BraTS2021_00000", "BraTS2021_00003"]
    assert summary.unannotated == {"BraTS2021_01001": "without _seg (validation data)"}
    assert list(summary.skipped) == ["BraTS2021_00002"] and "dangling link" in summary.skipped["BraTS2021_00002"][0]
    assert "cases: 4 found = 2 annotated + 1 unannotated + 1 skipped" in summary.format()


def test_dangling_case_folder_and_image_links_are_errors_naming_link_and_target(tmp_path):
    training = brats_release(tmp_path / "Training").resolve()
    case = training / "BraTS2021_00007"
    case.symlink_to("../elsewhere/BraTS2021_00007", target_is_directory=True)  # relative: shown resolved too
    message = assert_refused(lambda: convert_brats2021([training], options(tmp_path)), training, tmp_path / "raw",
                             [f"{case}: dangling link to ../elsewhere/BraTS2021_00007 "
                              f"({tmp_path.resolve()}/elsewhere/BraTS2021_00007), which does not exist"])
    assert "1 problem(s) found" in message
    task = msd_task01(tmp_path / "msd").resolve()
    image = task / "imagesTs" / "BRATS_009.nii.gz"
    image.symlink_to(task / "missing.nii.gz")
    assert_refused(lambda: convert_msd_brain(task, options(tmp_path)), task, tmp_path / "raw",
                   [f"{image}: dangling link to {task}/missing.nii.gz"])
    summary = convert_msd_brain(task, options(tmp_path, skip_invalid=True))
    assert list(summary.skipped) == ["BRATS_009"] and set(summary.unannotated) == {"BRATS_004"}


def test_links_that_loop_are_errors_naming_them(tmp_path):
    root = atlas_release(tmp_path / "ATLAS_2").resolve()
    session = anat(root, "Training", "R001", "r001s002").parent
    loop = session / "anat" / "back"
    loop.symlink_to("..", target_is_directory=True)
    chain = root / "Testing" / "a"
    chain.symlink_to("b")
    (root / "Testing" / "b").symlink_to("a")
    message = assert_refused(lambda: convert_atlas2(root, options(tmp_path)), root, tmp_path / "raw",
                             [f"{loop}: link to .. leads back to {session}, a folder it lies in (a loop); not followed",
                              f"{chain}: link to b ({root}/Testing/b) loops"])
    assert "3 problem(s) found" in message  # a, b and back: each once
    (root / "Testing" / "a").unlink()
    (root / "Testing" / "b").unlink()
    summary = convert_atlas2(root, options(tmp_path, skip_invalid=True))
    assert list(summary.skipped) == ["r001s002"] and summary.annotated == ["r001s001", "r002s001"]


# --------------------------------------------------------------------------------------------------------------
# A mask the layout promises is never dropped
# --------------------------------------------------------------------------------------------------------------
def test_isles_mask_folder_without_its_mask_is_an_error_not_an_unannotated_case(tmp_path):
    root = isles_release(tmp_path / "ISLES-2022").resolve()
    mask = root / "derivatives/sub-strokecase0002/ses-0001/sub-strokecase0002_ses-0001_msk.nii.gz"
    mask.rename(mask.with_name("sub-strokecase0002_ses-0001_msk (1).nii.gz"))  # a renamed download
    assert_refused(lambda: convert_isles2022(root, options(tmp_path)), root, tmp_path / "raw",
                   [f"{root}/derivatives/sub-strokecase0002: folder of strokecase0002's mask, but no "
                    f"sub-strokecase0002_ses-XXXX_msk.nii.gz in it"])
    summary = convert_isles2022(root, options(tmp_path, skip_invalid=True))
    assert list(summary.skipped) == ["strokecase0002"] and "strokecase0002" not in summary.unannotated


def test_atlas_misnamed_mask_beside_a_test_scan_is_an_error(tmp_path):
    root = atlas_release(tmp_path / "ATLAS_2").resolve()
    folder = anat(root, "Testing", "R003", "r003s001")
    odd = write(folder / f"sub-r003s001_ses-1_{ATLAS_SPACE}_label-L_desc-lesion_mask.nii.gz", lesion(3001))
    assert_refused(lambda: convert_atlas2(root, options(tmp_path)), root, tmp_path / "raw",
                   [f"{odd}: a lesion mask whose name does not follow the release's (expected "
                    f"sub-r003s001_ses-1_{ATLAS_SPACE}_label-L_desc-T1lesion_mask.nii.gz)"])

"""nnunet_mt_convert_atlas2 on tiny files in the ATLAS v2.0 layout."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnunet_mt.dataset_conversion.convert_folder import DatasetConversionError
from nnunet_mt.dataset_conversion.public.atlas2 import convert_atlas2, main
from nnunet_mt.dataset_conversion.public.cases import Options
from public_layouts import (ATLAS_SPACE, array, assert_refused, atlas_case, checksums, cli_error, lesion,
                            verify_with_nnunet, write)

DATASET = "Dataset531_ATLAS2"


@pytest.fixture
def atlas(tmp_path: Path) -> Path:
    root = tmp_path / "ATLAS_2"
    atlas_case(root, "Training", "R001", "r001s001")
    atlas_case(root, "Training", "R001", "r001s002")
    atlas_case(root, "Training", "R002", "r002s001")
    atlas_case(root, "Testing", "R001", "r001s010", with_mask=False)
    atlas_case(root, "Testing", "R003", "r003s001", with_mask=False)
    (root / "Training" / "20220425_ATLAS_2.0_MetaData.csv").write_text("subject,site\n")
    return root


def options(tmp_path: Path, **overrides) -> Options:
    return Options(**{**dict(raw_root=tmp_path / "raw", dataset_id=531, dataset_name="ATLAS2"), **overrides})


def test_training_annotated_testing_unlabelled_and_nnunet_integrity(atlas, tmp_path, monkeypatch):
    before = checksums(atlas)
    summary = convert_atlas2(atlas, options(tmp_path))
    out = tmp_path / "raw" / DATASET
    assert summary.annotated == ["r001s001", "r001s002", "r002s001"]
    assert set(summary.unannotated) == {"r001s010", "r003s001"}
    assert sorted(p.name for p in (out / "imagesUnlabeled").iterdir()) == ["r001s010_0000.nii.gz",
                                                                          "r003s001_0000.nii.gz"]
    assert json.loads((out / "dataset.json").read_text())["channel_names"] == {"0": "T1w"}
    np.testing.assert_array_equal(array(out / "labelsTr" / "r002s001.nii.gz"), lesion(2001))
    verify_with_nnunet(out, monkeypatch)
    assert checksums(atlas) == before


def anat(root: Path, subset: str, site: str, subject: str) -> Path:
    return root / subset / site / f"sub-{subject}" / "ses-1" / "anat"


BAD_INPUTS = {
    "training scan without mask": (
        lambda root: (anat(root, "Training", "R001", "r001s002")
                      / f"sub-r001s002_ses-1_{ATLAS_SPACE}_label-L_desc-T1lesion_mask.nii.gz").unlink(),
        ["sub-r001s002_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz: training scan without its lesion mask (expected",
         "sub-r001s002_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz)"]),
    "mask without T1w": (
        lambda root: (anat(root, "Training", "R001", "r001s002") / f"sub-r001s002_ses-1_{ATLAS_SPACE}_T1w.nii.gz").unlink(),
        ["sub-r001s002_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz: lesion mask without its "
         "T1w in"]),
    "duplicate subject": (
        lambda root: atlas_case(root, "Training", "R009", "r001s001"),
        ["duplicate case id 'r001s001': found in", "R001/sub-r001s001/ses-1/anat and in",
         "R009/sub-r001s001/ses-1/anat/sub-r001s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz"]),
    "label value 255": (
        lambda root: write(anat(root, "Training", "R002", "r002s001")
                           / f"sub-r002s001_ses-1_{ATLAS_SPACE}_label-L_desc-T1lesion_mask.nii.gz",
                           lesion(2001) * 255),
        ["label-L_desc-T1lesion_mask.nii.gz: label values [255] are not in the dataset labels (allowed: [0, 1])"]),
    "mask off the T1w grid": (
        lambda root: write(anat(root, "Training", "R002", "r002s001")
                           / f"sub-r002s001_ses-1_{ATLAS_SPACE}_label-L_desc-T1lesion_mask.nii.gz",
                           lesion(2001), origin=(0.0, 0.0, 0.0)),
        ["geometry mismatch between", "_T1w.nii.gz and", "origin (-15.0, -18.0, -40.0) vs (0.0, 0.0, 0.0)"]),
    "truncated file": (
        lambda root: (lambda p: p.write_bytes(p.read_bytes()[:200]))(
            anat(root, "Testing", "R003", "r003s001") / f"sub-r003s001_ses-1_{ATLAS_SPACE}_T1w.nii.gz"),
        ["sub-r003s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz: unreadable or corrupt file"]),
    # only the gzip trailer (CRC and size) cut off: the voxels still read, so only reading to the end tells
    "gzip trailer cut off": (
        lambda root: (lambda p: p.write_bytes(p.read_bytes()[:-4]))(
            anat(root, "Training", "R001", "r001s001") / f"sub-r001s001_ses-1_{ATLAS_SPACE}_T1w.nii.gz"),
        ["sub-r001s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz: truncated or corrupt gzip file (Compressed file "
         "ended before the end-of-stream marker was reached); download it again"]),
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_input_is_reported_with_its_file_and_nothing_is_written(atlas, tmp_path, kind):
    damage, fragments = BAD_INPUTS[kind]
    damage(atlas)
    assert_refused(lambda: convert_atlas2(atlas, options(tmp_path)), atlas, tmp_path / "raw", fragments)


def test_output_inside_the_source_is_refused(atlas, tmp_path):
    with pytest.raises(DatasetConversionError, match="lies inside the source folder"):
        convert_atlas2(atlas, options(tmp_path, raw_root=atlas / "raw"))
    assert not (atlas / "raw").exists()


def test_cli(atlas, tmp_path, capsys):
    main(["-i", str(atlas), "-d", "531", "--raw-root", str(tmp_path / "raw")])
    out = capsys.readouterr().out
    assert "annotated   (imagesTr + labelsTr): 3" in out and "2 without a mask (test / generalisation set)" in out
    main(["-i", str(atlas), "-d", "531", "--raw-root", str(tmp_path / "raw")])
    assert "up to date, nothing written" in capsys.readouterr().out


def test_output_inside_the_source_through_a_symlink_is_refused(atlas, tmp_path):
    (tmp_path / "link").symlink_to(atlas)
    before = checksums(atlas)
    with pytest.raises(DatasetConversionError, match="lies inside the source folder"):
        convert_atlas2(atlas, options(tmp_path, raw_root=tmp_path / "link" / "raw"))
    assert not (atlas / "raw").exists()
    assert checksums(atlas) == before


def test_stale_staging_folder_of_a_killed_run_is_removed(atlas, tmp_path, capsys):
    """A killed run leaves '.Dataset531_ATLAS2.partial-<pid>@<host>-<token>': the next run removes it, says so."""
    import subprocess

    from nnunet_mt.dataset_conversion.staging import HOST_TAG
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = tmp_path / "raw" / f".{DATASET}.partial-{gone.pid}@{HOST_TAG}-0123abcd"
    (stale / "imagesTr").mkdir(parents=True)
    main(["-i", str(atlas), "-d", "531", "--raw-root", str(tmp_path / "raw")])
    assert f"removed {stale}" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [DATASET]


def test_testing_folder_alone_is_refused_and_nothing_is_written(atlas, tmp_path, capsys):
    """Only unannotated scans: nnU-Net's planning would stop on numTraining 0, so the converter stops first."""
    err = cli_error(main, ["-i", str(atlas / "Testing"), "-d", "533", "--raw-root", str(tmp_path / "raw")], capsys)
    assert f"ATLAS v2.0 {(atlas / 'Testing').resolve()}: no annotated case among the 2 found" in err
    assert "nnU-Net needs annotated training cases" in err
    assert f"pass the folder holding Training/ and Testing/ instead: -i {atlas.resolve()}" in err
    assert not (tmp_path / "raw").exists()
    # every annotated scan unreadable and skipped: the same stop
    for subject in ("r001s001", "r001s002", "r002s001"):
        site = "R002" if subject.startswith("r002") else "R001"
        (anat(atlas, "Training", site, subject) / f"sub-{subject}_ses-1_{ATLAS_SPACE}_T1w.nii.gz").write_bytes(b"x")
    assert_refused(lambda: convert_atlas2(atlas, options(tmp_path, skip_invalid=True)), atlas, tmp_path / "raw",
                   ["no annotated case is left after skipping the 3 case(s) with the problems below",
                    "4 problem(s) found", "sub-r002s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz: unreadable or "
                    "corrupt file"])


def test_raw_root_inside_the_source_is_reported_once(atlas, tmp_path, capsys):
    err = cli_error(main, ["-i", str(atlas), "-d", "531", "--raw-root", str(atlas / "raw"), "--annotated", "2"], capsys)
    assert err.count("lies inside the source folder") == 1 and "1 problem(s) found" in err
    assert not (atlas / "raw").exists()
    # a hidden-labels file given inside the source is its own problem
    err = cli_error(main, ["-i", str(atlas), "-d", "531", "--raw-root", str(tmp_path / "raw"), "--annotated", "2",
                           "--hidden-labels-file", str(atlas / "hidden.json")], capsys)
    assert f"hidden labels file {(atlas / 'hidden.json').resolve()} lies inside the source folder" in err
    assert err.count("lies inside the source folder") == 1

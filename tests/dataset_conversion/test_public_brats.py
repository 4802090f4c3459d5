"""nnunet_mt_convert_brats2021 and nnunet_mt_convert_msd_brain on tiny files in their layouts (MSD: 4-D)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnunet_mt.dataset_conversion.public.brats import convert_brats2021, convert_msd_brain, main_brats2021, main_msd
from nnunet_mt.dataset_conversion.public.cases import Options
from public_layouts import (
    PLAN_AND_PREPROCESS_FEW_SAMPLES,
    SHAPE_ZYX,
    SPACING,
    array,
    brats_case,
    assert_refused,
    brats_labels,
    checksums,
    cli_error,
    msd_labels,
    msd_task01,
    msd_volumes,
    read,
    verify_with_nnunet,
    write,
)

REGIONS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}


def options(tmp_path: Path, dataset_id: int, name: str, **overrides) -> Options:
    return Options(**{**dict(raw_root=tmp_path / "raw", dataset_id=dataset_id, dataset_name=name), **overrides})


@pytest.fixture
def brats(tmp_path: Path) -> dict[str, Path]:
    training = tmp_path / "RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021"
    validation = tmp_path / "RSNA_ASNR_MICCAI_BraTS2021_ValidationData"
    for number in (0, 2, 3):
        brats_case(training, number)
    brats_case(validation, 1001, with_seg=False)
    return {"training": training, "validation": validation}


# --------------------------------------------------------------------------------------------------------------
# BraTS 2021
# --------------------------------------------------------------------------------------------------------------
def test_brats_region_labels_as_nnunet_dataset137(brats, tmp_path, monkeypatch):
    before = [checksums(brats["training"]), checksums(brats["validation"])]
    summary = convert_brats2021([brats["training"], brats["validation"]], options(tmp_path, 537, "BraTS2021"))
    assert [checksums(brats["training"]), checksums(brats["validation"])] == before
    out = tmp_path / "raw" / "Dataset537_BraTS2021"
    assert summary.annotated == ["BraTS2021_00000", "BraTS2021_00002", "BraTS2021_00003"]
    assert summary.unannotated == {"BraTS2021_01001": "without _seg (validation data)"}
    dataset_json = json.loads((out / "dataset.json").read_text())
    assert dataset_json["labels"] == REGIONS and dataset_json["regions_class_order"] == [1, 2, 3]
    assert dataset_json["channel_names"] == {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
    source = brats_labels(2)
    converted = array(out / "labelsTr" / "BraTS2021_00002.nii.gz")
    # Dataset137: 2 (oedema) -> 1, 1 (necrosis) -> 2, 4 (enhancing) -> 3
    for src, dst in ((0, 0), (2, 1), (1, 2), (4, 3)):
        assert np.all(converted[source == src] == dst)
    # channel 0 is T1: the source's second file in BraTS order
    np.testing.assert_array_equal(array(out / "imagesTr" / "BraTS2021_00002_0000.nii.gz"),
                                  array(brats["training"] / "BraTS2021_00002" / "BraTS2021_00002_t1.nii.gz"))
    assert sorted(p.name for p in (out / "imagesUnlabeled").iterdir()) == [
        f"BraTS2021_01001_{c:04d}.nii.gz" for c in range(4)]
    verify_with_nnunet(out, monkeypatch)


def test_brats_whole_tumour_is_binary(brats, tmp_path, monkeypatch):
    convert_brats2021([brats["training"]], options(tmp_path, 538, "BraTS2021WT"), whole_tumour=True)
    out = tmp_path / "raw" / "Dataset538_BraTS2021WT"
    dataset_json = json.loads((out / "dataset.json").read_text())
    assert dataset_json["labels"] == {"background": 0, "lesion": 1} and "regions_class_order" not in dataset_json
    np.testing.assert_array_equal(array(out / "labelsTr" / "BraTS2021_00000.nii.gz"), brats_labels(0) > 0)
    verify_with_nnunet(out, monkeypatch)


def case_file(brats: dict[str, Path], number: int, kind: str) -> Path:
    case = f"BraTS2021_{number:05d}"
    return brats["training"] / case / f"{case}_{kind}.nii.gz"


BRATS_BAD = {
    "missing t1ce": (lambda b: case_file(b, 2, "t1ce").unlink(),
                     ["case 'BraTS2021_00002' is missing t1ce: expected",
                      "BraTS2021_00002/BraTS2021_00002_t1ce.nii.gz"]),
    "label value 3": (lambda b: write(case_file(b, 3, "seg"), brats_labels(3) * (brats_labels(3) != 4) + 3 * (brats_labels(3) == 4)),
                      ["BraTS2021_00003_seg.nii.gz: label values [3] are not in the dataset labels (allowed: [0, 1, 2, 4])"]),
    "grid mismatch": (lambda b: write(case_file(b, 0, "t2"), np.zeros(SHAPE_ZYX, np.float32), spacing=(1.0, 1.5, 5.0)),
                      ["geometry mismatch between", "BraTS2021_00000_t1.nii.gz and",
                       "BraTS2021_00000_t2.nii.gz: spacing (1.5, 1.5, 5.0) vs (1.0, 1.5, 5.0)"]),
    "duplicate case": (lambda b: brats_case(b["validation"], 3),
                       ["duplicate case id 'BraTS2021_00003': found in", "TrainingData_16July2021/BraTS2021_00003 and in",
                        "ValidationData/BraTS2021_00003"]),
    # a mask is there under another name: not validation data (an unannotated case) but an error
    "misnamed seg": (lambda b: case_file(b, 2, "seg").rename(case_file(b, 2, "seg").with_name(
                         "BraTS2021_00002_seg (1).nii.gz")),
                     ["BraTS2021_00002_seg (1).nii.gz: a segmentation whose name does not follow the release's "
                      "(expected", "BraTS2021_00002/BraTS2021_00002_seg.nii.gz)"]),
    "NaN voxels": (lambda b: write(case_file(b, 0, "flair"), np.full(SHAPE_ZYX, np.nan, np.float32)),
                   ["BraTS2021_00000_flair.nii.gz: 7680 non-finite voxel(s) (7680 NaN, 0 Inf)"]),
}


@pytest.mark.parametrize("kind", sorted(BRATS_BAD))
def test_brats_bad_input_is_reported_with_its_file(brats, tmp_path, kind):
    damage, fragments = BRATS_BAD[kind]
    damage(brats)
    roots = [brats["training"], brats["validation"]]
    assert_refused(lambda: convert_brats2021(roots, options(tmp_path, 537, "BraTS2021")), tmp_path, tmp_path / "raw",
                   fragments)


def test_brats_validation_folder_alone_is_refused_and_nothing_is_written(brats, tmp_path, capsys):
    err = cli_error(main_brats2021, ["-i", str(brats["validation"]), "-d", "537", "--raw-root", str(tmp_path / "raw")],
                    capsys)
    assert f"BraTS 2021 {brats['validation'].resolve()}: no annotated case among the 1 found" in err
    assert "nnU-Net needs annotated training cases" in err
    assert f"give the training data folder together with it: -i {brats['training'].resolve()} " \
           f"{brats['validation'].resolve()}" in err
    assert not (tmp_path / "raw").exists()


def test_brats_parent_folder_suggests_the_folders_holding_cases(brats, tmp_path):
    training, validation = (brats[k].resolve() for k in ("training", "validation"))
    assert_refused(lambda: convert_brats2021([tmp_path], options(tmp_path / "out", 537, "BraTS2021")), tmp_path,
                   tmp_path / "out", [f"{tmp_path.resolve()}: no BraTS2021_XXXXX case folders in it, but found some in "
                                      f"{training.name}/ and {validation.name}/: pass one or more of them with -i, e.g. "
                                      f"-i {training} {validation}"])

def test_deepmedic_refuses_region_based_dataset(brats, tmp_path):
    """DeepMedic trains softmax cross-entropy: region targets cannot work, so it stops and names --whole-tumour."""
    from conftest import NNUNetEnv

    env = NNUNetEnv(tmp_path / "nnunet")
    convert_brats2021([brats["training"]], options(env.raw.parent, 537, "BraTS2021"))
    env.run("python", "-c", PLAN_AND_PREPROCESS_FEW_SAMPLES, "-d", "537", "-c", "3d_fullres", "-npfp", "1", "-np", "1",
            "--no_pp")
    proc = env.run("nnUNetv2_train", "537", "3d_fullres", "0", "-tr", "nnUNetTrainerDeepMedic_tiny", "-device", "cpu",
                   check=False)
    assert proc.returncode != 0
    assert "defines region-based labels" in proc.stderr and "--whole-tumour" in proc.stderr


# --------------------------------------------------------------------------------------------------------------
# MSD Task01_BrainTumour
# --------------------------------------------------------------------------------------------------------------
def test_msd_4d_images_are_split_and_imagests_goes_unlabelled(tmp_path, monkeypatch):
    task = msd_task01(tmp_path / "msd")
    before = checksums(task)
    summary = convert_msd_brain(task, options(tmp_path, 501, "BrainTumour"))
    out = tmp_path / "raw" / "Dataset501_BrainTumour"
    assert summary.annotated == ["BRATS_001", "BRATS_002", "BRATS_003"]
    assert summary.unannotated == {"BRATS_004": "from imagesTs (no labels)"}
    for c in range(4):
        channel = read(out / "imagesTr" / f"BRATS_002_{c:04d}.nii.gz")
        assert channel.GetDimension() == 3 and channel.GetSpacing() == pytest.approx(SPACING)
        np.testing.assert_array_equal(array(out / "imagesTr" / f"BRATS_002_{c:04d}.nii.gz"), msd_volumes(2)[c])
    assert sorted(p.name for p in (out / "imagesUnlabeled").iterdir()) == [f"BRATS_004_{c:04d}.nii.gz" for c in range(4)]
    dataset_json = json.loads((out / "dataset.json").read_text())
    assert dataset_json["labels"] == REGIONS and dataset_json["regions_class_order"] == [1, 2, 3]
    assert dataset_json["channel_names"] == {"0": "FLAIR", "1": "T1w", "2": "T1gd", "3": "T2w"}
    np.testing.assert_array_equal(array(out / "labelsTr" / "BRATS_001.nii.gz"), msd_labels(1))
    verify_with_nnunet(out, monkeypatch)
    assert checksums(task) == before


def test_msd_whole_tumour(tmp_path, monkeypatch):
    task = msd_task01(tmp_path / "msd")
    convert_msd_brain(task, options(tmp_path, 502, "BrainTumourWT"), whole_tumour=True)
    out = tmp_path / "raw" / "Dataset502_BrainTumourWT"
    np.testing.assert_array_equal(array(out / "labelsTr" / "BRATS_003.nii.gz"), msd_labels(3) > 0)
    assert json.loads((out / "dataset.json").read_text())["labels"] == {"background": 0, "lesion": 1}
    verify_with_nnunet(out, monkeypatch)


MSD_BAD = {
    "three volumes": (lambda t: write(t / "imagesTr" / "BRATS_002.nii.gz", msd_volumes(2)[:3]),
                      ["imagesTr/BRATS_002.nii.gz: expected 4 volumes (channels) along the 4th axis, found 3"]),
    "3-D image": (lambda t: write(t / "imagesTs" / "BRATS_004.nii.gz", msd_volumes(4)[0]),
                  ["imagesTs/BRATS_004.nii.gz: expected a 4-D image, found 3-D of size (20, 24, 16)"]),
    "label off grid": (lambda t: write(t / "labelsTr" / "BRATS_003.nii.gz", msd_labels(3), spacing=(1.5, 1.5, 2.5)),
                       ["geometry mismatch between", "imagesTr/BRATS_003.nii.gz and",
                        "labelsTr/BRATS_003.nii.gz: spacing (1.5, 1.5, 5.0) vs (1.5, 1.5, 2.5)"]),
    "label value 4": (lambda t: write(t / "labelsTr" / "BRATS_001.nii.gz", msd_labels(1) + (msd_labels(1) == 3)),
                      ["labelsTr/BRATS_001.nii.gz: label values [4] are not in the dataset labels (allowed: [0, 1, 2, 3])"]),
    "image without label": (lambda t: (t / "labelsTr" / "BRATS_002.nii.gz").unlink(),
                            ["imagesTr/BRATS_002.nii.gz: training image without label (expected",
                             "labelsTr/BRATS_002.nii.gz)"]),
    "same case in imagesTr and imagesTs": (lambda t: write(t / "imagesTs" / "BRATS_001.nii.gz", msd_volumes(1)),
                                           ["duplicate case id 'BRATS_001': found in", "imagesTs/BRATS_001.nii.gz"]),
}


@pytest.mark.parametrize("kind", sorted(MSD_BAD))
def test_msd_bad_input_is_reported_with_its_file(tmp_path, kind):
    task = msd_task01(tmp_path / "msd")
    damage, fragments = MSD_BAD[kind]
    damage(task)
    assert_refused(lambda: convert_msd_brain(task, options(tmp_path, 501, "BrainTumour")), task, tmp_path / "raw",
                   fragments)


def test_clis(brats, tmp_path, capsys):
    task = msd_task01(tmp_path / "msd")
    main_msd(["-i", str(task), "-d", "501", "--raw-root", str(tmp_path / "raw"), "--whole-tumour"])
    assert "1 from imagesTs (no labels)" in capsys.readouterr().out
    main_brats2021(["-i", str(brats["training"]), str(brats["validation"]), "-d", "537", "--raw-root",
                    str(tmp_path / "raw"), "--annotated", "1"])
    out = capsys.readouterr().out
    assert "annotated   (imagesTr + labelsTr): 1" in out and "2 with the label hidden (--annotated 1 --seed 0)" in out
    assert "expected imagesTr/ and labelsTr/ folders" in cli_error(
        main_msd, ["-i", str(tmp_path), "-d", "509", "--raw-root", str(tmp_path / "raw")], capsys)

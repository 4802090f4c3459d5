"""nnunet_mt_convert_isles2022 on tiny files in the ISLES 2022 layouts, and a tiny train + predict on the result."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mt.dataset_conversion.convert_folder import DatasetConversionError
from nnunet_mt.dataset_conversion.public.common import RECORD_FILE, Options
from nnunet_mt.dataset_conversion.public.isles2022 import convert_isles2022, main
from public_layouts import (PLAN_AND_PREPROCESS_FEW_SAMPLES, SPACING, array, checksums, isles_case, lesion, read,
                            verify_with_nnunet, write)

DATASET = "Dataset522_ISLES2022"


@pytest.fixture
def isles(tmp_path: Path) -> Path:
    """Five subjects covering the release variants; strokecase0005 has no mask."""
    root = tmp_path / "ISLES-2022"
    isles_case(root, 1)                                   # BIDS tree, adc / FLAIR
    isles_case(root, 2, adc="ADC", flair="flair")         # other letter case
    isles_case(root, 3, flat=True)                        # early release: flat ses-0001/
    isles_case(root, 4, flat=True, adc="ADC", flair="flair")
    isles_case(root, 5, with_mask=False)
    return root


def options(tmp_path: Path, **overrides) -> Options:
    values = dict(raw_root=tmp_path / "raw", dataset_id=522, dataset_name="ISLES2022")
    values.update(overrides)
    return Options(**values)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_all_release_variants_convert_and_pass_nnunet_integrity_check(isles, tmp_path, monkeypatch):
    before = checksums(isles)
    summary = convert_isles2022(isles, options(tmp_path))
    out = tmp_path / "raw" / DATASET
    assert summary.dataset_dir == out
    assert summary.annotated == [f"strokecase{i:04d}" for i in range(1, 5)]
    assert summary.unannotated == {"strokecase0005": "without a mask in derivatives/"}
    assert names(out / "imagesTr") == sorted(f"strokecase{i:04d}_{c:04d}.nii.gz" for i in range(1, 5) for c in (0, 1))
    assert names(out / "labelsTr") == [f"strokecase{i:04d}.nii.gz" for i in range(1, 5)]
    assert names(out / "imagesUnlabeled") == ["strokecase0005_0000.nii.gz", "strokecase0005_0001.nii.gz"]
    dataset_json = json.loads((out / "dataset.json").read_text())
    assert dataset_json["channel_names"] == {"0": "DWI", "1": "ADC"}
    assert dataset_json["labels"] == {"background": 0, "lesion": 1} and dataset_json["numTraining"] == 4
    # DWI and ADC exactly as in the source, the mask on their grid
    src = isles / "rawdata" / "sub-strokecase0002" / "ses-0001" / "dwi"
    np.testing.assert_array_equal(array(out / "imagesTr" / "strokecase0002_0001.nii.gz"),
                                  array(src / "sub-strokecase0002_ses-0001_ADC.nii.gz"))
    np.testing.assert_array_equal(array(out / "labelsTr" / "strokecase0003.nii.gz"), lesion(3))
    assert read(out / "labelsTr" / "strokecase0003.nii.gz").GetSpacing() == pytest.approx(SPACING)
    text = summary.format()
    assert "annotated   (imagesTr + labelsTr): 4" in text and "1 without a mask in derivatives/" in text
    assert "skipped: 0" in text
    verify_with_nnunet(out, monkeypatch)
    assert checksums(isles) == before


def test_with_flair_resamples_onto_the_dwi_grid(isles, tmp_path, monkeypatch):
    convert_isles2022(isles, options(tmp_path), with_flair=True)
    out = tmp_path / "raw" / DATASET
    dwi, flair = read(out / "imagesTr" / "strokecase0001_0000.nii.gz"), read(out / "imagesTr" / "strokecase0001_0002.nii.gz")
    assert flair.GetSize() == dwi.GetSize() and flair.GetSpacing() == pytest.approx(dwi.GetSpacing())
    assert flair.GetOrigin() == pytest.approx(dwi.GetOrigin())
    # the source FLAIR is (physical x + 100) on its own grid: linear resampling must reproduce it on the DWI grid
    x = np.array([dwi.TransformIndexToPhysicalPoint((i, 0, 0))[0] for i in range(dwi.GetSize()[0])])
    np.testing.assert_allclose(sitk.GetArrayFromImage(flair), np.broadcast_to(x + 100, flair.GetSize()[::-1]),
                               atol=1e-3)
    dataset_json = json.loads((out / "dataset.json").read_text())
    assert dataset_json["channel_names"] == {"0": "DWI", "1": "ADC", "2": "FLAIR"}
    assert "approximation" in dataset_json["description"]
    verify_with_nnunet(out, monkeypatch)


def test_annotated_subset_hides_labels_outside_the_dataset(isles, tmp_path):
    summary = convert_isles2022(isles, options(tmp_path, annotated=2, seed=0))
    out = tmp_path / "raw" / DATASET
    assert len(summary.annotated) == 2 and len(names(out / "labelsTr")) == 2
    hidden = sorted(set(f"strokecase{i:04d}" for i in range(1, 5)) - set(summary.annotated))
    assert {k for k, v in summary.unannotated.items() if "hidden" in v} == set(hidden)
    assert names(out / "imagesUnlabeled") == sorted(f"{c}_{i:04d}.nii.gz" for c in [*hidden, "strokecase0005"]
                                                    for i in (0, 1))
    hidden_file = tmp_path / "raw" / f"{DATASET}.hidden_labels.json"
    assert summary.hidden_labels_file == hidden_file and not hidden_file.is_relative_to(out)
    listed = json.loads(hidden_file.read_text())["hidden_labels"]
    assert sorted(listed) == hidden and all(Path(p).is_file() for p in listed.values())
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 2
    # the same seed draws the same cases; the draw is nested across counts
    again = convert_isles2022(isles, options(tmp_path / "other", annotated=2, seed=0))
    assert again.annotated == summary.annotated
    three = convert_isles2022(isles, options(tmp_path / "three", annotated=3, seed=0))
    assert set(summary.annotated) <= set(three.annotated)
    with pytest.raises(DatasetConversionError, match=r"--annotated 9: only 4 valid annotated case"):
        convert_isles2022(isles, options(tmp_path / "nine", annotated=9))
    with pytest.raises(DatasetConversionError, match="must not see the hidden labels"):
        convert_isles2022(isles, options(tmp_path / "inside", annotated=2,
                                         hidden_labels_file=tmp_path / "inside" / "raw" / DATASET / "h.json"))


def test_rerun_is_idempotent_and_changed_sources_need_overwrite(isles, tmp_path):
    convert_isles2022(isles, options(tmp_path))
    out = tmp_path / "raw" / DATASET
    written = checksums(out)
    again = convert_isles2022(isles, options(tmp_path))
    assert again.up_to_date and "up to date" in again.format() and again.annotated == [
        f"strokecase{i:04d}" for i in range(1, 5)]
    assert checksums(out) == written  # not a byte or an mtime changed
    assert (out / RECORD_FILE).is_file()
    # another option is another dataset: refused without --overwrite, then replaced
    with pytest.raises(DatasetConversionError, match="already exists"):
        convert_isles2022(isles, options(tmp_path), with_flair=True)
    assert checksums(out) == written
    convert_isles2022(isles, options(tmp_path, overwrite=True), with_flair=True)
    assert "strokecase0001_0002.nii.gz" in names(out / "imagesTr")
    assert not [p for p in (tmp_path / "raw").iterdir() if p.name.startswith(".")]  # no staging left


BAD_INPUTS = {
    "missing ADC": (lambda root: (root / "rawdata/sub-strokecase0001/ses-0001/dwi/sub-strokecase0001_ses-0001_adc.nii.gz"
                                  ).unlink(),
                    ["case 'strokecase0001' is missing ADC: expected",
                     "sub-strokecase0001/ses-0001/dwi/sub-strokecase0001_ses-0001_adc.nii.gz"]),
    "grid mismatch": (lambda root: write(root / "rawdata/sub-strokecase0002/ses-0001/dwi/sub-strokecase0002_ses-0001_ADC.nii.gz",
                                         np.zeros((16, 24, 20), np.float32), spacing=(1.5, 1.5, 4.0)),
                      ["geometry mismatch between", "sub-strokecase0002_ses-0001_dwi.nii.gz and",
                       "sub-strokecase0002_ses-0001_ADC.nii.gz: spacing (1.5, 1.5, 5.0) vs (1.5, 1.5, 4.0)"]),
    "label value": (lambda root: write(root / "derivatives/sub-strokecase0003/ses-0001/sub-strokecase0003_ses-0001_msk.nii.gz",
                                       lesion(3) * 2),
                    ["sub-strokecase0003_ses-0001_msk.nii.gz: label values [2] are not in the dataset labels "
                     "(allowed: [0, 1])"]),
    "duplicate modality": (lambda root: write(root / "rawdata/sub-strokecase0001/ses-0001/dwi/sub-strokecase0001_ses-0001_ADC.nii.gz",
                                              np.zeros((16, 24, 20), np.float32)),
                           ["case 'strokecase0001' has two ADC files:"]),
    "duplicate case id": (lambda root: isles_case(root / "_tmp", 1) and (root / "_tmp/rawdata/sub-strokecase0001").rename(
                              root / "rawdata/sub-StrokeCase0001"),
                          ["duplicate case id 'strokecase0001': subject folders", "differ only in letter case"]),
    "unreadable": (lambda root: (root / "rawdata/sub-strokecase0004/ses-0001/sub-strokecase0004_ses-0001_dwi.nii.gz"
                                 ).write_bytes(b"not a nifti"),
                   ["sub-strokecase0004_ses-0001_dwi.nii.gz: unreadable or corrupt file"]),
    "orphan mask": (lambda root: write(root / "derivatives/sub-strokecase0009/ses-0001/sub-strokecase0009_ses-0001_msk.nii.gz",
                                       lesion(9)),
                    ["sub-strokecase0009_ses-0001_msk.nii.gz: mask has no images"]),
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_input_is_reported_with_its_file_and_nothing_is_written(isles, tmp_path, kind):
    damage, fragments = BAD_INPUTS[kind]
    damage(isles)
    before = checksums(isles)
    with pytest.raises(DatasetConversionError) as info:
        convert_isles2022(isles, options(tmp_path))
    for fragment in fragments:
        assert fragment in str(info.value)
    assert checksums(isles) == before
    assert not (tmp_path / "raw").exists() or not list((tmp_path / "raw").iterdir())


def test_skip_invalid_converts_the_rest_and_says_why(isles, tmp_path):
    BAD_INPUTS["missing ADC"][0](isles)
    summary = convert_isles2022(isles, options(tmp_path, skip_invalid=True))
    assert list(summary.skipped) == ["strokecase0001"]
    assert "missing ADC" in summary.skipped["strokecase0001"][0]
    assert summary.annotated == ["strokecase0002", "strokecase0003", "strokecase0004"]
    assert "skipped: 1" in summary.format() and "strokecase0001: case 'strokecase0001' is missing ADC" in summary.format()


def test_flair_required_only_when_requested(isles, tmp_path):
    for path in isles.rglob("*"):
        if path.name.lower().endswith("_flair.nii.gz") and "0002" in path.name:
            path.unlink()
    # FLAIR is not read unless asked for: a missing one, or a second one, cannot fail a DWI + ADC conversion
    write(isles / "rawdata/sub-strokecase0003/ses-0001/sub-strokecase0003_ses-0001_flair.nii.gz",
          np.zeros((2, 2, 2), np.float32))
    convert_isles2022(isles, options(tmp_path))
    with pytest.raises(DatasetConversionError, match="case 'strokecase0002' is missing FLAIR: expected .*anat"):
        convert_isles2022(isles, options(tmp_path / "flair"), with_flair=True)


def test_cli_prints_summary_and_errors_exit_2(isles, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    main(["-i", str(isles), "-d", "522", "--annotated", "3", "--seed", "1"])
    out = capsys.readouterr().out
    assert "wrote" in out and "annotated   (imagesTr + labelsTr): 3" in out and "hidden labels listed in" in out
    with pytest.raises(SystemExit) as info:
        main(["-i", str(tmp_path / "nowhere"), "-d", "523"])
    assert info.value.code == 2
    assert "nowhere does not exist or is not a directory" in capsys.readouterr().err


def test_tiny_train_and_predict_on_converted_isles(isles, tmp_path):
    """Download folder -> nnunet_mt_convert_isles2022 -> plan and preprocess, train, predict the unlabelled case."""
    from conftest import NNUNetEnv

    isles_case(isles, 6)  # 5 annotated subjects: nnU-Net's 5-fold split validates fold 0 on one
    env = NNUNetEnv(tmp_path / "nnunet")
    env.run("nnunet_mt_convert_isles2022", "-i", str(isles), "-d", "522")
    # nnU-Net's integrity check itself runs in the other tests (in-process); here it would only add a worker spawn
    env.run("python", "-c", PLAN_AND_PREPROCESS_FEW_SAMPLES, "-d", "522", "-c", "3d_fullres", "-npfp", "1", "-np", "1")
    env.run("nnUNetv2_train", "522", "3d_fullres", "0", "-tr", "nnUNetTrainerDeepMedic_tiny", "-device", "cpu",
            extra_env={"nnUNet_n_proc_DA": "0"})
    pred = tmp_path / "pred"
    env.run("nnUNetv2_predict", "-i", str(env.raw / DATASET / "imagesUnlabeled"), "-o", str(pred), "-d", "522",
            "-c", "3d_fullres", "-f", "0", "-tr", "nnUNetTrainerDeepMedic_tiny", "-chk", "checkpoint_final.pth",
            "-device", "cpu", "-npp", "0", "-nps", "0")  # sequential: no worker processes to spawn
    predicted = read(pred / "strokecase0005.nii.gz")
    source = read(isles / "rawdata/sub-strokecase0005/ses-0001/dwi/sub-strokecase0005_ses-0001_dwi.nii.gz")
    assert predicted.GetSize() == source.GetSize()
    assert set(np.unique(sitk.GetArrayFromImage(predicted))) <= {0, 1}

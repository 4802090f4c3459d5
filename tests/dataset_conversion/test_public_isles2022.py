"""nnunet_mt_convert_isles2022 on tiny files in the ISLES 2022 layouts, and a tiny train + predict on the result."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mt.dataset_conversion.convert_folder import DatasetConversionError
from nnunet_mt.dataset_conversion.public.cases import Options
from nnunet_mt.dataset_conversion.public.isles2022 import convert_isles2022, main
from nnunet_mt.dataset_conversion.rerun_record import RECORD_FILE
from public_layouts import (FLAIR_ORIGIN, PLAN_AND_PREPROCESS_FEW_SAMPLES, SPACING, array, assert_refused, checksums,
                            cli_error, isles_case, lesion, read, verify_with_nnunet, write)

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


def test_overwrite_replaces_or_removes_the_hidden_labels_file_of_the_earlier_run(isles, tmp_path):
    default, custom = tmp_path / "raw" / f"{DATASET}.hidden_labels.json", tmp_path / "elsewhere" / "hidden.json"
    convert_isles2022(isles, options(tmp_path, annotated=2))
    assert len(json.loads(default.read_text())["hidden_labels"]) == 2
    summary = convert_isles2022(isles, options(tmp_path, overwrite=True))
    assert summary.hidden_labels_file is None and len(names(tmp_path / "raw" / DATASET / "labelsTr")) == 4
    assert not default.exists()  # it listed cases whose labels are in labelsTr now
    assert f"removed {default}: the hidden labels of the dataset replaced" in summary.format()
    convert_isles2022(isles, options(tmp_path, overwrite=True, annotated=2, hidden_labels_file=custom))
    assert custom.is_file() and not default.exists()
    convert_isles2022(isles, options(tmp_path, overwrite=True, annotated=3))
    assert not custom.exists() and len(json.loads(default.read_text())["hidden_labels"]) == 1
    # a file of that name listing another dataset's labels is not this converter's to remove
    default.write_text(json.dumps({"dataset": "/somewhere/else", "hidden_labels": {}}))
    convert_isles2022(isles, options(tmp_path, overwrite=True))
    assert default.is_file()


def test_a_damaged_output_is_rewritten_and_foreign_files_refused(isles, tmp_path, monkeypatch):
    convert_isles2022(isles, options(tmp_path))
    out = (tmp_path / "raw" / DATASET).resolve()
    contents = {name: sha for name, (sha, _) in checksums(out).items() if name != RECORD_FILE}
    removed, changed = out / "labelsTr" / "strokecase0002.nii.gz", out / "imagesTr" / "strokecase0003_0001.nii.gz"
    removed.unlink()
    write(changed, np.zeros((16, 24, 20), np.float32))
    summary = convert_isles2022(isles, options(tmp_path))
    assert not summary.up_to_date
    text = summary.format()
    assert f"rewrote {out}: 2 of its files changed since the conversion wrote them" in text
    assert f"{removed}: removed" in text and f"{changed}: size changed from" in text
    assert {name: sha for name, (sha, _) in checksums(out).items() if name != RECORD_FILE} == contents
    verify_with_nnunet(out, monkeypatch)
    assert convert_isles2022(isles, options(tmp_path)).up_to_date
    # a file the conversion did not write may be the user's: not deleted by a rewrite, the rerun is refused
    (out / "labelsTr" / "strokecase0001.nii.gz").unlink()
    foreign = out / "imagesTr" / "mine.nii.gz"
    foreign.write_bytes(b"someone's file")
    with pytest.raises(DatasetConversionError) as info:
        convert_isles2022(isles, options(tmp_path))
    assert f"output dataset folder {out} holds files its conversion did not write:" in str(info.value)
    assert f"{foreign}: added" in str(info.value) and "move them out of it, or pass --overwrite" in str(info.value)
    assert foreign.read_bytes() == b"someone's file"


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
    assert_refused(lambda: convert_isles2022(isles, options(tmp_path)), isles, tmp_path / "raw", fragments)


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
    with pytest.raises(DatasetConversionError) as info:
        convert_isles2022(isles, options(tmp_path / "flair"), with_flair=True)
    # named as the release names it (anat/..._FLAIR), not in the lower case of the pattern
    expected = isles / "rawdata/sub-strokecase0002/ses-0001/anat/sub-strokecase0002_ses-0001_FLAIR.nii.gz"
    assert f"case 'strokecase0002' is missing FLAIR: expected {expected} (or directly in" in str(info.value)


def test_cli_prints_summary_and_errors_exit_2(isles, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    main(["-i", str(isles), "-d", "522", "--annotated", "3", "--seed", "1"])
    out = capsys.readouterr().out
    assert "wrote" in out and "annotated   (imagesTr + labelsTr): 3" in out and "hidden labels listed in" in out
    assert "nowhere does not exist or is not a directory" in cli_error(main, ["-i", str(tmp_path / "nowhere"), "-d",
                                                                             "523"], capsys)



def test_zenodo_layout_without_rawdata_converts_like_the_bids_one(tmp_path):
    """The Zenodo archive unpacks to ISLES-2022/sub-strokecaseXXXX/ beside derivatives/, with no rawdata/ level."""
    bids, zenodo = tmp_path / "bids" / "ISLES-2022", tmp_path / "zenodo" / "ISLES-2022"
    for root, rawdata in ((bids, True), (zenodo, False)):
        isles_case(root, 1, rawdata=rawdata)
        isles_case(root, 2, flat=True, adc="ADC", rawdata=rawdata)
        isles_case(root, 3, with_mask=False, rawdata=rawdata)
    before = checksums(zenodo)
    from_bids = convert_isles2022(bids, options(tmp_path / "from_bids"))
    from_zenodo = convert_isles2022(zenodo, options(tmp_path / "from_zenodo"), with_flair=True)
    assert from_zenodo.annotated == from_bids.annotated == ["strokecase0001", "strokecase0002"]
    assert from_zenodo.unannotated == from_bids.unannotated == {"strokecase0003": "without a mask in derivatives/"}
    a, b = tmp_path / "from_bids" / "raw" / DATASET, tmp_path / "from_zenodo" / "raw" / DATASET
    for folder in ("imagesTr", "labelsTr", "imagesUnlabeled"):
        assert set(names(a / folder)) <= set(names(b / folder))  # b also has FLAIR (_0002)
        for name in names(a / folder):
            np.testing.assert_array_equal(array(a / folder / name), array(b / folder / name))
    assert "strokecase0003_0002.nii.gz" in names(b / "imagesUnlabeled")
    assert f"layout: images in {zenodo.resolve()}/sub-strokecaseXXXX/ beside derivatives/ (no rawdata/ level" \
        in from_zenodo.format()
    assert f"layout: images in {bids.resolve()}/rawdata/sub-strokecaseXXXX/ (with a rawdata/ level)" \
        in from_bids.format()
    assert checksums(zenodo) == before


def test_subjects_both_in_rawdata_and_beside_it_are_refused(isles, tmp_path):
    isles_case(isles, 7, rawdata=False)
    with pytest.raises(DatasetConversionError) as info:
        convert_isles2022(isles, options(tmp_path))
    assert f"{isles.resolve()}: subject folders both in rawdata/ and directly in it (e.g. {isles.resolve()}" \
           f"/sub-strokecase0007)" in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetConversionError) as info:
        convert_isles2022(empty, options(tmp_path))
    assert f"{empty.resolve()}: no sub-strokecaseXXXX/ subject folders: expected {empty.resolve()}/rawdata/" \
           f"sub-strokecaseXXXX/ses-0001/... or {empty.resolve()}/sub-strokecaseXXXX/ses-0001/..." in str(info.value)
    assert not (tmp_path / "raw").exists()


def test_no_mask_anywhere_is_refused_and_nothing_is_written(isles, tmp_path, capsys):
    shutil.rmtree(isles / "derivatives")
    err = cli_error(main, ["-i", str(isles), "-d", "522", "--raw-root", str(tmp_path / "raw")], capsys)
    assert f"ISLES 2022 {isles.resolve()}: no annotated case among the 5 found" in err
    assert "nnU-Net needs annotated training cases" in err
    assert f"{isles.resolve()} has no derivatives/ folder (the masks)" in err
    assert not (tmp_path / "raw").exists()


def test_relative_paths_are_recorded_absolute(isles, tmp_path, monkeypatch, capsys):
    """A rerun with the absolute path is the same conversion; the hidden labels are found from anywhere."""
    monkeypatch.chdir(tmp_path)
    main(["-i", "ISLES-2022", "-d", "522", "--raw-root", "raw", "--annotated", "2"])
    assert "wrote" in capsys.readouterr().out
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = tmp_path.resolve() / "raw" / DATASET
    written = checksums(out)
    main(["-i", str(isles.resolve()), "-d", "522", "--raw-root", str(tmp_path.resolve() / "raw"), "--annotated", "2"])
    assert "up to date, nothing written" in capsys.readouterr().out
    assert checksums(out) == written
    listed = json.loads((out.parent / f"{DATASET}.hidden_labels.json").read_text())
    assert listed["dataset"] == str(out)
    assert len(listed["hidden_labels"]) == 2
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in listed["hidden_labels"].values())
    record = json.loads((out / RECORD_FILE).read_text())
    assert all(Path(p).is_absolute() for p in record["sources"])


def test_refused_rerun_says_what_differs_and_what_to_do(isles, tmp_path):
    convert_isles2022(isles, options(tmp_path))
    out = tmp_path / "raw" / DATASET
    written = checksums(out)
    with pytest.raises(DatasetConversionError) as info:
        convert_isles2022(isles, options(tmp_path), with_flair=True)
    message = str(info.value)
    assert f"output dataset folder {out.resolve()} already exists and was written by another conversion:" in message
    assert "--with-flair: off then, on now" in message
    flair = isles.resolve() / "rawdata/sub-strokecase0001/ses-0001/anat/sub-strokecase0001_ses-0001_FLAIR.nii.gz"
    assert f"{flair}: added" in message
    assert "pass --overwrite to replace it, or give a new dataset id with -d" in message

    subject = isles.resolve() / "rawdata/sub-strokecase0001/ses-0001/dwi"
    touched = subject / "sub-strokecase0001_ses-0001_dwi.nii.gz"
    rewritten = subject / "sub-strokecase0001_ses-0001_adc.nii.gz"
    info_before = touched.stat()
    os.utime(touched, ns=(info_before.st_atime_ns, info_before.st_mtime_ns + 2_000_000_000))
    old_size = rewritten.stat().st_size
    write(rewritten, np.zeros((16, 24, 20), np.float32))
    shutil.rmtree(isles / "rawdata/sub-strokecase0005")
    with pytest.raises(DatasetConversionError) as info:
        convert_isles2022(isles, options(tmp_path))
    message = str(info.value)
    assert f"{touched}: modified (same size, modification time changed from" in message
    assert f"{rewritten}: size changed from {old_size} to {rewritten.stat().st_size} bytes" in message
    removed = isles.resolve() / "rawdata/sub-strokecase0005/ses-0001/dwi/sub-strokecase0005_ses-0001_dwi.nii.gz"
    assert f"{removed}: removed" in message
    assert "--with-flair" not in message  # the options are the same
    assert checksums(out) == written

    foreign = tmp_path / "foreign" / "raw" / DATASET
    foreign.mkdir(parents=True)
    with pytest.raises(DatasetConversionError) as info:
        convert_isles2022(isles, options(tmp_path / "foreign"))
    assert f"{foreign.resolve()} already exists and was not written by nnunet_mt_convert_isles2022 (it holds no " \
           f"{RECORD_FILE})" in str(info.value)


def test_with_flair_counts_the_voxels_outside_the_flair_field_of_view(isles, tmp_path, capsys):
    """Resampling sets DWI voxels outside the FLAIR's field of view to 0: the summary says how many."""
    # strokecase0001's FLAIR starts at x = -6.75 mm (its field of view at -7.25): the DWI columns at
    # x = -15, -13.5, ..., -7.5 mm (6 of 20) lie outside it
    isles_case(isles, 1, flair_origin=(-6.75, FLAIR_ORIGIN[1], FLAIR_ORIGIN[2]))
    summary = convert_isles2022(isles, options(tmp_path), with_flair=True)
    out = tmp_path / "raw" / DATASET
    dwi = read(out / "imagesTr" / "strokecase0001_0000.nii.gz")
    flair = sitk.GetArrayFromImage(read(out / "imagesTr" / "strokecase0001_0002.nii.gz"))
    x = np.array([dwi.TransformIndexToPhysicalPoint((i, 0, 0))[0] for i in range(dwi.GetSize()[0])])
    assert np.all(flair[..., :6] == 0)
    np.testing.assert_allclose(flair[..., 6:], np.broadcast_to(x[6:] + 100, flair[..., 6:].shape), atol=1e-3)
    voxels = 20 * 24 * 16
    assert summary.outside_field_of_view == {"FLAIR": {"strokecase0001": [6 * 24 * 16, voxels],
                                                       **{f"strokecase{i:04d}": [0, voxels] for i in range(2, 6)}}}
    text = summary.format()
    line = ("FLAIR resampled onto the DWI grid: 6.0 % of all voxels lie outside the FLAIR field of view and are 0; "
            "1 of 5 cases: strokecase0001 30.0 %")
    assert line in text
    again = convert_isles2022(isles, options(tmp_path), with_flair=True)
    assert again.up_to_date and line in again.format()
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "outside the FLAIR's field of view" in " ".join(capsys.readouterr().out.split())


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

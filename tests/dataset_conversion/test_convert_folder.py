"""Behavioural tests for nnunet_mt.dataset_conversion.convert_folder on tiny synthetic volumes."""
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mt.dataset_conversion.convert_folder import DatasetConversionError, convert_folder, main
from nnunet_mt.dataset_conversion.staging import HOST_TAG

# the module object itself (for monkeypatching), robust to a package __init__ re-exporting the function
cf = importlib.import_module("nnunet_mt.dataset_conversion.convert_folder")

CHANNELS = ["DWI", "b0"]
SHAPE_ZYX = (10, 9, 8)  # numpy order; SimpleITK size is (8, 9, 10)
SPACING = (0.9, 1.1, 2.5)
ORIGIN = (-12.5, 30.25, 7.0)
# a rotation about z, so direction round-tripping is actually exercised
_C, _S = np.cos(0.3), np.sin(0.3)
DIRECTION = (_C, -_S, 0.0, _S, _C, 0.0, 0.0, 0.0, 1.0)
DATASET_NAME = "Dataset042_Lesions"


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
def write_volume(path: Path, array: np.ndarray, *, spacing=SPACING, origin=ORIGIN, direction=DIRECTION) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def image_array(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(100.0, 20.0, SHAPE_ZYX).astype(np.float32)


def label_array(seed: int) -> np.ndarray:
    array = np.zeros(SHAPE_ZYX, dtype=np.uint8)
    array[2 + seed % 3: 6, 3:7, 2:5] = 1
    return array


@pytest.fixture
def src(tmp_path: Path) -> dict[str, Path]:
    """pat01, pat02 labelled; pat03 unlabelled; pat04 labelled (intended as test case)."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    for seed, case in enumerate(["pat01", "pat02", "pat03", "pat04"]):
        write_volume(images / f"{case}_DWI.nii.gz", image_array(2 * seed))
        # mix the '.nii' ending in, which the convention allows
        ending = ".nii" if case == "pat02" else ".nii.gz"
        write_volume(images / f"{case}_b0{ending}", image_array(2 * seed + 1))
        if case != "pat03":
            write_volume(labels / f"{case}.nii.gz", label_array(seed))
    return {"images": images, "labels": labels, "raw": tmp_path / "raw"}


def run(src: dict[str, Path], **overrides) -> Path:
    kwargs = dict(images_dir=src["images"], output_raw_root=src["raw"], dataset_id=42, dataset_name="Lesions",
                  channels=CHANNELS, labels_dir=src["labels"])
    kwargs.update(overrides)
    return convert_folder(**kwargs)


def snapshot(*folders: Path) -> dict[Path, tuple[bytes, int]]:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for folder in folders if folder.exists()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def expect_error(src: dict[str, Path], *fragments: str, **overrides) -> str:
    """Run a conversion that must fail; check the message fragments and that nothing was written."""
    before = snapshot(src["images"], src["labels"])
    with pytest.raises(DatasetConversionError) as info:
        run(src, **overrides)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in message:\n{message}"
    assert not src["raw"].exists() or not any(src["raw"].iterdir()), "a failing conversion wrote output"
    assert snapshot(src["images"], src["labels"]) == before, "source files were modified"
    return message


# ----------------------------------------------------------------------------------------------------------------
# successful conversion
# ----------------------------------------------------------------------------------------------------------------
def test_successful_conversion_layout_json_and_exact_roundtrip(src):
    before = snapshot(src["images"], src["labels"])
    dataset = run(src, test_cases=["pat04"])

    assert dataset == src["raw"] / DATASET_NAME
    assert sorted(p.name for p in src["raw"].iterdir()) == [DATASET_NAME]  # no staging leftovers
    files = sorted(str(p.relative_to(dataset)) for p in dataset.rglob("*") if p.is_file())
    assert files == [
        "dataset.json",
        "imagesTr/pat01_0000.nii.gz", "imagesTr/pat01_0001.nii.gz",
        "imagesTr/pat02_0000.nii.gz", "imagesTr/pat02_0001.nii.gz",
        "imagesTs/pat04_0000.nii.gz", "imagesTs/pat04_0001.nii.gz",
        "imagesUnlabeled/pat03_0000.nii.gz", "imagesUnlabeled/pat03_0001.nii.gz",
        "labelsTr/pat01.nii.gz", "labelsTr/pat02.nii.gz",
        "labelsTs/pat04.nii.gz",
        "nnunet_mt_conversion.json",  # the rerun record
    ]

    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "DWI", "1": "b0"}
    assert meta["labels"] == {"background": 0, "lesion": 1}
    assert meta["numTraining"] == 2
    assert meta["file_ending"] == ".nii.gz"

    sources = {
        "imagesTr/pat02_0001.nii.gz": src["images"] / "pat02_b0.nii",
        "imagesTs/pat04_0000.nii.gz": src["images"] / "pat04_DWI.nii.gz",
        "imagesUnlabeled/pat03_0001.nii.gz": src["images"] / "pat03_b0.nii.gz",
        "labelsTr/pat01.nii.gz": src["labels"] / "pat01.nii.gz",
        "labelsTs/pat04.nii.gz": src["labels"] / "pat04.nii.gz",
    }
    for out_name, source in sources.items():
        original, converted = sitk.ReadImage(str(source)), sitk.ReadImage(str(dataset / out_name))
        a, b = sitk.GetArrayFromImage(original), sitk.GetArrayFromImage(converted)
        assert b.dtype == (np.uint8 if out_name.startswith("labels") else np.float32), out_name
        np.testing.assert_array_equal(a, b, err_msg=out_name)
        assert converted.GetSize() == original.GetSize()
        assert converted.GetSpacing() == original.GetSpacing()
        assert converted.GetOrigin() == original.GetOrigin()
        np.testing.assert_allclose(converted.GetDirection(), original.GetDirection(), rtol=0, atol=1e-12)
    assert snapshot(src["images"], src["labels"]) == before


def test_without_labels_dir_everything_is_unlabelled(src):
    dataset = run(src, labels_dir=None)
    assert sorted(p.name for p in (dataset / "imagesUnlabeled").iterdir())[:2] == ["pat01_0000.nii.gz",
                                                                                    "pat01_0001.nii.gz"]
    assert not any((dataset / "labelsTr").iterdir())
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 0


def test_labels_above_255_are_written_as_uint16(src):
    big = label_array(0).astype(np.uint16) * 300
    write_volume(src["labels"] / "pat01.nii.gz", big)
    dataset = run(src, labels={"background": 0, **{f"class{value}": value for value in range(1, 301)}})
    converted = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / "labelsTr" / "pat01.nii.gz")))
    assert converted.dtype == np.uint16
    np.testing.assert_array_equal(converted, big)


def test_channel_and_label_geometry_within_tolerance_is_snapped_to_first_channel(src):
    # 1e-5 relative spacing noise is accepted, and the output uses the first channel's exact grid so that
    # nnU-Net's own (tighter) consistency checks pass
    noisy = tuple(s * (1 + 1e-5) for s in SPACING)
    write_volume(src["images"] / "pat01_b0.nii.gz", image_array(1), spacing=noisy)
    write_volume(src["labels"] / "pat01.nii.gz", label_array(0), spacing=noisy)
    dataset = run(src)
    reference = sitk.ReadImage(str(dataset / "imagesTr" / "pat01_0000.nii.gz"))
    for name in ("imagesTr/pat01_0001.nii.gz", "labelsTr/pat01.nii.gz"):
        assert sitk.ReadImage(str(dataset / name)).GetSpacing() == reference.GetSpacing()


def test_overwrite_replaces_existing_dataset(src):
    stale = src["raw"] / DATASET_NAME / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    dataset = run(src, overwrite=True)
    assert not stale.exists()
    assert (dataset / "dataset.json").is_file()
    assert sorted(p.name for p in src["raw"].iterdir()) == [DATASET_NAME]


def test_failure_while_writing_leaves_no_partial_dataset(src, monkeypatch):
    calls = []
    real_write = cf._write_image

    def failing_write(*, image, path):
        calls.append(path)
        if len(calls) == 3:  # fail mid-way, after some files are already written
            raise OSError("disk full (simulated)")
        real_write(image=image, path=path)

    monkeypatch.setattr(cf, "_write_image", failing_write)
    with pytest.raises(DatasetConversionError, match=re.escape(f"cannot write {src['raw'] / DATASET_NAME}: disk full "
                                                               f"(simulated); nothing was written")):
        run(src)
    assert len(calls) == 3
    assert list(src["raw"].iterdir()) == []  # neither the dataset nor the staging folder remains


# ----------------------------------------------------------------------------------------------------------------
# bad inputs: one test per problem
# ----------------------------------------------------------------------------------------------------------------
def test_missing_channel(src):
    (src["images"] / "pat02_b0.nii").unlink()
    expect_error(src, "pat02", "missing channel 'b0'", str(src["images"] / "pat02_b0.nii.gz"))


def test_stray_files(src):
    (src["images"] / "notes.txt").write_text("hello")
    write_volume(src["images"] / "pat01_T2.nii.gz", image_array(9))
    (src["labels"] / "README").write_text("x")
    expect_error(src, f"{src['images'] / 'notes.txt'}: stray file", f"{src['images'] / 'pat01_T2.nii.gz'}: stray",
                 f"{src['labels'] / 'README'}: stray file")


def test_duplicate_channel_file_with_both_endings(src):
    write_volume(src["images"] / "pat01_DWI.nii", image_array(0))
    expect_error(src, "case 'pat01' channel 'DWI' has two files", str(src["images"] / "pat01_DWI.nii"))


def test_corrupt_file_not_a_nifti(src):
    bad = src["images"] / "pat01_DWI.nii.gz"
    bad.write_bytes(b"definitely not a nifti file")
    expect_error(src, f"{bad}: unreadable or corrupt file", "SimpleITK: ", "Unable to determine ImageIO reader")


@pytest.mark.parametrize("name", ["pat02_b0.nii", "pat01_DWI.nii.gz"])
def test_truncated_file(src, name):
    # SimpleITK would silently zero-fill the missing voxels; the converter must still refuse the file
    path = src["images"] / name
    path.write_bytes(path.read_bytes()[:600])  # keeps the 352-byte header, cuts the voxel data
    message = expect_error(src, f"{path}: unreadable or corrupt file (")
    assert message.count("\n") == 1, "each problem should stay on one line"


def test_gzip_trailer_cut_off_is_refused(src):
    # only the trailer (CRC and size) missing: the voxels still read, so only reading to the end tells
    path = src["labels"] / "pat04.nii.gz"
    path.write_bytes(path.read_bytes()[:-4])
    expect_error(src, f"{path}: truncated or corrupt gzip file (Compressed file ended before the end-of-stream "
                      f"marker was reached); download it again")


@pytest.mark.parametrize("kind, kwargs, shown", [
    ("size", {}, "size (8, 9, 10) vs (8, 9, 11)"),
    ("spacing", {"spacing": (0.9, 1.1, 2.6)}, "spacing (0.9, 1.1, 2.5) vs (0.9, 1.1, 2.6)"),
    ("origin", {"origin": (-12.5, 30.25, 7.01)}, "origin (-12.5, 30.25, 7.0) vs (-12.5, 30.25, 7.01)"),
    ("direction", {"direction": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)}, "direction ("),
])
def test_geometry_mismatch_between_channels(src, kind, kwargs, shown):
    array = np.zeros((11, 9, 8), np.float32) if kind == "size" else image_array(1)
    other = write_volume(src["images"] / "pat01_b0.nii.gz", array, **kwargs)
    message = expect_error(src, "geometry mismatch between", str(src["images"] / "pat01_DWI.nii.gz"), str(other),
                           shown)
    mismatch_line = next(line for line in message.splitlines() if "geometry mismatch" in line)
    assert re.findall(r"(size|spacing|origin|direction) \(", mismatch_line) == [kind]


def test_geometry_mismatch_between_image_and_label(src):
    label = write_volume(src["labels"] / "pat02.nii.gz", label_array(1), origin=(-12.5, 30.25, 9.0))
    expect_error(src, f"geometry mismatch between {src['images'] / 'pat02_DWI.nii.gz'} and {label}",
                 "origin (-12.5, 30.25, 7.0) vs (-12.5, 30.25, 9.0)")


def test_label_values_not_in_labels(src):
    array = label_array(0)
    array[0, 0, :3] = [2, 7, 7]
    label = write_volume(src["labels"] / "pat01.nii.gz", array)
    expect_error(src, f"{label}: label values [2, 7] are not in the dataset labels", "allowed: [0, 1]")


def test_non_integer_label_values(src):
    array = label_array(0).astype(np.float32)
    array[0, 0, :3] = [0.5, 0.5, 1.25]
    label = write_volume(src["labels"] / "pat01.nii.gz", array)
    expect_error(src, f"{label}: 3 voxel(s) with non-integer label values [0.5, 1.25]")


@pytest.mark.parametrize("folder, name", [("images", "pat01_DWI.nii.gz"), ("labels", "pat01.nii.gz")])
def test_nan_and_inf_voxels(src, folder, name):
    # SimpleITK reads NaN/Inf back as 0, so this also guards against silently zeroed voxels
    array = label_array(0).astype(np.float32) if folder == "labels" else image_array(0)
    array[0, 0, :2] = np.nan
    array[5, 5, 5] = -np.inf
    path = write_volume(src[folder] / name, array)
    expect_error(src, f"{path}: 3 non-finite voxel(s) (2 NaN, 1 Inf)")


def test_label_without_image_case(src):
    orphan = write_volume(src["labels"] / "pat99.nii.gz", label_array(0))
    expect_error(src, f"{orphan}: label file has no matching image case 'pat99'")


def test_test_case_without_label(src):
    expect_error(src, "test case 'pat03' has no label", str(src["labels"] / "pat03.nii.gz"), test_cases=["pat03"])


def test_empty_images_dir(src, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    expect_error(src, f"images dir {empty} contains no image files", images_dir=empty, labels_dir=None)


def test_existing_output_without_overwrite(src):
    existing = src["raw"] / DATASET_NAME
    existing.mkdir(parents=True)
    (existing / "keep.txt").write_text("keep")
    with pytest.raises(DatasetConversionError, match=re.escape(f"output dataset folder {existing} already exists")):
        run(src)
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in src["raw"].iterdir()) == [DATASET_NAME]


@pytest.mark.parametrize("channels, fragment", [
    ([], "channel name list is empty"),
    (["DWI", "b0", "DWI"], "channel names are duplicated: ['DWI']"),
])
def test_bad_channel_lists(src, channels, fragment):
    expect_error(src, fragment, channels=channels)


def test_all_problems_reported_together(src):
    (src["images"] / "pat02_b0.nii").unlink()
    bad = src["images"] / "pat01_DWI.nii.gz"
    bad.write_bytes(b"junk")
    orphan = write_volume(src["labels"] / "pat77.nii.gz", label_array(0))
    message = expect_error(src, "missing channel 'b0'", f"{bad}: unreadable", f"{orphan}: label file has no",
                           "test case 'nope' has no image files", test_cases=["nope"])
    assert "5 problem(s) found" in message  # + "test case 'nope' has no label"


# ----------------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------------
def test_cli_success_uses_nnunet_raw_env(src, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_raw", str(src["raw"]))
    main(["-i", str(src["images"]), "-l", str(src["labels"]), "-d", "42", "-n", "Lesions", "-c", "DWI", "b0",
          "--labels", "background=0", "lesion=1", "--test-cases", "pat04"])
    dataset = src["raw"] / DATASET_NAME
    assert str(dataset) in capsys.readouterr().out
    assert sorted(p.name for p in (dataset / "labelsTs").iterdir()) == ["pat04.nii.gz"]


def test_cli_conversion_error_exits_2_without_traceback(src, capsys):
    (src["images"] / "pat02_b0.nii").unlink()
    with pytest.raises(SystemExit) as info:
        main(["-i", str(src["images"]), "-d", "42", "-n", "Lesions", "-c", "DWI", "b0",
              "--raw-root", str(src["raw"])])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "missing channel 'b0'" in err and "Traceback" not in err
    assert not src["raw"].exists()


def test_cli_identical_rerun_is_up_to_date_and_a_changed_one_says_what_differs(src, capsys):
    argv = ["-i", str(src["images"]), "-l", str(src["labels"]), "-d", "42", "-n", "Lesions", "-c", "DWI", "b0",
            "--raw-root", str(src["raw"])]
    dataset = src["raw"] / DATASET_NAME
    main(argv)
    assert f"wrote {dataset}" in capsys.readouterr().out
    written = snapshot(dataset)
    main(argv)
    assert f"up to date, nothing written: {dataset}" in capsys.readouterr().out
    assert snapshot(dataset) == written
    with pytest.raises(SystemExit) as info:
        main([*argv, "--test-cases", "pat04"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"output dataset folder {dataset} already exists and was written by another conversion:" in err
    assert "--test-cases: [] then, ['pat04'] now" in err and "pass --overwrite to replace it" in err
    assert snapshot(dataset) == written
    # a file of the dataset deleted by hand: said, and written again
    (dataset / "labelsTr" / "pat01.nii.gz").unlink()
    main(argv)
    out = capsys.readouterr().out
    assert f"wrote {dataset}" in out and f"{dataset / 'labelsTr' / 'pat01.nii.gz'}: removed" in out
    assert {p: content for p, (content, _) in snapshot(dataset).items() if p.name != "nnunet_mt_conversion.json"} \
        == {p: content for p, (content, _) in written.items() if p.name != "nnunet_mt_conversion.json"}


def test_cli_without_raw_root_or_env(src, monkeypatch, capsys):
    monkeypatch.delenv("nnUNet_raw", raising=False)
    with pytest.raises(SystemExit) as info:
        main(["-i", str(src["images"]), "-d", "42", "-n", "Lesions", "-c", "DWI", "b0"])
    assert info.value.code == 2
    assert "set the nnUNet_raw environment variable" in capsys.readouterr().err


@pytest.mark.parametrize("labels, fragment", [
    (["background=0", "ncr=1", "ed=2", "et=4"],
     "label values [0, 1, 2, 4] are not consecutive, which nnU-Net refuses ('Labels must be in consecutive order "
     "(0, 1, 2, ...)'): pass --labels background=0 ncr=1 ed=2 et=3 instead, with label files that hold those values"),
    (["bg=0", "lesion=1"], "label 0 is named 'bg': nnU-Net requires the name 'background' for it; pass background=0 "
                           "instead of bg=0"),
])
def test_cli_refuses_labels_nnunet_refuses_and_says_what_to_pass(src, capsys, labels, fragment):
    with pytest.raises(SystemExit) as info:
        main(["-i", str(src["images"]), "-l", str(src["labels"]), "-d", "42", "-n", "Lesions", "-c", "DWI", "b0",
              "--raw-root", str(src["raw"]), "--labels", *labels])
    assert info.value.code == 2
    assert fragment in " ".join(capsys.readouterr().err.split())
    assert not src["raw"].exists()


def test_cli_malformed_labels(src, capsys):
    with pytest.raises(SystemExit) as info:
        main(["-i", str(src["images"]), "-d", "42", "-n", "Lesions", "-c", "DWI", "b0",
              "--raw-root", str(src["raw"]), "--labels", "background:0"])
    assert info.value.code == 2
    assert "'background:0' is not of the form name=integer" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# output-location safety
# ----------------------------------------------------------------------------------------------------------------
def test_dataset_id_used_by_another_name(src):
    other = src["raw"] / "Dataset042_Other"
    other.mkdir(parents=True)
    with pytest.raises(DatasetConversionError, match=re.escape(f"dataset id 042 is already used by {other}")):
        run(src)
    assert sorted(p.name for p in src["raw"].iterdir()) == ["Dataset042_Other"]


def test_overwrite_refuses_to_delete_its_own_source(src):
    # converting an existing dataset's folder onto itself with overwrite would delete the input
    dataset = src["raw"] / DATASET_NAME
    src["raw"].mkdir()
    src["images"].rename(dataset)
    moved = {**src, "images": dataset}
    with pytest.raises(DatasetConversionError, match="lies inside the output dataset folder"):
        run(moved, overwrite=True)
    assert (dataset / "pat01_DWI.nii.gz").is_file()


# ----------------------------------------------------------------------------------------------------------------
# dimensionality of every case, output inside the input, stale staging folders
# ----------------------------------------------------------------------------------------------------------------
def _write_nd(path: Path, shape_xyzt: tuple[int, ...]) -> Path:
    """A 2-D or 4-D NIfTI (nibabel: SimpleITK's GetImageFromArray turns a 4-D array into a vector image)."""
    import nibabel as nib
    array = np.random.default_rng(len(shape_xyzt)).normal(100.0, 20.0, shape_xyzt).astype(np.float32)
    nib.save(nib.Nifti1Image(array, np.diag([0.9, 1.1, 2.5, 1.0])), str(path))
    return path


@pytest.mark.parametrize("case", ["pat03", "pat01"])  # unlabelled (never checked before) and labelled
@pytest.mark.parametrize("shape, found", [((8, 9), "2-D image of size (8, 9)"),
                                          ((8, 9, 10, 2), "4-D image of size (8, 9, 10, 2)")])
def test_2d_and_4d_images_are_refused_for_every_case(src, case, shape, found):
    paths = [_write_nd(next(src["images"].glob(f"{case}_{c}.nii*")), shape) for c in CHANNELS]
    if case == "pat01":  # a label of the same shape, so the image/label comparison alone cannot catch it
        _write_nd(src["labels"] / "pat01.nii.gz", shape)
    message = expect_error(src, *(f"{p}: expected a 3-D image, found a {found}" for p in paths))
    assert "geometry mismatch" not in message


@pytest.mark.parametrize("through_symlink", [False, True])
def test_output_inside_the_input_is_refused(src, tmp_path, through_symlink):
    """--raw-root inside the images folder (directly or through a symlink) would write into the source."""
    raw_root = src["images"] / "out"
    if through_symlink:
        (tmp_path / "link").symlink_to(src["images"])
        raw_root = tmp_path / "link" / "out"
    before = snapshot(src["images"], src["labels"])
    with pytest.raises(DatasetConversionError) as info:
        run(src, output_raw_root=raw_root)
    assert (f"output dataset folder {raw_root / DATASET_NAME} lies inside the source folder {src['images']}"
            in str(info.value)), str(info.value)
    assert not (src["images"] / "out").exists()
    assert snapshot(src["images"], src["labels"]) == before


def _dead_pid() -> int:
    """The PID of a process that has exited (reaped), i.e. a writer that is gone."""
    import subprocess
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_raw_root_equal_to_the_input_is_refused_and_nothing_there_deleted(src):
    """The issue's case (--raw-root = the input folder); even a stale staging folder in it is left: source is read-only."""
    stale = src["images"] / f".{DATASET_NAME}.partial-{_dead_pid()}@{HOST_TAG}-0123abcd"
    stale.mkdir()
    (stale / "x.txt").write_text("not ours to delete here")
    before = snapshot(src["images"], src["labels"])
    with pytest.raises(DatasetConversionError, match=re.escape(
            f"output dataset folder {src['images'] / DATASET_NAME} lies inside the source folder {src['images']}")):
        run(src, output_raw_root=src["images"])
    assert snapshot(src["images"], src["labels"]) == before and stale.is_dir()
    assert not (src["images"] / DATASET_NAME).exists()


def test_stale_staging_folders_are_removed_and_live_ones_kept(src, capsys):
    import os
    raw = src["raw"]
    stale = raw / f".{DATASET_NAME}.partial-{_dead_pid()}@{HOST_TAG}-0123abcd"
    legacy = raw / f".{DATASET_NAME}.partial-89abcdef"  # written before the writer's PID was recorded
    live = raw / f".{DATASET_NAME}.partial-{os.getpid()}@{HOST_TAG}-fedc3210"  # a concurrent conversion
    other_host = raw / f".{DATASET_NAME}.partial-{_dead_pid()}@elsewhere-00000000"
    for folder in (stale, legacy, live, other_host):
        (folder / "imagesTr").mkdir(parents=True)
        (folder / "imagesTr" / "x_0000.nii.gz").write_bytes(b"half written")
    dataset = run(src)
    out = capsys.readouterr().out
    assert not stale.exists() and not legacy.exists()
    assert live.is_dir() and other_host.is_dir()
    assert f"removed {stale}" in out and f"removed {legacy}" in out, out
    assert str(live) not in out
    assert f"{other_host}" in out and "another host" in out, out  # said, not deleted
    assert sorted(p.name for p in raw.iterdir()) == sorted([DATASET_NAME, live.name, other_host.name])
    assert (dataset / "dataset.json").is_file()


def test_stale_backup_of_a_replaced_dataset_is_restored(src, capsys):
    """Killed between the two renames of an overwrite: the old dataset is in '.replaced-', none in place."""
    backup = src["raw"] / f".{DATASET_NAME}.replaced-{_dead_pid()}@{HOST_TAG}-0123abcd"
    backup.mkdir(parents=True)
    (backup / "keep.txt").write_text("old dataset")
    with pytest.raises(DatasetConversionError, match="already exists"):
        run(src)
    assert (src["raw"] / DATASET_NAME / "keep.txt").read_text() == "old dataset"
    assert f"restored {src['raw'] / DATASET_NAME}" in capsys.readouterr().out


_KILLED_CONVERSION = """
import sys, time
from pathlib import Path
import nnunet_mt.dataset_conversion.convert_folder as cf
real = cf._write_image
def slow(*, image, path):
    real(image=image, path=path)
    Path(sys.argv[1]).write_text("written")  # tell the test a half-written staging folder exists
    time.sleep(120)
cf._write_image = slow
cf.main(sys.argv[2:])
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_killed_conversion_leaves_nothing_behind_after_the_next_run(src, tmp_path, sig, capsys):
    """SIGTERM: the converter removes its staging folder itself. SIGKILL: the next run removes it, and says so."""
    import signal
    import subprocess
    import sys
    import time
    marker = tmp_path / "marker"
    args = ["-i", str(src["images"]), "-l", str(src["labels"]), "-d", "42", "-n", "Lesions", "-c", "DWI", "b0",
            "--raw-root", str(src["raw"])]
    before = snapshot(src["images"], src["labels"])
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CONVERSION, str(marker), *args])
    try:
        for _ in range(1200):  # poll, no timing assertion: the import alone takes seconds
            if marker.exists() or child.poll() is not None:
                break
            time.sleep(0.05)
        assert marker.exists(), "the conversion did not start writing"
        staging = [p for p in src["raw"].iterdir() if ".partial-" in p.name]
        assert len(staging) == 1 and f".partial-{child.pid}@" in staging[0].name
        child.send_signal(getattr(signal, sig))
        child.wait(timeout=60)
    finally:
        child.kill()
    assert child.returncode == (128 + signal.SIGTERM if sig == "SIGTERM" else -signal.SIGKILL)
    assert staging[0].exists() == (sig == "SIGKILL")
    main(args)
    out = capsys.readouterr().out
    assert (f"removed {staging[0]}" in out) == (sig == "SIGKILL"), out
    assert sorted(p.name for p in src["raw"].iterdir()) == [DATASET_NAME]
    assert snapshot(src["images"], src["labels"]) == before

"""Tests for nnunet_mt.preprocessing.unlabeled on a tiny raw dataset planned by nnU-Net itself.

nnU-Net's planning/preprocessing runs once per module in a subprocess (it is the slow part); every test then works
on its own copy of the raw + preprocessed trees with the nnUNet_* variables pointed at that copy.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class, nnUNetDatasetBlosc2

from nnunet_mt.preprocessing.unlabeled import (UNLABELED_FOLDER, UnlabeledDataError, main, preprocess_unlabeled,
                                               unlabeled_output_folder)

DATASET_ID = 987
DATASET = f"Dataset{DATASET_ID}_UnlabeledTiny"
SHAPE_ZYX = (8, 40, 36)  # numpy order; SimpleITK size (36, 40, 8)
SPACING_XYZ = (0.96, 0.96, 6.5)
CHANNELS = {"0": "DWI", "1": "b0"}
LABELLED = ["case_000", "case_001", "case_002"]
UNLABELLED = ["unl_copy", "unl_other"]  # unl_copy: byte copy of case_001's images
BIN = Path(sys.executable).parent


# ----------------------------------------------------------------------------------------------------------------
# dataset construction
# ----------------------------------------------------------------------------------------------------------------
def _write(path: Path, array: np.ndarray) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING_XYZ)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def _head_mask() -> np.ndarray:
    """An off-centre elliptic cylinder: zero outside, so cropping and the -1 'outside' label are exercised."""
    _, y, x = np.mgrid[:SHAPE_ZYX[0], :SHAPE_ZYX[1], :SHAPE_ZYX[2]]
    return ((y - 21) / 15.0) ** 2 + ((x - 17) / 12.0) ** 2 <= 1.0


def _scan(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(_head_mask(), rng.normal(100.0, 20.0, SHAPE_ZYX), 0).astype(np.float32)


def _build_raw(raw_root: Path) -> Path:
    dataset = raw_root / DATASET
    for i, case in enumerate(LABELLED):
        for channel in range(2):
            _write(dataset / "imagesTr" / f"{case}_{channel:04d}.nii.gz", _scan(10 * i + channel))
        label = np.zeros(SHAPE_ZYX, dtype=np.uint8)
        label[2:6, 15 + i:22, 12:20] = 1
        _write(dataset / "labelsTr" / f"{case}.nii.gz", label)
    unlabelled = dataset / UNLABELED_FOLDER
    unlabelled.mkdir()
    for channel in range(2):
        shutil.copyfile(dataset / "imagesTr" / f"case_001_{channel:04d}.nii.gz",
                        unlabelled / f"unl_copy_{channel:04d}.nii.gz")
        _write(unlabelled / f"unl_other_{channel:04d}.nii.gz", _scan(100 + channel))
    (dataset / "dataset.json").write_text(json.dumps({
        "channel_names": CHANNELS, "labels": {"background": 0, "lesion": 1},
        "numTraining": len(LABELLED), "file_ending": ".nii.gz"}))
    return dataset


def _nnunet_env(raw: Path, preprocessed: Path, results: Path) -> dict[str, str]:
    env = dict(os.environ, nnUNet_raw=str(raw), nnUNet_preprocessed=str(preprocessed), nnUNet_results=str(results))
    env.pop("nnUNet_n_proc_DA", None)  # nnU-Net's planning fails with nnUNet_n_proc_DA=0
    return env


# `nnUNetv2_plan_and_preprocess` itself, except that the fingerprint samples 1e5 instead of 1e8 foreground voxels
# for the intensity statistics: those percentiles alone take ~20 s on 2 cores, and every output compared in these
# tests comes from the same plans, so the statistics' precision does not matter here.
_PLAN_AND_PREPROCESS = """
import sys
from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
from nnunetv2.experiment_planning.plan_and_preprocess_entrypoints import plan_and_preprocess_entry
_init = DatasetFingerprintExtractor.__init__
def _fewer_samples(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.num_foreground_voxels_for_intensitystats = 1e5
DatasetFingerprintExtractor.__init__ = _fewer_samples
sys.argv = ["nnUNetv2_plan_and_preprocess", *sys.argv[1:]]
plan_and_preprocess_entry()
"""


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> Path:
    """Raw dataset + nnU-Net's own plans and labelled 3d_fullres preprocessing (run once, in a subprocess, because
    nnU-Net's entry points take their folders from the environment)."""
    root = tmp_path_factory.mktemp("planned")
    _build_raw(root / "raw")
    (root / "preprocessed").mkdir()
    (root / "results").mkdir()
    proc = subprocess.run([sys.executable, "-c", _PLAN_AND_PREPROCESS, "-d", str(DATASET_ID), "-c", "3d_fullres",
                           "-np", "1", "-npfp", "1"],
                          env=_nnunet_env(root / "raw", root / "preprocessed", root / "results"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root


@pytest.fixture
def ws(planned: Path, tmp_path: Path, monkeypatch) -> SimpleNamespace:
    """A private copy of the planned trees, with the nnUNet_* variables pointing at it."""
    for name in ("raw", "preprocessed", "results"):
        shutil.copytree(planned / name, tmp_path / name)
    for key, value in _nnunet_env(tmp_path / "raw", tmp_path / "preprocessed", tmp_path / "results").items():
        if key.startswith("nnUNet_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("nnUNet_n_proc_DA", raising=False)
    pre = tmp_path / "preprocessed" / DATASET
    return SimpleNamespace(raw=tmp_path / "raw" / DATASET, unlabelled=tmp_path / "raw" / DATASET / UNLABELED_FOLDER,
                           pre=pre, labelled_out=pre / "nnUNetPlans_3d_fullres",
                           out=pre / "nnUNetPlans_3d_fullres_unlabeled", root=tmp_path)


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()}


# ----------------------------------------------------------------------------------------------------------------
# output format and equivalence with nnU-Net's own preprocessing
# ----------------------------------------------------------------------------------------------------------------
def test_output_loads_with_nnunet_and_matches_labelled_preprocessing(ws):
    raw_before = _snapshot(ws.raw)
    cases = preprocess_unlabeled(DATASET_ID, verbose=False)

    assert cases == UNLABELLED
    assert unlabeled_output_folder(DATASET_ID) == str(ws.out) == unlabeled_output_folder(DATASET)
    assert _snapshot(ws.raw) == raw_before  # raw data never modified
    assert sorted(p.name for p in ws.out.iterdir()) == sorted(
        f"{c}{suffix}" for c in UNLABELLED for suffix in (".b2nd", "_seg.b2nd", ".pkl"))  # no scratch left over

    dataset_class = infer_dataset_class(str(ws.out))
    assert dataset_class is nnUNetDatasetBlosc2 is infer_dataset_class(str(ws.labelled_out))
    dataset = dataset_class(str(ws.out))
    assert dataset.identifiers == UNLABELLED
    for case in UNLABELLED:
        data, seg, seg_prev, props = dataset.load_case(case)
        assert seg_prev is None and data.dtype == np.float32 and seg.dtype == np.int16
        assert data.shape[0] == 2 and seg.shape == (1, *data.shape[1:])
        assert set(np.unique(seg[:])) == {-1, 0}  # 0 inside the non-zero region, -1 outside
        assert props["class_locations"] == {1: []}

    # unl_copy has case_001's images: nnU-Net's labelled preprocessing of them must give the same arrays
    labelled = nnUNetDatasetBlosc2(str(ws.labelled_out))
    data_u, seg_u, _, props_u = dataset.load_case("unl_copy")
    data_l, seg_l, _, props_l = labelled.load_case("case_001")
    np.testing.assert_array_equal(data_u[:], data_l[:])
    np.testing.assert_array_equal(seg_u[:] == -1, seg_l[:] == -1)
    assert (seg_u[:] == 0).sum() > (seg_l[:] == 1).sum() > 0  # the lesion is just "inside" for the unlabelled copy
    for key in ("spacing", "shape_before_cropping", "bbox_used_for_cropping",
                "shape_after_cropping_and_before_resampling"):
        assert np.array_equal(np.asarray(props_u[key]), np.asarray(props_l[key])), key
    # the other case really differs (guards against a test that compares a case with itself)
    assert not np.array_equal(dataset.load_case("unl_other")[0][:], data_u[:])


# ----------------------------------------------------------------------------------------------------------------
# idempotency
# ----------------------------------------------------------------------------------------------------------------
def test_rerun_skips_finished_and_redoes_broken_cases(ws, capsys):
    preprocess_unlabeled(DATASET_ID, verbose=True)
    assert "preprocessed 2/2" in capsys.readouterr().out
    first = _mtimes(ws.out)

    preprocess_unlabeled(DATASET_ID, verbose=True)
    out = capsys.readouterr().out
    assert "skipping 2 finished cases" in out and "skipped, already done: all 2 cases" in out
    assert _mtimes(ws.out) == first

    # deleted marker (an interrupted case: arrays written, pkl not yet): only that case is redone
    (ws.out / "unl_copy.pkl").unlink()
    (ws.out / ".partial" / "unl_copy").mkdir(parents=True)  # scratch left by the interrupted run
    preprocess_unlabeled(DATASET_ID, verbose=True)
    out = capsys.readouterr().out
    assert "skipping 1 finished cases" in out and "preprocessed 1/1" in out
    second = _mtimes(ws.out)
    assert all(second[f] == first[f] for f in first if f.startswith("unl_other"))
    assert all(second[f] != first[f] for f in first if f.startswith("unl_copy"))
    assert not (ws.out / ".partial").exists()

    # corrupted marker: redone as well, and loads again
    (ws.out / "unl_other.pkl").write_bytes(b"\x80\x04 truncated")
    preprocess_unlabeled(DATASET_ID, verbose=False)
    third = _mtimes(ws.out)
    assert third["unl_other.b2nd"] != second["unl_other.b2nd"] and third["unl_copy.pkl"] == second["unl_copy.pkl"]
    with open(ws.out / "unl_other.pkl", "rb") as handle:
        assert pickle.load(handle)["class_locations"] == {1: []}


def test_rerun_redoes_cases_made_with_other_plans(ws, capsys):
    preprocess_unlabeled(DATASET_ID, verbose=False)
    first = _mtimes(ws.out)
    plans_file = ws.pre / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    plans["foreground_intensity_properties_per_channel"]["0"]["mean"] += 1.0  # as if nnU-Net had re-planned
    plans_file.write_text(json.dumps(plans))

    preprocess_unlabeled(DATASET_ID, verbose=True)
    assert "redoing 2 cases preprocessed with different plans" in capsys.readouterr().out
    assert all(mtime != first[name] for name, mtime in _mtimes(ws.out).items())
    preprocess_unlabeled(DATASET_ID, verbose=True)
    assert "skipping 2 finished cases" in capsys.readouterr().out


def test_rerun_takes_the_trainers_caches_for_caches_not_stale_cases(ws, capsys):
    """The trainers cache next to the cases (pseudo_lesions_<digest>.pkl, pseudo_labels_<digest>.pkl or a
    pseudo_labels_<digest>/ folder): a rerun must not report them as cases whose scans are gone."""
    preprocess_unlabeled(DATASET_ID, verbose=False)
    with open(ws.out / "pseudo_lesions_79d8181355ced1a3.pkl", "wb") as handle:
        pickle.dump({"unl_copy": np.zeros((0, 4), np.int64)}, handle)
    (ws.out / "pseudo_labels_0123456789abcdef.pkl").write_bytes(pickle.dumps({}))
    (ws.out / "pseudo_labels_0123456789abcdef").mkdir()
    preprocess_unlabeled(DATASET_ID, verbose=True)
    out = capsys.readouterr().out
    assert "skipping 2 finished cases" in out
    assert "no scans in" not in out and "pseudo_" not in out, out

    # a real orphan (a preprocessed case whose scans were removed) is still reported, and only it
    for ending in ("_0000.nii.gz", "_0001.nii.gz"):
        (ws.unlabelled / f"unl_other{ending}").unlink()
    preprocess_unlabeled(DATASET_ID, verbose=True)
    out = capsys.readouterr().out
    assert "note: 1 case(s)" in out and out.rstrip().splitlines()[-2].endswith(": unl_other"), out


# ----------------------------------------------------------------------------------------------------------------
# errors: each names the offending path/value and leaves raw data and outputs alone
# ----------------------------------------------------------------------------------------------------------------
def _expect_error(ws, *fragments: str, configuration: str = "3d_fullres") -> str:
    raw_before = _snapshot(ws.raw)
    with pytest.raises(UnlabeledDataError) as info:
        preprocess_unlabeled(DATASET_ID, configuration=configuration, verbose=False)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert _snapshot(ws.raw) == raw_before
    assert not ws.out.exists()
    return message


def test_error_missing_unlabeled_folder(ws):
    shutil.rmtree(ws.unlabelled)
    _expect_error(ws, str(ws.unlabelled), "no folder of unlabelled scans")


def test_error_empty_unlabeled_folder(ws):
    shutil.rmtree(ws.unlabelled)
    ws.unlabelled.mkdir()
    (ws.unlabelled / ".DS_Store").write_text("")  # hidden files do not count as scans
    message = _expect_error(ws, str(ws.unlabelled), "is empty")
    # says who needs the scans, never to skip the step (the mean teacher cannot train without it)
    assert "nnUNetTrainerMeanTeacher" in message and "nnUNetTrainerDeepMedic and nnUNetTrainerUNet do not" in message
    assert "do not run this step" not in message


def test_error_missing_channel(ws):
    (ws.unlabelled / "unl_other_0001.nii.gz").unlink()
    _expect_error(ws, "'unl_other'", "unl_other_0000.nii.gz", "expects 2", "_0000 (DWI), _0001 (b0)",
                  "missing ['_0001']")


def test_error_extra_channel_and_bad_names(ws):
    shutil.copyfile(ws.unlabelled / "unl_copy_0000.nii.gz", ws.unlabelled / "unl_copy_0002.nii.gz")
    (ws.unlabelled / "notes.txt").write_text("x")
    message = _expect_error(ws, "'unl_copy'", "unl_copy_0002.nii.gz", "has 3 channel file(s)",
                            "unexpected ['_0002']", "notes.txt", "2 problem(s)")
    assert "unl_other" not in message  # the valid case is not blamed


def test_error_plans_missing(ws):
    (ws.pre / "nnUNetPlans.json").unlink()
    _expect_error(ws, str(ws.pre / "nnUNetPlans.json"), f"nnUNetv2_plan_and_preprocess -d {DATASET_ID}")


def test_error_unknown_configuration(ws):
    _expect_error(ws, "'3d_bogus'", "'2d'", "'3d_fullres'", configuration="3d_bogus")


def test_error_unknown_dataset_id(ws):
    with pytest.raises(UnlabeledDataError, match="no dataset with ID 654"):
        preprocess_unlabeled(654, verbose=False)


# ----------------------------------------------------------------------------------------------------------------
# console script
# ----------------------------------------------------------------------------------------------------------------
def test_main_reports_errors_without_traceback(ws, capsys):
    shutil.rmtree(ws.unlabelled)
    with pytest.raises(SystemExit) as info:
        main(["-d", str(DATASET_ID)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "nnunet_mt_preprocess_unlabeled: error:" in err and str(ws.unlabelled) in err
    assert "Traceback" not in err


def test_console_script_with_worker_pool(ws):
    """The installed script, with -np 2 (spawned workers), preprocesses both cases."""
    env = _nnunet_env(ws.root / "raw", ws.root / "preprocessed", ws.root / "results")
    proc = subprocess.run([str(BIN / "nnunet_mt_preprocess_unlabeled"), "-d", str(DATASET_ID), "-np", "2"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "preprocessed 2/2" in proc.stdout
    assert nnUNetDatasetBlosc2(str(ws.out)).identifiers == UNLABELLED


# ----------------------------------------------------------------------------------------------------------------
# the unlabelled scans are read with the converter's checks; source fingerprints; resampling
# ----------------------------------------------------------------------------------------------------------------
def _write_nd(path: Path, shape_xyzt: tuple[int, ...]) -> Path:
    """A 2-D or 4-D NIfTI via nibabel (SimpleITK would turn a 4-D array into a vector image)."""
    import nibabel as nib
    array = np.random.default_rng(len(shape_xyzt)).normal(100.0, 20.0, shape_xyzt).astype(np.float32)
    nib.save(nib.Nifti1Image(array, np.diag([0.96, 0.96, 6.5, 1.0])), str(path))
    return path


@pytest.mark.parametrize("shape, found", [((36, 40), "2-D image of size (36, 40)"),
                                          ((36, 40, 8, 2), "4-D image of size (36, 40, 8, 2)")])
def test_2d_and_4d_scans_are_refused(ws, shape, found):
    # before: a 2-D slice became a (2, 148, ...) volume with a ~959 mm z-spacing; a 4-D one an IndexError
    paths = [_write_nd(ws.unlabelled / f"unl_other_{c:04d}.nii.gz", shape) for c in range(2)]
    message = _expect_error(ws, *(f"{p}: expected a 3-D image, found a {found}" for p in paths))
    assert "unl_copy" not in message


def test_truncated_and_non_finite_scans_are_refused(ws):
    # SimpleITK zero-fills a truncated .nii.gz and reads NaN as 0: unchecked, both would be preprocessed silently
    truncated = ws.unlabelled / "unl_other_0000.nii.gz"
    truncated.write_bytes(truncated.read_bytes()[:2000])
    scan = _scan(101)
    scan[3, 20, 10:13] = np.nan
    scan[4, 21, 17] = np.inf
    non_finite = ws.unlabelled / "unl_copy_0001.nii.gz"
    _write(non_finite, scan)
    trailer = ws.unlabelled / "unl_copy_0000.nii.gz"  # only the gzip trailer cut off: the voxels still read
    trailer.write_bytes(trailer.read_bytes()[:-4])
    _expect_error(ws, f"{truncated}: unreadable or corrupt file (nibabel:",
                  f"{non_finite}: 4 non-finite voxel(s) (3 NaN, 1 Inf)",
                  f"{trailer}: truncated or corrupt gzip file", "3 problem(s)")


def test_channels_of_different_spacing_are_refused_with_the_files_and_spacings(ws):
    # before: nnU-Net's reader printed to stdout and raised a bare RuntimeError ("RuntimeError: .")
    other = ws.unlabelled / "unl_other_0001.nii.gz"
    image = sitk.ReadImage(str(other))
    image.SetSpacing((0.96, 0.96, 5.0))
    sitk.WriteImage(image, str(other))
    _expect_error(ws, "case 'unl_other'", "different spacings",
                  f"{ws.unlabelled / 'unl_other_0000.nii.gz'}: (0.96, 0.96, 6.5)", f"{other}: (0.96, 0.96, 5.0)")


def test_rerun_redoes_a_case_whose_source_changed_and_says_so(ws, capsys):
    preprocess_unlabeled(DATASET_ID, verbose=False)
    first = _mtimes(ws.out)
    changed = ws.unlabelled / "unl_other_0001.nii.gz"
    with open(ws.out / "unl_other.pkl", "rb") as handle:
        stored = pickle.load(handle)["nnunet_mt_source_fingerprint"]
    info = changed.stat()
    assert stored == {"unl_other_0000.nii.gz": list(stored["unl_other_0000.nii.gz"]),
                      "unl_other_0001.nii.gz": [info.st_size, info.st_mtime_ns]}
    old_data = nnUNetDatasetBlosc2(str(ws.out)).load_case("unl_other")[0][:]

    # the scan is repaired / replaced: other voxels, a later modification time
    _write(changed, _scan(777))
    os.utime(changed, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))
    preprocess_unlabeled(DATASET_ID, verbose=True)
    out = capsys.readouterr().out
    assert ("redoing 1 case(s) whose source files changed since they were preprocessed: "
            "unl_other (unl_other_0001.nii.gz)") in out, out
    assert "skipping 1 finished cases" in out and "preprocessed 1/1" in out
    second = _mtimes(ws.out)
    assert all(second[f] == first[f] for f in first if f.startswith("unl_copy"))
    new_data = nnUNetDatasetBlosc2(str(ws.out)).load_case("unl_other")[0][:]
    np.testing.assert_array_equal(new_data[0], old_data[0])  # the DWI channel did not change
    assert not np.allclose(new_data[1], old_data[1])

    # a case preprocessed before fingerprints existed is redone as well, once
    with open(ws.out / "unl_copy.pkl", "rb") as handle:
        properties = pickle.load(handle)
    del properties["nnunet_mt_source_fingerprint"]
    with open(ws.out / "unl_copy.pkl", "wb") as handle:
        pickle.dump(properties, handle)
    preprocess_unlabeled(DATASET_ID, verbose=True)
    assert "unl_copy (no record of its source files)" in capsys.readouterr().out
    preprocess_unlabeled(DATASET_ID, verbose=True)
    assert "skipping 2 finished cases" in capsys.readouterr().out


def test_case_with_another_spacing_is_resampled_to_the_target_spacing(ws):
    """unl_other at (x, y, z) = (1.92, 0.48, 6.5) mm, the plans' target (0.96, 0.96, 6.5): x doubles, y halves."""
    plans = json.loads((ws.pre / "nnUNetPlans.json").read_text())
    assert plans["transpose_forward"] == [0, 1, 2]
    assert plans["configurations"]["3d_fullres"]["spacing"] == pytest.approx([6.5, 0.96, 0.96])  # (z, y, x)
    ramp = np.broadcast_to(10.0 + np.arange(SHAPE_ZYX[2], dtype=np.float32), SHAPE_ZYX)  # linear in x, non-zero
    for channel, scale in enumerate((1.0, 3.0)):
        image = sitk.GetImageFromArray(np.ascontiguousarray(ramp * scale))
        image.SetSpacing((1.92, 0.48, 6.5))
        sitk.WriteImage(image, str(ws.unlabelled / f"unl_other_{channel:04d}.nii.gz"))

    preprocess_unlabeled(DATASET_ID, verbose=False)
    data, seg, _, props = nnUNetDatasetBlosc2(str(ws.out)).load_case("unl_other")
    z, y, x = SHAPE_ZYX  # 8, 40, 36: nothing is cropped, the whole image is non-zero
    assert tuple(props["shape_after_cropping_and_before_resampling"]) == (z, y, x)
    assert list(props["spacing"]) == pytest.approx([6.5, 0.48, 1.92])
    expected = (z, round(y * 0.48 / 0.96), round(x * 1.92 / 0.96))  # (8, 20, 72)
    assert data.shape == (2, *expected) and seg.shape == (1, *expected)
    assert set(np.unique(seg[:])) == {0}
    values = data[:]
    # z-scored per channel (mean 27.5 and population sd of 10..45), then resampled: constant along z and y, and
    # along x output voxel j lies at input x = j / 2 - 1/4 (voxel centres aligned), where a cubic spline of a line
    # is the line itself (away from the edges, where the boundary extension bends it)
    ramp_x = 10.0 + np.arange(x)
    j = np.arange(expected[2])
    along_x = (10.0 + (j / 2 - 0.25) - ramp_x.mean()) / ramp_x.std()
    np.testing.assert_allclose(values, np.broadcast_to(values[:, :1, :1, :], values.shape), atol=1e-5)
    for channel in range(2):  # z-scoring removes the channels' scale
        np.testing.assert_allclose(values[channel, 0, 0, 8:-8], along_x[8:-8], atol=2e-3)


_POOL_HOLDER = """
import os, time
from nnunet_mt.preprocessing.unlabeled import worker_pool
pool = worker_pool(2)
ran = set()
while len(ran) < 2:  # a worker that has returned a job has run its initializer (bound to this process)
    ran |= {f.result() for f in [pool.submit(os.getpid) for _ in range(4)]}
futures = [pool.submit(time.sleep, 120) for _ in range(2)]
print(" ".join(map(str, pool._processes)), flush=True)
time.sleep(120)
"""
#: how long the workers may take to exit after their parent: generous for a loaded machine, shorter than their
#: 120 s job (unbound, they would still be running it)
EXIT_LIMIT_S = 60


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_pool_workers_die_with_a_killed_parent(sig):
    """The preprocessing pool's workers, busy when their parent is killed, are gone within seconds (without
    being bound to their parent they would finish their job without it, then hang)."""
    proc = subprocess.Popen([sys.executable, "-c", _POOL_HOLDER], stdout=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
        proc.send_signal(sig)
        proc.wait(30)
        deadline = time.time() + EXIT_LIMIT_S
        while any(_alive(p) for p in workers) and time.time() < deadline:
            time.sleep(0.1)
        running = [p for p in workers if _alive(p)]
        assert not running, f"pool workers {running} still running {EXIT_LIMIT_S} s after their parent's {sig.name}"
    finally:
        proc.kill()
        for p in workers:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False

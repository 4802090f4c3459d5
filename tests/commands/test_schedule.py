"""``nnunet_mt_schedule`` end to end on the tiny dataset: the validation curve comes from held-out *training*
scans of the runner's draw, its snapshot Dice equals ``nnUNetv2_predict`` with the same snapshot, and a
rerun redoes nothing."""
from __future__ import annotations

import json
import os
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib.image import imread

from conftest import VENV_BIN, write_tiny_raw
from nnunet_mt.evaluation.metrics import dice
from nnunet_mt.runner.splits import draw_splits
from nnunet_mt.utils.pipeline import workdir_env

POOL = [f"tr_{i:03d}" for i in range(5)] + ["ts_000", "ts_001"]


@pytest.fixture(scope="module")
def schedule(tmp_path_factory):
    root = tmp_path_factory.mktemp("schedule")
    raw = root / "raw"
    write_tiny_raw(raw, n_unlabeled=0)
    work = root / "work"
    env = dict(os.environ, nnUNet_raw=str(raw), nnUNet_n_proc_DA="0", nnUNet_compile="false", PYTHONUNBUFFERED="1")
    env.pop("nnUNet_def_n_proc", None)  # the runner's --num-processes 1 sets it for nnU-Net's pools
    cmd = [str(VENV_BIN / "nnunet_mt_schedule"), "-d", "901", "--workdir", str(work), "--count", "4",
           "--shared-test", "2", "--holdout", "2", "--init-epochs", "2", "--epochs", "2", "--iterations-per-epoch",
           "2", "--val-iterations", "1", "--snapshot-every", "1", "--trainer-suffix", "_tiny", "--num-processes", "1"]
    runs = []
    for _ in range(2):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
        runs.append(done.stdout)
    return SimpleNamespace(raw=raw, work=work, env=env, cmd=cmd, runs=runs,
                           curve=json.loads((work / "curve.json").read_text()))


def test_curve_uses_only_the_counts_training_scans(schedule):
    split = schedule.curve["split"]
    runner = draw_splits(POOL, [4], seed=0, shared_test=2)[4]
    assert sorted(split["train"] + split["val"]) == runner["train"] and len(split["val"]) == 2
    assert not set(split["val"]) & set(runner["test"])
    folds = json.loads((schedule.work / "nnUNet_preprocessed" / "Dataset500_Tiny_n4" / "splits_final.json").read_text())
    assert folds == [split]


def test_two_stages_with_their_learning_rates(schedule):
    a, b = schedule.curve["stages"]
    assert a["lr"] == 1e-3 and b["lr"] == 1e-4
    assert a["steps"] == [0, 2, 4] and b["steps"] == [4, 6, 8]  # B starts from A's final weights
    assert all(0.0 <= d <= 1.0 for s in (a, b) for d in s["mean_dice"])
    results = schedule.work / "nnUNet_results" / "Dataset500_Tiny_n4"
    log = "".join(p.read_text() for p in (results / "nnUNetTrainerDeepMedic_tiny__nnUNetPlans_init__3d_fullres"
                                          / "fold_0").glob("training_log_*.txt"))
    assert "'initial_lr': 0.001" in log and "Current learning rate: 0.001" in log
    assert schedule.curve["plateau_step"] in a["steps"] + b["steps"]
    assert imread(schedule.work / "validation_curve.png").shape[:2] == (400, 700)  # its data: test_diagnostics.py
    assert "| A: init | 0.001 | 0 |" in schedule.runs[0]


def test_snapshot_dice_equals_nnunet_predict_of_the_snapshot(schedule, tmp_path):
    """The curve's Dice is the Dice of the predicted file nnUNetv2_predict writes with that snapshot."""
    case = schedule.curve["split"]["val"][0]
    stage_b = schedule.curve["stages"][1]
    row = next(r for r in stage_b["rows"] if r["case"] == case and r["step"] == 2)
    images = tmp_path / "in"
    images.mkdir()
    for c in (0, 1):
        (images / f"{case}_{c:04d}.nii.gz").symlink_to(schedule.raw / "Dataset901_Tiny" / "imagesTr"
                                                       / f"{case}_{c:04d}.nii.gz")
    env = dict(workdir_env(schedule.work), nnUNet_n_proc_DA="0")
    out = tmp_path / "out"
    done = subprocess.run([str(VENV_BIN / "nnUNetv2_predict"), "-i", str(images), "-o", str(out), "-d", "500", "-c",
                           "3d_fullres", "-f", "0", "-tr", "nnUNetTrainerDeepMedic_tiny", "-chk",
                           "snapshots/epoch_0001.pth", "-device", "cpu", "-npp", "0", "-nps", "0"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.nii.gz")))
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(schedule.raw / "Dataset901_Tiny" / "labelsTr" / f"{case}.nii.gz")))
    expected = dice(pred > 0, ref > 0)
    assert row["dice"] == pytest.approx(expected, abs=1e-9) or (np.isnan(row["dice"]) and np.isnan(expected))


def test_final_snapshot_dice_equals_nnunet_final_validation(schedule):
    """Fold 0 validates on the held-out scans, so nnU-Net's own end-of-training validation (which the schedule,
    unlike the runner, keeps) scores the curve's last point: the same Dice per case."""
    stage_b = schedule.curve["stages"][1]
    last = max(r["step"] for r in stage_b["rows"])  # the stage's own step count (its final snapshot)
    ours = {r["case"]: r["dice"] for r in stage_b["rows"] if r["step"] == last}
    fold = (schedule.work / "nnUNet_results" / "Dataset500_Tiny_n4"
            / "nnUNetTrainerDeepMedic_tiny__nnUNetPlans__3d_fullres" / "fold_0")
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    theirs = {os.path.basename(c["reference_file"]).split(".")[0]: c["metrics"]["1"]["Dice"]
              for c in summary["metric_per_case"]}
    assert sorted(theirs) == sorted(ours) == schedule.curve["split"]["val"]
    for case, d in ours.items():
        assert d == pytest.approx(theirs[case], abs=1e-9, nan_ok=True), case


def test_preprocessed_case_is_nnunets_own_preprocessing(schedule):
    """curves.preprocess_cases gives the network's input, the reference mask and the non-zero region (nnU-Net's
    label -1 marks outside it) exactly as nnU-Net's preprocessing wrote them for training."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    from nnunet_mt.evaluation.curves import _predictor, preprocess_cases

    fold = (schedule.work / "nnUNet_results" / "Dataset500_Tiny_n4"
            / "nnUNetTrainerDeepMedic_tiny__nnUNetPlans__3d_fullres" / "fold_0")
    case = schedule.curve["split"]["val"][0]
    source = schedule.raw / "Dataset901_Tiny"
    images = [source / "imagesTr" / f"{case}_{c:04d}.nii.gz" for c in (0, 1)]
    prepared = preprocess_cases(_predictor(fold, "checkpoint_final.pth", "cpu"),
                                {case: (images, source / "labelsTr" / f"{case}.nii.gz")})[case]
    folder = str(schedule.work / "nnUNet_preprocessed" / "Dataset500_Tiny_n4" / "nnUNetPlans_3d_fullres")
    data, seg, _, _ = infer_dataset_class(folder)(folder).load_case(case)
    seg = np.asarray(seg[0])
    assert np.array_equal(prepared.reference, seg > 0) and prepared.reference.any()
    # the tiny head is an ellipsoid: its bounding box keeps corners outside the non-zero region
    assert np.array_equal(prepared.inside, seg >= 0) and not prepared.inside.all()
    np.testing.assert_allclose(prepared.data, np.asarray(data), rtol=0, atol=1e-6)


def test_rerun_redoes_nothing_and_other_settings_stop(schedule):
    assert "nnUNetv2_" not in schedule.runs[1] and "skip (done)" in schedule.runs[1]
    done = subprocess.run([*schedule.cmd[:-2], "--num-processes", "1", "--holdout", "1"], env=schedule.env,
                          capture_output=True, text=True)
    assert done.returncode != 0 and "other settings" in done.stderr and "new --workdir" in done.stderr

"""End to end on the tiny dataset: supervised DeepMedic -> unlabeled preprocessing -> mean teacher with
-pretrained_weights -> nnUNetv2_predict; resume; bad input."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from matplotlib.image import imread

from conftest import TINY_ID, TINY_NAME, assert_train_losses_compose, direct_probabilities

MT = "nnUNetTrainerMeanTeacher_tiny"


@pytest.fixture(scope="module")
def pretrained(trained_deepmedic) -> Path:
    return trained_deepmedic / "checkpoint_final.pth"


def test_without_pretrained_weights_the_two_step_workflow_is_explained(tiny_nnunet):
    proc = tiny_nnunet.run(
        "nnUNetv2_train", str(TINY_ID), "3d_fullres", "0", "-tr", MT, "-device", "cpu", check=False,
        extra_env={"nnUNet_n_proc_DA": "0"})
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "-pretrained_weights" in text and "checkpoint_final.pth" in text
    # the supervised variant of the same width, not the full-width nnUNetTrainerDeepMedic
    assert f"nnUNetv2_train {TINY_NAME} 3d_fullres 0 -tr nnUNetTrainerDeepMedic_tiny\n" in text
    assert "/nnUNetTrainerDeepMedic_tiny__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth" in text


def test_missing_pretrained_checkpoint_is_named(tiny_nnunet, tmp_path):
    missing = tmp_path / "nope" / "checkpoint_final.pth"
    proc = tiny_nnunet.run("nnUNetv2_train", str(TINY_ID), "3d_fullres", "0", "-tr", MT, "-device", "cpu",
                           "-pretrained_weights", str(missing), check=False, extra_env={"nnUNet_n_proc_DA": "0"})
    assert proc.returncode != 0 and str(missing) in proc.stdout + proc.stderr


def test_checkpoint_from_another_architecture_is_refused(tiny_nnunet, tmp_path):
    other = tmp_path / "unet.pth"
    torch.save({"network_weights": {"encoder.stages.0.0.convs.0.conv.weight": torch.zeros(32, 2, 1, 3, 3)}}, other)
    proc = tiny_nnunet.run("nnUNetv2_train", str(TINY_ID), "3d_fullres", "0", "-tr", MT, "-device", "cpu",
                           "-pretrained_weights", str(other), check=False, extra_env={"nnUNet_n_proc_DA": "0"})
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"-pretrained_weights {other} does not fit {MT}'s network" in text
    assert "starts from a checkpoint_final.pth of nnUNetTrainerDeepMedic_tiny" in text


def test_missing_unannotated_scans_tell_how_to_preprocess_them(tiny_unlabeled):
    assert "No preprocessed unannotated scans" in tiny_unlabeled
    assert "nnunet_mt_preprocess_unlabeled -d Dataset901_Tiny -c 3d_fullres" in tiny_unlabeled
    # the last thing printed: no augmentation worker was started to fail after it
    assert tiny_unlabeled.rstrip().splitlines()[-1].startswith("RuntimeError: No preprocessed unannotated scans")


@pytest.fixture(scope="module")
def trained_mean_teacher(tiny_nnunet, tiny_unlabeled, pretrained) -> Path:
    tiny_nnunet.train(MT, "-pretrained_weights", str(pretrained), final_validation=True)
    return tiny_nnunet.model_folder(MT) / "fold_0"


def test_schedule_and_history_follow_the_paper(trained_mean_teacher):
    log = json.loads((trained_mean_teacher / "mean_teacher_log.json").read_text())
    assert log["step"] == [0, 1, 2, 3]
    # ramp-up L = 2 in the tiny variant: beta = exp(-5 (1 - S/2)^2) -> exp(-5), exp(-1.25), 1, 1
    assert log["beta"] == pytest.approx([math.exp(-5), math.exp(-1.25), 1.0, 1.0])
    assert log["alpha"] == pytest.approx([0.99, 0.99, 0.99, 0.999])  # 0.99 while S <= L
    assert log["dice_step"] == [2, 4] and len(log["dice_teacher"]) == 2
    assert "foreground_mean" in json.loads((trained_mean_teacher / "validation" / "summary.json").read_text())
    assert_train_losses_compose(trained_mean_teacher, log, ("Ls", 1), ("Lc", "beta"))  # L = Ls + beta Lc
    # the plot of this history (its data: tests/training/test_plots.py), 9 x 10 inches at 80 dpi
    assert imread(trained_mean_teacher / "progress_mean_teacher.png").shape[:2] == (800, 720)
    cached = list((trained_mean_teacher.parents[3] / "preprocessed" / TINY_NAME /
                   "nnUNetPlans_3d_fullres_unlabeled").glob("pseudo_lesions_*.pkl"))
    assert len(cached) == 1
    train_log = "".join(p.read_text() for p in sorted(trained_mean_teacher.glob("training_log_*.txt")))
    assert "epoch 2/2, step 4/4 (100 %)" in train_log
    assert "train_loss (loss_tr in progress.png) is L = Ls + beta * Lc; it rises while beta ramps up over the " \
           "first 2 steps" in train_log and "progress_mean_teacher.png" in train_log


def test_checkpoint_holds_teacher_as_model_and_student_for_resuming(trained_mean_teacher, pretrained):
    ckpt = torch.load(trained_mean_teacher / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    start = torch.load(pretrained, map_location="cpu", weights_only=False)["network_weights"]
    teacher, student = ckpt["network_weights"], ckpt["student_weights"]
    assert ckpt["semi_supervised"]["global_step"] == 4
    key = "classifier.conv.weight"
    assert not torch.equal(teacher[key], student[key])
    # after 4 EMA steps with alpha 0.99, 0.99, 0.99, 0.999 the teacher stays close to where it started
    drift_teacher = (teacher[key] - start[key]).abs().max()
    drift_student = (student[key] - start[key]).abs().max()
    assert 0 < drift_teacher < drift_student


def test_predict_uses_the_teacher(tiny_nnunet, trained_mean_teacher, tmp_path):
    images = tiny_nnunet.raw / TINY_NAME / "imagesTs"
    out = tmp_path / "pred"
    tiny_nnunet.run("nnUNetv2_predict", "-i", str(images), "-o", str(out), "-d", str(TINY_ID), "-c", "3d_fullres",
                    "-f", "0", "-tr", MT, "-device", "cpu", "--save_probabilities", "-npp", "1", "-nps", "1")
    files = [str(images / f"ts_000_{c:04d}.nii.gz") for c in range(2)]
    ckpt = trained_mean_teacher / "checkpoint_final.pth"
    probs = np.load(out / "ts_000.npz")["probabilities"]
    teacher = direct_probabilities(trained_mean_teacher.parent, ckpt, files)
    student = direct_probabilities(trained_mean_teacher.parent, ckpt, files, weights_key="student_weights")
    np.testing.assert_allclose(probs, teacher, atol=3e-3)
    assert np.abs(probs - student).max() > 10 * np.abs(probs - teacher).max()


def test_resume_continues_as_if_uninterrupted(tiny_nnunet, trained_mean_teacher, pretrained, tmp_path):
    script = Path(__file__).with_name("resume_run.py")
    results = {}
    for name, args in (("straight", ["4"]), ("resumed", ["4", "2"])):
        folder = tmp_path / name
        folder.mkdir()
        proc = tiny_nnunet.run(sys.executable, str(script), str(pretrained), str(folder / "out.pt"), *args,
                               extra_env={"nnUNet_n_proc_DA": "0", "nnUNet_results": str(folder)})
        results[name] = torch.load(folder / "out.pt", weights_only=False)
    assert "resumed at step 4" in proc.stdout
    a, b = results["straight"], results["resumed"]
    assert a["step"] == b["step"] == 8
    for k in ("step", "beta", "alpha", "Ls", "Lc", "dice_teacher"):
        assert a["history"][k] == pytest.approx(b["history"][k], abs=1e-6), k
    for k in a["teacher"]:
        torch.testing.assert_close(a["teacher"][k], b["teacher"][k], atol=1e-6, rtol=0)

"""DeepMedic-EN end to end on the tiny dataset: train from the supervised DeepMedic with nnUNetv2_train,
the schedule in its log, the evaluation network in the checkpoint, nnUNetv2_predict applies the model."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from matplotlib.image import imread

from conftest import TINY_ID, TINY_NAME, assert_train_losses_compose, direct_probabilities
from nnunet_mt.training.adversarial import en_weight

EN = "nnUNetTrainerDeepMedicEN_tiny"


@pytest.fixture(scope="module")
def trained_en(tiny_nnunet, tiny_unlabeled, trained_deepmedic):
    tiny_nnunet.train(EN, "-pretrained_weights", str(trained_deepmedic / "checkpoint_final.pth"))
    return tiny_nnunet.model_folder(EN) / "fold_0"


def test_needs_the_supervised_start(tiny_nnunet, tiny_unlabeled):
    proc = tiny_nnunet.run("nnUNetv2_train", str(TINY_ID), "3d_fullres", "0", "-tr", EN, "-device", "cpu",
                           check=False, extra_env={"nnUNet_n_proc_DA": "0"})
    assert proc.returncode != 0 and "-pretrained_weights" in proc.stdout + proc.stderr


def test_log_follows_the_en_schedule(trained_en):
    """(That the evaluation network learns: test_nnUNetTrainerMeanTeacher's fixed-batch test, with the trainer's own.)"""
    log = json.loads((trained_en / "adversarial_log.json").read_text())
    assert log["step"] == [0, 1, 2, 3]
    assert log["lambda"] == pytest.approx([en_weight(s, 2) for s in range(4)])
    assert log["lambda"] == pytest.approx([0.1 * math.exp(-5), 0.1 * math.exp(-1.25), 0.1, 0.1])
    # the values by hand: tests/trainers/test_adversarial.py; here what nnU-Net logged is their sum
    assert_train_losses_compose(trained_en, log, ("Ls", 1), ("Ladv", "lambda"))
    assert len(log["dice_student"]) == 2
    # the plot of this history, a panel per step value (its data: tests/training/test_plots.py): 9 x (3 + 2.2 x 5)
    # inches at 80 dpi
    assert imread(trained_en / "progress_adversarial.png").shape[:2] == (1120, 720)
    train_log = "".join(p.read_text() for p in sorted(trained_en.glob("training_log_*.txt")))
    assert "is L = Ls + lambda * Ladv; it rises while lambda ramps up" in train_log
    assert "epoch 2/2, step 4/4 (100 %)" in train_log


def test_checkpoint_holds_the_segmenter_as_model_and_the_evaluation_network(trained_en, trained_deepmedic):
    ckpt = torch.load(trained_en / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    for k, v in ckpt["network_weights"].items():
        assert torch.equal(v, ckpt["student_weights"][k]), k
    start = torch.load(trained_deepmedic / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert any(not torch.equal(v, start["network_weights"][k]) for k, v in ckpt["network_weights"].items())
    state = ckpt["semi_supervised"]
    assert state["global_step"] == 4
    assert any(k.startswith("map_conv") for k in state["adversary"])
    assert state["adversary_optimizer"]["state"]  # Adam moments after 4 steps


def test_nnunetv2_predict_applies_it(tiny_nnunet, trained_en, tmp_path):
    assert_predict_is_the_dense_forward_of_the_model(tiny_nnunet, EN, trained_en, tmp_path)


def assert_predict_is_the_dense_forward_of_the_model(tiny_nnunet, trainer, fold, tmp_path):
    """nnUNetv2_predict's probabilities of a test case are the segmenter's (network_weights) whole-volume
    forward pass, not the initial model's."""
    images = tiny_nnunet.raw / TINY_NAME / "imagesTs"
    out = tmp_path / "pred"
    tiny_nnunet.run("nnUNetv2_predict", "-i", str(images), "-o", str(out), "-d", str(TINY_ID), "-c", "3d_fullres",
                    "-f", "0", "-tr", trainer, "-device", "cpu", "--save_probabilities", "-npp", "1", "-nps", "1")
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["ts_000.nii.gz", "ts_001.nii.gz"]
    files = [str(images / f"ts_000_{c:04d}.nii.gz") for c in range(2)]
    probs = np.load(out / "ts_000.npz")["probabilities"]
    model = direct_probabilities(fold.parent, fold / "checkpoint_final.pth", files)
    np.testing.assert_allclose(probs, model, atol=3e-3)  # nnU-Net accumulates in float16
    start = direct_probabilities(fold.parent, fold.parents[1] / "nnUNetTrainerDeepMedic_tiny__nnUNetPlans__3d_fullres"
                                 / "fold_0" / "checkpoint_final.pth", files)
    assert np.abs(probs - start).max() > 10 * np.abs(probs - model).max()

"""DeepMedic-EN end to end on the tiny dataset: train from the supervised DeepMedic with nnUNetv2_train,
the schedule in its log, the evaluation network in the checkpoint, nnUNetv2_predict applies the model."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import TINY_ID
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


def test_log_follows_the_en_schedule_and_the_evaluation_network_learns(trained_en):
    log = json.loads((trained_en / "adversarial_log.json").read_text())
    assert log["step"] == [0, 1, 2, 3]
    assert log["lambda"] == pytest.approx([en_weight(s, 2) for s in range(4)])
    assert log["lambda"] == pytest.approx([0.1 * math.exp(-5), 0.1 * math.exp(-1.25), 0.1, 0.1])
    assert all(0 <= a <= 1 for a in log["adversary_accuracy"])
    assert all(v > 0 for v in log["L_adversary"] + log["Ladv"] + log["Ls"])
    assert len(log["dice_student"]) == 2
    assert (trained_en / "progress_adversarial.png").stat().st_size > 10_000
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
    assert tiny_nnunet.predict_test_cases(EN, tmp_path / "pred") == ["ts_000.nii.gz", "ts_001.nii.gz"]

"""DeepMedic-UDA end to end on the tiny dataset: warm-up and linear ramp of lambda in the log, the domain
discriminator in the checkpoint, resume with --c continues both networks, nnUNetv2_predict applies it."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY_ID, assert_train_losses_compose
from test_nnUNetTrainerDeepMedicEN import assert_predict_is_the_dense_forward_of_the_model
from nnunet_mt.training.adversarial import uda_weight

UDA = "nnUNetTrainerDeepMedicUDA_tiny"


@pytest.fixture(scope="module")
def trained_uda(tiny_nnunet, tiny_unlabeled, trained_deepmedic):
    tiny_nnunet.train(UDA, "-pretrained_weights", str(trained_deepmedic / "checkpoint_final.pth"))
    return tiny_nnunet.model_folder(UDA) / "fold_0"


def test_lambda_waits_for_the_discriminator_then_ramps(trained_uda):
    log = json.loads((trained_uda / "adversarial_log.json").read_text())
    assert log["step"] == [0, 1, 2, 3]
    # ramp-up 4 steps, warm-up 1: 0, then linear to 0.05 at step 4
    assert log["lambda"] == pytest.approx([uda_weight(s, 4, 1) for s in range(4)])
    assert log["lambda"] == pytest.approx([0.0, 0.0, 0.05 / 3, 0.1 / 3])
    # the values by hand: tests/trainers/test_adversarial.py; here what nnU-Net logged is their sum
    assert_train_losses_compose(trained_uda, log, ("Ls", 1), ("Ladv", "lambda"))


def test_checkpoint_holds_the_discriminator_and_resume_continues_it(tiny_nnunet, trained_uda):
    before = torch.load(trained_uda / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    tiny_nnunet.run("nnUNetv2_train", str(TINY_ID), "3d_fullres", "0", "-tr", UDA, "-device", "cpu", "--c",
                    extra_env={"nnUNet_n_proc_DA": "0", "nnUNet_mt_epochs": "3"})
    after = torch.load(trained_uda / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert before["semi_supervised"]["global_step"] == 4 and after["semi_supervised"]["global_step"] == 6
    log = json.loads((trained_uda / "adversarial_log.json").read_text())
    assert log["step"] == list(range(6))
    assert log["lambda"] == pytest.approx([uda_weight(s, 4, 1) for s in range(6)])
    # the discriminator went on from its saved state: Adam's step count continues
    steps = [s["step"] for s in after["semi_supervised"]["adversary_optimizer"]["state"].values()]
    assert all(float(s) == 6 for s in steps)
    assert "training budget from the environment" in (trained_uda / next(
        p.name for p in sorted(trained_uda.glob("training_log_*.txt"))[-1:])).read_text()


def test_nnunetv2_predict_applies_it(tiny_nnunet, trained_uda, tmp_path):
    assert_predict_is_the_dense_forward_of_the_model(tiny_nnunet, UDA, trained_uda, tmp_path)

"""The Π model ablation: no EMA teacher; the student is the model."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import assert_train_losses_compose

PI = "nnUNetTrainerPiModel_tiny"


def test_pi_model_trains_without_teacher_and_keeps_the_student(tiny_nnunet, tiny_unlabeled, trained_deepmedic):
    tiny_nnunet.train(PI, "-pretrained_weights", str(trained_deepmedic / "checkpoint_final.pth"))
    fold = tiny_nnunet.model_folder(PI) / "fold_0"
    ckpt = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    for k, v in ckpt["network_weights"].items():
        assert torch.equal(v, ckpt["student_weights"][k]), k  # the model is the student itself
    log = json.loads((fold / "mean_teacher_log.json").read_text())
    assert log["beta"] == pytest.approx([math.exp(-5), math.exp(-1.25), 1.0, 1.0])
    assert all(math.isnan(a) for a in log["alpha"])  # no EMA
    # that the target is the student's own second noisy pass is test_nnUNetTrainerMeanTeacher's
    # test_pi_model_target_is_the_students_own_second_noisy_pass; here what nnU-Net logged is L = Ls + beta Lc
    assert_train_losses_compose(fold, log, ("Ls", 1), ("Lc", "beta"))

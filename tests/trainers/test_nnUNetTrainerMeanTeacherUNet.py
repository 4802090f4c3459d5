"""The mean teacher on nnU-Net's own U-Net (deep supervision), started from an nnUNetTrainer checkpoint."""
from __future__ import annotations

import json

import numpy as np
import torch

from conftest import TINY_ID, TINY_NAME

UNET_MT = "nnUNetTrainerMeanTeacherUNet_tiny"


def test_unet_mean_teacher_trains_and_predicts_with_the_teacher(tiny_nnunet, tiny_unlabeled, tmp_path):
    tiny_nnunet.train("nnUNetTrainerUNet_tiny")
    pretrained = tiny_nnunet.model_folder("nnUNetTrainerUNet_tiny") / "fold_0" / "checkpoint_final.pth"
    tiny_nnunet.train(UNET_MT, "-pretrained_weights", str(pretrained))
    fold = tiny_nnunet.model_folder(UNET_MT) / "fold_0"
    ckpt = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["semi_supervised"]["global_step"] == 4
    differs = [k for k in ckpt["network_weights"] if not torch.equal(ckpt["network_weights"][k],
                                                                     ckpt["student_weights"][k])]
    assert differs  # the model saved for nnUNetv2_predict is the teacher, not the student
    log = json.loads((fold / "mean_teacher_log.json").read_text())
    assert log["alpha"] == [0.99, 0.99, 0.99, 0.999]
    assert all(np.isfinite(log["Lc"]))
    out = tmp_path / "pred"
    tiny_nnunet.run("nnUNetv2_predict", "-i", str(tiny_nnunet.raw / TINY_NAME / "imagesTs"), "-o", str(out),
                    "-d", str(TINY_ID), "-c", "3d_fullres", "-f", "0", "-tr", UNET_MT, "-device", "cpu",
                    "--disable_tta", "-npp", "1", "-nps", "1")
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["ts_000.nii.gz", "ts_001.nii.gz"]

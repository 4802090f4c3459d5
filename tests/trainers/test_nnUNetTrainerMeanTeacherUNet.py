"""The mean teacher on nnU-Net's own U-Net (deep supervision), started from an nnUNetTrainer checkpoint."""
from __future__ import annotations

import json

import numpy as np
import torch

from conftest import TINY_ID, TINY_NAME, assert_train_losses_compose

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
    assert differs  # the model saved for nnUNetv2_predict is not the student (below: it is the teacher)
    log = json.loads((fold / "mean_teacher_log.json").read_text())
    assert log["alpha"] == [0.99, 0.99, 0.99, 0.999]
    assert_train_losses_compose(fold, log, ("Ls", 1), ("Lc", "beta"))  # L = Ls + beta Lc, as nnU-Net logged it
    # the teacher started from the whole supervised U-Net, output layers included
    train_log = sorted(fold.glob("training_log_*.txt"))[-1].read_text()
    assert "segmentation-layer tensors that nnU-Net's load_pretrained_weights leaves out" in train_log
    assert "epoch 2/2, step 4/4 (100 %)" in train_log
    # the tests' default nnUNet_mt_final_validation=0: said in the log, and nothing written
    assert "final validation skipped (nnUNet_mt_final_validation=0)" in train_log
    assert not (fold / "validation").exists()
    unet_log = "".join(p.read_text() for p in sorted(pretrained.parent.glob("training_log_*.txt")))
    assert "epoch 1/2, step 2/4 (50 %)" in unet_log and "hiddenlayer" not in unet_log
    # the model is the teacher: after 4 EMA steps it stays closer to the start than the student
    start = torch.load(pretrained, map_location="cpu", weights_only=False)["network_weights"]
    drift = {k: sum((ckpt[k][n].float() - start[n].float()).norm() for n in start)
             for k in ("network_weights", "student_weights")}
    assert 0 < drift["network_weights"] < drift["student_weights"]
    # nnUNetv2_predict's probabilities are those of network_weights (the teacher), not the student's: the same
    # as from a checkpoint holding the teacher alone, far from one whose network_weights are the student
    for name, weights in (("teacher", ckpt["network_weights"]), ("student", ckpt["student_weights"])):
        torch.save({**{k: v for k, v in ckpt.items() if k != "student_weights"}, "network_weights": weights},
                   fold / f"checkpoint_{name}.pth")
    probs = {chk: _predicted_probabilities(tiny_nnunet, chk, tmp_path / chk)
             for chk in ("checkpoint_final.pth", "checkpoint_teacher.pth", "checkpoint_student.pth")}
    model = probs["checkpoint_final.pth"]
    np.testing.assert_array_equal(model, probs["checkpoint_teacher.pth"])
    assert np.abs(model - probs["checkpoint_student.pth"]).max() > 1e-3


def _predicted_probabilities(tiny_nnunet, checkpoint: str, out) -> np.ndarray:
    """nnUNetv2_predict's probabilities of test case ts_000 with the U-Net mean teacher's ``checkpoint``."""
    images = out / "images"
    images.mkdir(parents=True)
    for f in (tiny_nnunet.raw / TINY_NAME / "imagesTs").glob("ts_000_*.nii.gz"):
        (images / f.name).symlink_to(f)
    tiny_nnunet.run("nnUNetv2_predict", "-i", str(images), "-o", str(out / "pred"), "-d", str(TINY_ID), "-c",
                    "3d_fullres", "-f", "0", "-tr", UNET_MT, "-chk", checkpoint, "-device", "cpu", "--disable_tta",
                    "--save_probabilities", "-npp", "1", "-nps", "1")
    assert [p.name for p in (out / "pred").glob("*.nii.gz")] == ["ts_000.nii.gz"]
    return np.load(out / "pred" / "ts_000.npz")["probabilities"]


class _FakeTrainer:
    def __init__(self, network):
        self.network = network
        self.logged = []

    def print_to_log_file(self, *args):
        self.logged.append(" ".join(map(str, args)))


def _unet_like(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Module()
    net.decoder = torch.nn.Module()
    net.decoder.stage = torch.nn.Conv3d(2, 4, 3)
    net.decoder.seg_layers = torch.nn.ModuleList([torch.nn.Conv3d(4, 2, 1)])
    return net


def test_pretrained_segmentation_layers_are_restored(tmp_path):
    from nnunet_mt.trainers.nnUNetTrainerUNet import pretrained_weights_argument, restore_segmentation_layers
    saved = _unet_like(0)
    fname = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": saved.state_dict()}, fname)
    trainer = _FakeTrainer(_unet_like(1))
    argv = ["nnUNetv2_train", "1", "3d_fullres", "0", "-pretrained_weights", str(fname)]
    assert pretrained_weights_argument(argv) == str(fname)
    assert pretrained_weights_argument(["nnUNetv2_train", "1"]) is None
    keys = restore_segmentation_layers(trainer, argv)
    assert keys == ["decoder.seg_layers.0.weight", "decoder.seg_layers.0.bias"]
    assert torch.equal(trainer.network.decoder.seg_layers[0].weight, saved.decoder.seg_layers[0].weight)
    # only the layers nnU-Net leaves out: the rest is load_pretrained_weights' business
    assert not torch.equal(trainer.network.decoder.stage.weight, saved.decoder.stage.weight)
    assert "segmentation-layer" in trainer.logged[0]
    assert restore_segmentation_layers(_FakeTrainer(_unet_like(2)), ["nnUNetv2_train"]) == []

"""End to end on a tiny dataset: nnUNetv2_train -tr nnUNetTrainerDeepMedic_tiny, then nnUNetv2_predict,
checked against a direct whole-volume forward pass of the checkpoint's weights."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import TINY_ID, TINY_NAME, direct_probabilities

TRAINER = "nnUNetTrainerDeepMedic_tiny"


def test_training_writes_deepmedic_checkpoint_and_plans(tiny_nnunet, trained_deepmedic):
    model = trained_deepmedic.parent
    plans = json.loads((model / "plans.json").read_text())
    cfg = plans["configurations"]["3d_fullres"]
    assert cfg["architecture"]["network_class_name"] == "nnunet_mt.architectures.deepmedic.DenseDeepMedic"
    assert cfg["batch_size"] == 2  # the tiny variant's batch; the base trainer uses 8
    fingerprint = json.loads((tiny_nnunet.preprocessed / TINY_NAME / "dataset_fingerprint.json").read_text())
    largest = np.max(fingerprint["shapes_after_crop"], 0)
    # odd; tight (largest + 2, made odd) through the 6.5 mm slices, three times the largest in plane
    assert cfg["patch_size"] == [int(largest[0]) + 2 + (1 - (int(largest[0]) + 2) % 2), *[3 * int(s) + 1 - (3 * int(s)) % 2
                                                                                       for s in largest[1:]]]
    ckpt = torch.load(trained_deepmedic / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    group = ckpt["optimizer_state"]["param_groups"][0]
    assert group["lr"] == pytest.approx(1e-4) and group["alpha"] == pytest.approx(0.9)
    assert ckpt["trainer_name"] == TRAINER and ckpt["inference_allowed_mirroring_axes"] is None
    assert (trained_deepmedic / "progress.png").is_file()
    assert not list(trained_deepmedic.glob("*.tmp"))  # atomic checkpoint writes leave nothing behind
    summary = json.loads((trained_deepmedic / "validation" / "summary.json").read_text())
    assert "foreground_mean" in summary


def test_predict_equals_direct_whole_volume_pass_for_any_step_size(tiny_nnunet, trained_deepmedic, tmp_path):
    images = tiny_nnunet.raw / TINY_NAME / "imagesTs"
    outputs = {}
    for step in ("0.5", "1"):
        out = tmp_path / f"pred_{step}"
        tiny_nnunet.run("nnUNetv2_predict", "-i", str(images), "-o", str(out), "-d", str(TINY_ID), "-c", "3d_fullres",
                        "-f", "0", "-tr", TRAINER, "-device", "cpu", "-step_size", step, "--save_probabilities",
                        "-npp", "1", "-nps", "1")
        outputs[step] = out
    for case in ("ts_000", "ts_001"):
        seg = {s: sitk.GetArrayFromImage(sitk.ReadImage(str(o / f"{case}.nii.gz"))) for s, o in outputs.items()}
        assert np.array_equal(seg["0.5"], seg["1"])
        probs = np.load(outputs["0.5"] / f"{case}.npz")["probabilities"]
        files = [str(images / f"{case}_{c:04d}.nii.gz") for c in range(2)]
        direct = direct_probabilities(trained_deepmedic.parent, trained_deepmedic / "checkpoint_final.pth", files)
        assert probs.shape == direct.shape
        np.testing.assert_allclose(probs, direct, atol=3e-3)
        confident = np.abs(direct[1] - 0.5) > 0.01
        assert np.array_equal(seg["0.5"][confident], direct.argmax(0)[confident])
        reference = sitk.ReadImage(files[0])
        predicted = sitk.ReadImage(str(outputs["0.5"] / f"{case}.nii.gz"))
        assert predicted.GetSize() == reference.GetSize()
        assert np.allclose(predicted.GetSpacing(), reference.GetSpacing())


def test_trainer_is_found_only_through_nnUNet_extTrainer(tiny_nnunet):
    proc = tiny_nnunet.run("nnUNetv2_train", str(TINY_ID), "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu",
                           check=False, extra_env={"nnUNet_extTrainer": ""})
    assert proc.returncode != 0 and "Could not find requested nnunet trainer" in proc.stderr + proc.stdout

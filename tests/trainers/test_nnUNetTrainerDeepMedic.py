"""End to end on a tiny dataset: nnUNetv2_train -tr nnUNetTrainerDeepMedic_tiny, then nnUNetv2_predict,
checked against a direct whole-volume forward pass of the checkpoint's weights."""
from __future__ import annotations

import json
import shutil

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
    assert cfg["architecture"]["network_class_name"] == "nnunet_mt.architectures.dense_inference.DenseDeepMedic"
    assert cfg["batch_size"] == 2  # the tiny variant's batch; the base trainer uses 8
    fingerprint = json.loads((tiny_nnunet.preprocessed / TINY_NAME / "dataset_fingerprint.json").read_text())
    largest = np.max(fingerprint["shapes_after_crop"], 0)
    # the inference window: odd, sqrt(3) times the largest case per axis (at least case + 2), e.g. 21 -> 37
    expected = [max(int(n) + 2, int(np.ceil(3 ** 0.5 * n))) for n in largest]
    assert cfg["patch_size"] == [w + 1 - w % 2 for w in expected]
    kwargs = cfg["architecture"]["arch_kwargs"]
    # nnU-Net calls the network with that window; z-scored cases are their non-zero box (DenseDeepMedic)
    assert kwargs["nnunet_window"] is True and kwargs["window_region"] == "nonzero"
    assert cfg["normalization_schemes"] == ["ZScoreNormalization"] * 2
    ckpt = torch.load(trained_deepmedic / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    group = ckpt["optimizer_state"]["param_groups"][0]
    assert group["lr"] == pytest.approx(1e-4) and group["alpha"] == pytest.approx(0.9)
    assert ckpt["trainer_name"] == TRAINER and ckpt["inference_allowed_mirroring_axes"] is None
    assert (trained_deepmedic / "progress.png").is_file()
    assert not list(trained_deepmedic.glob("*.tmp"))  # atomic checkpoint writes leave nothing behind
    summary = json.loads((trained_deepmedic / "validation" / "summary.json").read_text())
    assert "foreground_mean" in summary
    # progress with totals, the final validation announced, no hiddenlayer error
    log = "".join(p.read_text() for p in sorted(trained_deepmedic.glob("training_log_*.txt")))
    assert "training length: 2 epochs x 2 steps = 4 optimizer steps" in log
    assert "epoch 1/2, step 2/4 (50 %)" in log and "epoch 2/2, step 4/4 (100 %)" in log
    assert "final validation (nnU-Net's perform_actual_validation): predicting the 1 validation case(s) of fold 0" \
        in log and "final validation done in" in log
    assert f"the configuration's patch_size {cfg['patch_size']} printed above is the inference window" in log
    assert "hiddenlayer" not in log and "Unable to plot network architecture" not in log


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


def test_a_model_folder_whose_plans_name_the_old_class_path_still_predicts(tiny_nnunet, trained_deepmedic, tmp_path):
    """Plans written by earlier versions name ``nnunet_mt.architectures.deepmedic.DenseDeepMedic``, where the class
    no longer is: the trainer maps the name (``architectures/legacy_names.py``), so such a folder predicts as ever."""
    model = tmp_path / "model"
    shutil.copytree(trained_deepmedic.parent, model,
                    ignore=shutil.ignore_patterns("validation", "snapshots", "*.png", "training_log_*"))
    plans = json.loads((model / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = \
        "nnunet_mt.architectures.deepmedic.DenseDeepMedic"
    (model / "plans.json").write_text(json.dumps(plans))
    images, out = tiny_nnunet.raw / TINY_NAME / "imagesTs", tmp_path / "pred"
    tiny_nnunet.run("nnUNetv2_predict_from_modelfolder", "-i", str(images), "-o", str(out), "-m", str(model), "-f",
                    "0", "-device", "cpu", "--save_probabilities", "-npp", "1", "-nps", "1")
    files = [str(images / f"ts_000_{c:04d}.nii.gz") for c in range(2)]
    direct = direct_probabilities(trained_deepmedic.parent, trained_deepmedic / "checkpoint_final.pth", files)
    np.testing.assert_allclose(np.load(out / "ts_000.npz")["probabilities"], direct, atol=3e-3)


def test_trainer_is_found_only_through_nnUNet_extTrainer(tiny_nnunet):
    proc = tiny_nnunet.run("nnUNetv2_train", str(TINY_ID), "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu",
                           check=False, extra_env={"nnUNet_extTrainer": ""})
    assert proc.returncode != 0 and "Could not find requested nnunet trainer" in proc.stderr + proc.stdout


def _write_case(folder, name, channels):
    folder.mkdir(parents=True, exist_ok=True)
    for c, array in enumerate(channels):
        image = sitk.GetImageFromArray(np.asarray(array, np.float32))
        image.SetSpacing((0.96, 0.96, 6.5))
        sitk.WriteImage(image, str(folder / f"{name}_{c:04d}.nii.gz"))


def test_predict_is_exact_on_noisy_background_and_on_a_larger_case(tiny_nnunet, trained_deepmedic, tmp_path):
    """A scan whose background is Rician noise (nnU-Net's crop to non-zero keeps the whole
    field of view) and a scan with more slices than every training case both come out of
    nnUNetv2_predict exactly as the whole-volume forward pass; a case too large for the inference
    window stops the run with a message naming the window instead of being tiled silently."""
    from conftest import make_tiny_case

    rng = np.random.default_rng(7)
    images = tmp_path / "in"
    channels, _ = make_tiny_case(rng)
    noisy = [np.sqrt((c + rng.normal(0, 0.05, c.shape)) ** 2 + rng.normal(0, 0.05, c.shape) ** 2) for c in channels]
    _write_case(images, "noisy", noisy)
    channels, _ = make_tiny_case(rng, shape_zyx=(13, 64, 56))  # training cases have 10 slices
    _write_case(images, "longer", channels)
    out = tmp_path / "out"
    tiny_nnunet.run("nnUNetv2_predict", "-i", str(images), "-o", str(out), "-d", str(TINY_ID), "-c", "3d_fullres",
                    "-f", "0", "-tr", TRAINER, "-device", "cpu", "--save_probabilities", "-npp", "1", "-nps", "1")
    model = trained_deepmedic.parent
    for case in ("noisy", "longer"):
        files = [str(images / f"{case}_{c:04d}.nii.gz") for c in range(2)]
        direct = direct_probabilities(model, trained_deepmedic / "checkpoint_final.pth", files)
        probs = np.load(out / f"{case}.npz")["probabilities"]
        np.testing.assert_allclose(probs, direct, atol=3e-3)
    window = json.loads((model / "plans.json").read_text())["configurations"]["3d_fullres"]["patch_size"]
    assert window[0] < 2 * 10
    huge = tmp_path / "huge"
    channels, _ = make_tiny_case(rng, shape_zyx=(2 * 10, 64, 56))
    _write_case(huge, "huge", channels)
    proc = tiny_nnunet.run("nnUNetv2_predict", "-i", str(huge), "-o", str(tmp_path / "out_huge"), "-d", str(TINY_ID),
                           "-c", "3d_fullres", "-f", "0", "-tr", TRAINER, "-device", "cpu", "-npp", "1", "-nps", "1",
                           check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "CaseDoesNotFitWindow" in text and f"inference window {window}" in text
    assert not (tmp_path / "out_huge" / "huge.nii.gz").exists()

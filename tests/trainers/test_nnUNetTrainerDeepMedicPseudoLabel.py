"""The pseudo-label baseline end to end on the tiny dataset: nnUNetv2_train from the supervised DeepMedic;
its unannotated targets are the initial model's predictions."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bare_trainer import (PATCH, assert_applied_gradient, bare_trainer, batches, cross_entropy_by_hand,
                          gradients_at_step, output_voxels)
from matplotlib.image import imread

from conftest import TINY_NAME, assert_train_losses_compose

PL = "nnUNetTrainerDeepMedicPseudoLabel_tiny"


def test_loss_is_ls_plus_w_lp_from_one_forward_of_both_halves():
    """L = Ls + w Lp (w = 1) by hand on fixed patches: the cross-entropy of the annotated half against its
    labels and of the unannotated half against its pseudo-labels, both from one forward of the 2 + 2 patches
    (BatchNorm over both); the segmenter's step applies the gradient of that L."""
    t = bare_trainer(PL)
    annotated, _ = batches(11, 1)
    g = torch.Generator().manual_seed(12)
    pseudo = {"data": torch.randn(2, 2, *PATCH, generator=g),
              "target": torch.randint(0, 2, (2, 1, *PATCH), generator=g).float()}  # pseudo-labels as the loader's
    t.dataloader_unlabeled = iter([pseudo])
    replica = copy.deepcopy(t.network)
    applied = gradients_at_step(t.optimizer)
    torch.manual_seed(5)  # the same dropout masks in the trainer's forward and in the replay
    out = type(t).train_step(t, annotated[0])
    torch.manual_seed(5)
    logits = replica(torch.cat([annotated[0]["data"], pseudo["data"]]))
    ls = cross_entropy_by_hand(logits[:2], output_voxels(annotated[0]["target"]))
    lp = cross_entropy_by_hand(logits[2:], output_voxels(pseudo["target"]))
    assert t.pseudo_label_weight == 1
    assert (out["Ls"], out["Lp"], float(out["loss"])) == pytest.approx((ls.item(), lp.item(), (ls + lp).item()),
                                                                       rel=1e-5)
    assert_applied_gradient(applied[0], ls + lp, replica.parameters(), max_norm=12, without=ls)


@pytest.fixture(scope="module")
def pretrained(trained_deepmedic) -> Path:
    return trained_deepmedic / "checkpoint_final.pth"


@pytest.fixture(scope="module")
def trained_pseudo_label(tiny_nnunet, tiny_unlabeled, pretrained) -> Path:
    tiny_nnunet.train(PL, "-pretrained_weights", str(pretrained))
    return tiny_nnunet.model_folder(PL) / "fold_0"


def _unlabeled_folder(tiny_nnunet) -> Path:
    return tiny_nnunet.preprocessed / TINY_NAME / "nnUNetPlans_3d_fullres_unlabeled"


def _init_network(model_folder: Path, pretrained: Path):
    from nnunet_mt.architectures.dense_inference import DenseDeepMedic

    plans = json.loads((model_folder / "plans.json").read_text())
    kwargs = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    net = DenseDeepMedic(2, 2, **kwargs)
    net.load_state_dict(torch.load(pretrained, map_location="cpu", weights_only=False)["network_weights"])
    return net.eval()


def test_trains_the_student_on_both_halves(trained_pseudo_label, pretrained):
    ckpt = torch.load(trained_pseudo_label / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["semi_supervised"]["global_step"] == 4 and ckpt["current_epoch"] == 2
    for k, v in ckpt["network_weights"].items():
        assert torch.equal(v, ckpt["student_weights"][k]), k  # the model is the student
    start = torch.load(pretrained, map_location="cpu", weights_only=False)["network_weights"]
    assert any(not torch.equal(v, start[k]) for k, v in ckpt["network_weights"].items())
    log = json.loads((trained_pseudo_label / "pseudo_label_log.json").read_text())
    assert log["step"] == [0, 1, 2, 3] and len(log["dice_student"]) == 2
    assert_train_losses_compose(trained_pseudo_label, log, ("Ls", 1), ("Lp", 1))  # L = Ls + Lp, by hand above
    # the plot of this history: Dice, Ls, Lp (its data: tests/training/test_plots.py), 9 x (3 + 2.2 x 2) inches
    # at 80 dpi
    assert imread(trained_pseudo_label / "progress_pseudo_label.png").shape[:2] == (592, 720)


def test_pseudo_labels_are_the_init_models_predictions(tiny_nnunet, trained_pseudo_label, pretrained):
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunet_mt.training.pseudo_lesions import PseudoLabelMaps, labels_folder, weights_digest

    net = _init_network(trained_pseudo_label.parent, pretrained)
    ckpt = torch.load(trained_pseudo_label / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    digest = ckpt["semi_supervised"]["pseudo_lesion_digest"]
    assert digest == weights_digest(net)  # predicted with the -pretrained_weights model
    folder = _unlabeled_folder(tiny_nnunet)
    maps = PseudoLabelMaps(labels_folder(folder, digest))
    dataset = infer_dataset_class(str(folder))(str(folder))
    assert maps.cases() == sorted(dataset.identifiers) == ["un_000", "un_001", "un_002"]
    assert all(p.name.startswith("pseudo_") for p in folder.iterdir()
               if not p.name.startswith(("un_", ".")))  # the plugin's cache files
    lesion_voxels = 0
    for case in dataset.identifiers:
        data = torch.from_numpy(np.asarray(dataset.load_case(case)[0][:], np.float32))
        with torch.no_grad():
            probs = torch.softmax(net.forward_dense(data[None]), 1)[0].numpy()
        stored = maps[case]
        assert stored.shape == probs.shape[1:] and stored.dtype == np.uint8
        # nnU-Net's predictor accumulates in float16: compare where the model is not on the fence
        confident = np.abs(probs[1] - 0.5) > 0.01
        np.testing.assert_array_equal(stored[confident], probs.argmax(0)[confident])
        assert np.mean(stored == probs.argmax(0)) > 0.999
        lesion_voxels += int((stored == 1).sum())
    assert lesion_voxels > 0  # the test would be vacuous if the model predicted background everywhere


def test_unannotated_targets_are_the_pseudo_labels(tiny_nnunet, trained_pseudo_label, pretrained, tmp_path):
    """What the trainer's unannotated loader reads: the stored maps inside the head, nnU-Net's -1 outside."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunet_mt.training.pseudo_lesions import PseudoLabelMaps

    script = Path(__file__).with_name("pseudo_label_wiring.py")
    out = tmp_path / "wiring.pt"
    tiny_nnunet.run(sys.executable, str(script), str(pretrained), str(out),
                    extra_env={"nnUNet_n_proc_DA": "0", "nnUNet_results": str(tmp_path / "results")})
    wiring = torch.load(out, weights_only=False)
    ckpt = torch.load(trained_pseudo_label / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert wiring["digest"] == ckpt["semi_supervised"]["pseudo_lesion_digest"]
    maps = PseudoLabelMaps(wiring["labels_folder"])
    folder = _unlabeled_folder(tiny_nnunet)
    dataset = infer_dataset_class(str(folder))(str(folder))
    for case, seg in wiring["segs"].items():
        original = np.asarray(dataset.load_case(case)[1][:])
        inside = original[0] >= 0
        assert np.array_equal(seg[0][inside], maps[case][inside])
        assert np.all(seg[0][~inside] == -1) and (~inside).any()
        assert (seg[0] == 1).sum() == (maps[case][inside] == 1).sum()

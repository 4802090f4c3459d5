"""The checkpoint checks of nnunet_mt/training/checkpoints.py: each unusable file gets an error that names it and
says what is wrong and what to do."""
from __future__ import annotations

import pytest
import torch

from nnunet_mt.training.checkpoints import (CheckpointError, incompatibility, pretrained_weights_argument,
                                            read_checkpoint, resume_next_step)

NEXT = "Do this next."


def test_the_pretrained_weights_argument_is_read_from_the_command_line():
    assert pretrained_weights_argument(["nnUNetv2_train", "1", "-pretrained_weights", "a.pth", "--c"]) == "a.pth"
    assert pretrained_weights_argument(["nnUNetv2_train", "1", "-pretrained_weights"]) is None
    assert pretrained_weights_argument(["nnUNetv2_train", "1"]) is None


def test_read_checkpoint_names_a_missing_a_truncated_and_a_foreign_file(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"network_weights": {"w": torch.ones(2)}}, good)
    assert torch.equal(read_checkpoint(str(good), "-pretrained_weights", NEXT)["network_weights"]["w"], torch.ones(2))
    with pytest.raises(CheckpointError, match=f"^-pretrained_weights {tmp_path}/nope.pth does not exist. {NEXT}$"):
        read_checkpoint(str(tmp_path / "nope.pth"), "-pretrained_weights", NEXT)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[:100])  # as a copy interrupted half-way
    with pytest.raises(CheckpointError, match=rf"^x {cut} \(100 bytes\) cannot be read: it is truncated or not a "
                                              rf"PyTorch checkpoint \(.*\)\. {NEXT}$"):
        read_checkpoint(str(cut), "x", NEXT)
    plain = tmp_path / "plain.pth"
    torch.save({"w": torch.ones(2), "b": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointError, match=rf"^x {plain} is a plain state_dict \(2 tensors\), not a checkpoint "
                                              r"written by nnUNetv2_train: .*'network_weights'.*" + NEXT):
        read_checkpoint(str(plain), "x", NEXT)
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {}, "epoch": 3}, other)
    with pytest.raises(CheckpointError, match=r"is a dict with keys \['epoch', 'state_dict'\], not a checkpoint"):
        read_checkpoint(str(other), "x", NEXT)


def test_incompatibility_counts_missing_unexpected_and_reshaped_tensors():
    own = {"a.w": torch.zeros(2, 3), "b.w": torch.zeros(4), "seg_layers.w": torch.zeros(1)}
    assert incompatibility(own, dict(own)) is None
    saved = {"a.w": torch.zeros(3, 3), "b.w": torch.zeros(4), "extra": torch.zeros(1)}
    assert incompatibility(own, saved) == ("1 of the network's 3 tensors are missing (e.g. seg_layers.w); 1 are not "
                                           "in the network (e.g. extra); 1 differ in shape (e.g. a.w: file (3, 3), "
                                           "network (2, 3))")
    # what nnU-Net's load_pretrained_weights leaves out, and keys only in the file, may be allowed
    assert incompatibility(own, saved, skip=("seg_layers",), strict=False) == \
        "1 differ in shape (e.g. a.w: file (3, 3), network (2, 3))"
    assert incompatibility(own, {**own, "extra": torch.zeros(1)}, strict=False) is None


def test_resume_next_step_names_the_checkpoint_nnunet_falls_back_to(tmp_path):
    final, latest, best = (tmp_path / f"checkpoint_{k}.pth" for k in ("final", "latest", "best"))
    anew = "nnUNetv2_train then finds no other checkpoint and starts the training anew"
    assert anew in resume_next_step(str(final))
    best.touch()
    assert "nnUNetv2_train then continues from checkpoint_best.pth (older)" in resume_next_step(str(final))
    latest.touch()
    assert "continues from checkpoint_latest.pth (older)" in resume_next_step(str(final))
    assert "continues from checkpoint_best.pth (older)" in resume_next_step(str(latest))
    assert anew in resume_next_step(str(best))  # the last one nnU-Net tries

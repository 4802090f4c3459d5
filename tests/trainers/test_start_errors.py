"""What a user is told when a run cannot start from the checkpoint it was given:
unreadable or foreign ``-pretrained_weights``, an unreadable ``checkpoint_latest.pth`` for ``--c``, and which
supervised trainer to run first. Trainers are built in this process (``in_process.make_trainer``)."""
from __future__ import annotations

import os
import shutil

import pytest
import torch
from nnunetv2.run.run_training import maybe_load_checkpoint
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

import in_process
from nnunet_mt.trainers.semi_supervised import SemiSupervisedMixin
from test_checkpoints import plugin_trainers

make_trainer = in_process.make_trainer  # the fixture, under its name for pytest


def test_each_semi_supervised_variant_names_the_supervised_variant_of_its_own_width():
    """nnUNetTrainerMeanTeacher_tiny must not send the user to the full-width nnUNetTrainerDeepMedic."""
    trainers = {cls.__name__: cls for cls in plugin_trainers()}
    checked = 0
    for name, cls in trainers.items():
        if not issubclass(cls, SemiSupervisedMixin):
            continue
        supervised = cls.supervised_trainer_name
        assert supervised in trainers or supervised == nnUNetTrainer.__name__, (name, supervised)
        if supervised in trainers:
            sup = trainers[supervised]
            assert not issubclass(sup, SemiSupervisedMixin), (name, supervised)
            assert getattr(sup, "deepmedic_kwargs", None) == getattr(cls, "deepmedic_kwargs", None), (name, supervised)
        checked += 1
    assert checked >= 10
    assert trainers["nnUNetTrainerMeanTeacher_tiny"].supervised_trainer_name == "nnUNetTrainerDeepMedic_tiny"
    assert trainers["nnUNetTrainerDeepMedicEN_tiny"].supervised_trainer_name == "nnUNetTrainerDeepMedic_tiny"


def _checkpoint_of(make_trainer, name: str, path) -> None:
    """A real checkpoint of plugin trainer ``name`` (initialised, not trained), saved to ``path``."""
    trainer = make_trainer(name)
    trainer.initialize()
    trainer.save_checkpoint(str(path))


@pytest.fixture(scope="module")
def bad_files(make_trainer, tmp_path_factory):
    """A truncated checkpoint, a plain state_dict and a checkpoint of the full-width DeepMedic."""
    tmp_path = tmp_path_factory.mktemp("checkpoints")
    good = tmp_path / "good.pth"
    _checkpoint_of(make_trainer, "nnUNetTrainerDeepMedic_tiny", good)
    data = good.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    torch.save(torch.load(good, weights_only=False)["network_weights"], tmp_path / "state_dict.pth")
    _checkpoint_of(make_trainer, "nnUNetTrainerDeepMedic", tmp_path / "full_width.pth")
    return {"good": good, "truncated": tmp_path / "truncated.pth", "state_dict": tmp_path / "state_dict.pth",
            "full_width": tmp_path / "full_width.pth"}


PRETRAINED_PROBLEMS = {"truncated": "cannot be read: it is truncated or not a PyTorch checkpoint",
                       "state_dict": "is a plain state_dict",
                       "full_width": "does not fit nnUNetTrainerMeanTeacher_tiny's network (it was written by "
                                     "nnUNetTrainerDeepMedic): "}


@pytest.mark.parametrize("kind", sorted(PRETRAINED_PROBLEMS))
def test_unusable_pretrained_weights_are_named_with_the_problem(make_trainer, bad_files, monkeypatch, kind):
    trainer = make_trainer("nnUNetTrainerMeanTeacher_tiny")
    path = str(bad_files[kind])
    monkeypatch.setattr("sys.argv", ["nnUNetv2_train", "901", "3d_fullres", "0", "-tr", trainer.__class__.__name__,
                                     "-pretrained_weights", path])
    with pytest.raises(RuntimeError) as info:
        maybe_load_checkpoint(trainer, False, False, path)  # what nnUNetv2_train runs
    message = str(info.value)
    assert f"-pretrained_weights {path}" in message and PRETRAINED_PROBLEMS[kind] in message
    assert "starts from a checkpoint_final.pth of nnUNetTrainerDeepMedic_tiny" in message
    if kind == "full_width":  # one example, not nnU-Net's dump of every tensor
        assert "differ in shape (e.g. " in message and len(message) < 800


@pytest.mark.parametrize("name", ["nnUNetTrainerDeepMedic_tiny", "nnUNetTrainerMeanTeacher_tiny"])
@pytest.mark.parametrize("kind", ["truncated", "state_dict", "full_width"])
def test_unusable_checkpoint_for_continue_says_which_and_what_next(make_trainer, bad_files, name, kind):
    trainer = make_trainer(name)
    folder = trainer.output_folder
    shutil.rmtree(folder, ignore_errors=True)  # the trainers of this module share nnUNet_results
    os.makedirs(folder, exist_ok=True)
    latest = os.path.join(folder, "checkpoint_latest.pth")
    shutil.copy(bad_files[kind], latest)
    shutil.copy(bad_files["good"], os.path.join(folder, "checkpoint_best.pth"))
    with pytest.raises(RuntimeError) as info:
        maybe_load_checkpoint(trainer, True, False, None)  # nnUNetv2_train --c
    message = str(info.value)
    assert f"the checkpoint to continue from (--c), {latest}" in message
    assert "run the same command with --c again: nnUNetv2_train then continues from checkpoint_best.pth" in message
    assert {"truncated": "truncated", "state_dict": "plain state_dict",
            "full_width": "does not fit"}[kind] in message

"""Every trainer writes ``checkpoint_latest.pth`` after every epoch (nnU-Net: every 50), atomically, so a killed
run resumed with ``--c`` loses at most one epoch and never finds a half-written checkpoint.
The runner-level test (killed during a training, resumed from the saved step) is in test_reproduce.py."""
from __future__ import annotations

import copy
import importlib
import inspect
import json
import pickle
import pkgutil

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

import nnunet_mt.trainers
from conftest import TINY_NAME
from nnunet_mt.trainers.plugin_trainer import PluginTrainer


def plugin_trainers() -> list[type]:
    """Every trainer class nnUNet_extTrainer finds in the plugin."""
    found = {}
    for info in pkgutil.iter_modules(nnunet_mt.trainers.__path__):
        module = importlib.import_module(f"nnunet_mt.trainers.{info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, nnUNetTrainer) and cls.__module__.startswith("nnunet_mt."):
                found[name] = cls
    return [found[k] for k in sorted(found)]


@pytest.fixture
def trainer_env(tiny_nnunet, tmp_path, monkeypatch):
    """nnU-Net's folders for trainers built in this process (nnU-Net reads them when used)."""
    monkeypatch.setenv("nnUNet_preprocessed", str(tiny_nnunet.preprocessed))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.setenv("nnUNet_compile", "false")
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    folder = tiny_nnunet.preprocessed / TINY_NAME
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())

    def make(cls):
        return cls(dict(copy.deepcopy(plans), continue_training=False), "3d_fullres", 0, dataset_json, torch.device("cpu"))
    return make


def test_every_trainer_checkpoints_every_epoch_atomically(trainer_env):
    trainers = plugin_trainers()
    names = {cls.__name__ for cls in trainers}
    for expected in ("nnUNetTrainerDeepMedic", "nnUNetTrainerMeanTeacher", "nnUNetTrainerPiModel",
                     "nnUNetTrainerDeepMedicEN", "nnUNetTrainerDeepMedicUDA", "nnUNetTrainerDeepMedicPseudoLabel",
                     "nnUNetTrainerUNet", "nnUNetTrainerMeanTeacherUNet"):
        assert expected in names and f"{expected}_tiny" in names
    for cls in trainers:
        # PluginTrainer's save writes a method's contents (write_checkpoint) to a temporary name, then renames
        assert issubclass(cls, PluginTrainer) and cls.save_checkpoint is PluginTrainer.save_checkpoint, cls.__name__
        assert trainer_env(cls).save_every == 1, cls.__name__


def _corrupting_save(trainer, path) -> None:
    """A save that fails half-way, as a kill during the write would: something in it cannot be pickled."""
    trainer.inference_allowed_mirroring_axes = lambda: None
    trainer.current_epoch = 7
    # Python 3.11 says AttributeError for a local function, later ones PicklingError
    with pytest.raises((AttributeError, pickle.PicklingError), match=r"Can't pickle .*<lambda>"):
        trainer.save_checkpoint(str(path))


@pytest.mark.parametrize("name", ["nnUNetTrainerDeepMedic_tiny", "nnUNetTrainerDeepMedicEN_tiny",
                                  "nnUNetTrainerUNet_tiny"])
def test_a_failed_write_leaves_the_previous_checkpoint(trainer_env, tmp_path, name):
    cls = next(c for c in plugin_trainers() if c.__name__ == name)
    trainer = trainer_env(cls)
    trainer.initialize()
    path = tmp_path / "checkpoint_latest.pth"
    trainer.current_epoch = 2
    trainer.save_checkpoint(str(path))
    _corrupting_save(trainer, path)
    assert torch.load(path, map_location="cpu", weights_only=False)["current_epoch"] == 3  # the previous one


def test_nnunets_own_save_would_lose_it(trainer_env, tmp_path):
    """The control: nnU-Net's save_checkpoint writes in place, so the same failure destroys the file."""
    trainer = trainer_env(nnUNetTrainer)
    trainer.initialize()
    path = tmp_path / "checkpoint_latest.pth"
    trainer.save_checkpoint(str(path))
    _corrupting_save(trainer, path)
    with pytest.raises(RuntimeError, match="PytorchStreamReader failed"):  # a truncated archive
        torch.load(path, map_location="cpu", weights_only=False)

"""PluginTrainer: the plugin's steps around nnU-Net's calls happen in the order its module docstring lists.

nnU-Net's hooks are recorders here (tests/plugin_stub.py), so each test reads one sequence of events: the
plugin's hooks, its log lines and nnU-Net's calls, interleaved as they happened.
"""
from __future__ import annotations

import copy
import importlib.util
import inspect
import json
import os
import pickle
import pkgutil
import signal

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

import nnunet_mt.trainers
from conftest import TINY_NAME
from plugin_stub import bare, stub_nnunet

from nnunet_mt.trainers.plugin_trainer import PluginTrainer
from nnunet_mt.training.checkpoints import CheckpointError
from nnunet_mt.training.seeding import RandomStream


class _Recording(PluginTrainer):
    snapshot_every = 2
    loss_composition = "Ls + beta * Lc"
    rampup_length = 400
    log_name = "mean_teacher"

    def prepare_fresh_run(self):
        self.logged.append("prepare_fresh_run")
        super().prepare_fresh_run()

    def describe_setup(self):
        self.logged.append("describe_setup")

    def resume_state(self):
        self.logged.append("resume_state")

    def check_checkpoint_kind(self, checkpoint, filename):
        self.logged.append(f"check_checkpoint_kind {sorted(checkpoint)}")

    def restore_from_checkpoint(self, checkpoint):
        self.logged.append("restore_from_checkpoint")


def _snapshots(t) -> list[str]:
    folder = os.path.join(t.output_folder, "snapshots")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_a_fresh_start_seeds_opens_the_stream_and_traps_sigterm_before_nnunet_then_logs_and_snapshots(
        monkeypatch, tmp_path):
    calls = []
    stub_nnunet(monkeypatch, calls)
    t = bare(_Recording, tmp_path, calls)
    before = signal.getsignal(signal.SIGTERM)
    seen = {}
    monkeypatch.setattr(_Recording, "describe_setup", lambda self: calls.append(f"describe_setup {_snapshots(self)}"))
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_module

    def nnunet_start(self):
        calls.append("nnU-Net on_train_start")
        seen.update(stream=isinstance(getattr(self, "annotated_stream", None), RandomStream),
                    sigterm=signal.getsignal(signal.SIGTERM) is not before, torch=torch.rand(1).item())
    monkeypatch.setattr(nnunet_module.nnUNetTrainer, "on_train_start", nnunet_start)
    try:
        t.on_train_start()
    finally:
        signal.signal(signal.SIGTERM, before)
    assert calls == ["prepare_fresh_run", "log: seeded run: nnUNet_mt_seed=0", "nnU-Net on_train_start",
                     "log: training length: 5 epochs x 20 steps = 100 optimizer steps", calls[4],
                     "describe_setup ['epoch_0000.pth']", "resume_state"]
    assert calls[4].startswith("log: note: nnU-Net's train_loss (loss_tr in progress.png) is L = Ls + beta * Lc; it "
                               "rises while beta ramps up over the first 400 steps")
    assert seen["stream"] and seen["sigterm"]
    torch.manual_seed(0 + 1)  # the fresh run's seed: nnUNet_mt_seed + 1 (fresh_run_seed)
    assert seen["torch"] == torch.rand(1).item()


def test_a_resumed_start_neither_reseeds_nor_writes_snapshot_0(monkeypatch, tmp_path):
    calls = []
    stub_nnunet(monkeypatch, calls)
    t = bare(_Recording, tmp_path, calls)
    t.current_epoch = 3
    before = signal.getsignal(signal.SIGTERM)
    try:
        t.on_train_start()
    finally:
        signal.signal(signal.SIGTERM, before)
    assert calls[:2] == ["nnU-Net on_train_start",
                         "log: training length: 5 epochs x 20 steps = 100 optimizer steps (resuming after epoch 3)"]
    assert calls[-2:] == ["describe_setup", "resume_state"] and _snapshots(t) == []


def test_each_epoch_snapshots_when_due_and_logs_progress_before_nnunet_counts_it(monkeypatch, tmp_path):
    calls = []
    stub_nnunet(monkeypatch, calls)
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_module

    def nnunet_epoch_end(self):
        calls.append(f"nnU-Net on_epoch_end {_snapshots(self)}")
        self.current_epoch += 1
    monkeypatch.setattr(nnunet_module.nnUNetTrainer, "on_epoch_end", nnunet_epoch_end)
    t = bare(_Recording, tmp_path, calls)
    for _ in range(4):
        t.on_epoch_start()
        t.on_epoch_end()
    assert [c.split(",")[0] for c in calls] == [
        "nnU-Net on_epoch_start", "log: epoch 1/5", "nnU-Net on_epoch_end []",
        "nnU-Net on_epoch_start", "log: epoch 2/5", "nnU-Net on_epoch_end ['epoch_0002.pth']",
        "nnU-Net on_epoch_start", "log: epoch 3/5", "nnU-Net on_epoch_end ['epoch_0002.pth']",
        "nnU-Net on_epoch_start", "log: epoch 4/5", "nnU-Net on_epoch_end ['epoch_0002.pth'"]
    assert calls[-1] == "nnU-Net on_epoch_end ['epoch_0002.pth', 'epoch_0004.pth']"  # written before nnU-Net's
    assert "step 40/100 (40 %), this epoch" in calls[4]
    assert torch.load(tmp_path / "snapshots" / "epoch_0004.pth", weights_only=False)["current_epoch"] == 4


def test_checkpoints_are_written_under_a_temporary_name_and_renamed(monkeypatch, tmp_path):
    calls = []
    stub_nnunet(monkeypatch, calls)
    t = bare(_Recording, tmp_path, calls)
    names = []
    monkeypatch.setattr(_Recording, "write_checkpoint",
                        lambda self, filename: (names.append(filename), PluginTrainer.write_checkpoint(self, filename)))
    target = tmp_path / "checkpoint_latest.pth"
    t.save_checkpoint(str(target))
    assert names == [f"{target}.tmp"] and calls == ["nnU-Net save_checkpoint"]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_latest.pth"]
    assert torch.equal(torch.load(target)["network_weights"]["weight"], t.network.weight)
    monkeypatch.setattr(_Recording, "write_checkpoint", lambda self, filename: None)  # another DDP rank
    os.remove(target)
    t.save_checkpoint(str(target))
    assert os.listdir(tmp_path) == []


def test_a_checkpoint_to_continue_from_is_checked_before_nnunet_reads_it(monkeypatch, tmp_path):
    calls = []
    stub_nnunet(monkeypatch, calls)
    t = bare(_Recording, tmp_path / "out", calls)
    good = tmp_path / "good.pth"
    torch.save({"network_weights": t.network.state_dict(), "semi_supervised": {}}, good)
    t.load_checkpoint(str(good))
    assert calls == ["check_checkpoint_kind ['network_weights', 'semi_supervised']", "nnU-Net load_checkpoint",
                     "restore_from_checkpoint"]
    calls.clear()
    wrong = tmp_path / "wrong.pth"
    torch.save({"network_weights": torch.nn.Linear(3, 1).state_dict()}, wrong)
    with pytest.raises(CheckpointError, match=f"--c.*{wrong}.*does not fit _Recording's network"):
        t.load_checkpoint(str(wrong))
    assert calls == []  # nothing loaded


@pytest.mark.parametrize("setting", ["0", "1"])
def test_the_final_validation_is_announced_timed_or_skipped(monkeypatch, tmp_path, setting):
    calls = []
    stub_nnunet(monkeypatch, calls)
    monkeypatch.setenv("nnUNet_mt_final_validation", setting)
    t = bare(_Recording, tmp_path, calls)
    t.perform_actual_validation()
    if setting == "0":
        assert calls == [f"log: final validation skipped (nnUNet_mt_final_validation=0): the model is evaluated "
                         f"elsewhere; nothing is written to {tmp_path / 'validation'}"]
    else:
        assert calls[0].startswith("log: final validation (nnU-Net's perform_actual_validation): predicting the "
                                   "validation cases of fold 0 whole-volume")
        assert calls[1] == "nnU-Net perform_actual_validation" and calls[2].startswith("log: final validation done in")


def test_a_bad_final_validation_setting_stops_the_trainer_before_nnunets_init(monkeypatch):
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_module

    calls = []
    monkeypatch.setattr(nnunet_module.nnUNetTrainer, "__init__", lambda self, *a, **k: calls.append("nnU-Net init"))
    monkeypatch.setenv("nnUNet_mt_final_validation", "no")
    with pytest.raises(ValueError, match=r"nnUNet_mt_final_validation='no': expected 0 or 1"):
        PluginTrainer({}, "3d_fullres", 0, {})
    assert calls == []


def test_the_loaders_stop_after_nnunets_end_even_when_it_fails(monkeypatch, tmp_path):
    calls = []
    stub_nnunet(monkeypatch, calls)
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_module

    def failing_end(self):
        calls.append("nnU-Net on_train_end")
        raise RuntimeError("nnU-Net failed")
    monkeypatch.setattr(nnunet_module.nnUNetTrainer, "on_train_end", failing_end)

    class _Loader:
        def __init__(self, name):
            self.name = name

        def _finish(self, timeout):
            calls.append(f"stopped {self.name}")

    t = bare(_Recording, tmp_path, calls)
    t.dataloader_train, t.dataloader_val, t.dataloader_unlabeled = (_Loader(n) for n in ("train", "val", "unlabeled"))
    with pytest.raises(RuntimeError, match="nnU-Net failed"):
        t.on_train_end()
    assert calls == ["nnU-Net on_train_end", "stopped train", "stopped val", "stopped unlabeled"]


def test_nnunets_network_diagram_only_when_hiddenlayer_is_installed(monkeypatch, tmp_path):
    calls = []
    stub_nnunet(monkeypatch, calls)
    bare(_Recording, tmp_path, calls).plot_network_architecture()
    assert calls == (["nnU-Net plot_network_architecture"] if importlib.util.find_spec("hiddenlayer") else [])


# Every trainer writes ``checkpoint_latest.pth`` after every epoch (nnU-Net: every 50), atomically, so a killed
# run resumed with ``--c`` loses at most one epoch and never finds a half-written checkpoint.
# The runner-level test (killed during a training, resumed from the saved step) is in test_reproduce.py.


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

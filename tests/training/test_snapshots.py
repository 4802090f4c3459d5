"""Weight snapshots: cadence, content (the weights of that moment, the step, what nnU-Net's predictor reads)."""
from __future__ import annotations

import torch
from torch import nn

from plugin_stub import bare, stub_nnunet

from nnunet_mt.trainers.plugin_trainer import PluginTrainer
from nnunet_mt.training.snapshots import list_snapshots, snapshot_due


def test_due_after_every_kth_epoch_and_at_the_start():
    assert [e for e in range(9) if snapshot_due(e, 3)] == [0, 3, 6]
    assert not any(snapshot_due(e, 0) for e in range(9))


class _Supervised(PluginTrainer):
    """PluginTrainer writes the snapshots; nnU-Net's hooks are stubbed (tests/plugin_stub.py)."""
    snapshot_every = 2


class _Wrapper(nn.Module):  # stands for DDP: the network is .module
    def __init__(self, module):
        super().__init__()
        self.module = module


class _SemiSupervised(_Supervised):
    """A model that is not the student (the mean teacher's); _make gives it a teacher and a wrapped student."""

    def target_network(self):
        return self.teacher

    def plain_network(self):
        return self.network.module


def _make(cls, out, monkeypatch):
    stub_nnunet(monkeypatch, [])
    trainer = bare(cls, out, iterations=5)
    if issubclass(cls, _SemiSupervised):
        trainer.teacher, trainer.global_step, trainer.network = nn.Linear(2, 1), 0, _Wrapper(trainer.network)
    return trainer


def _train(trainer, epochs):
    weights = {}
    trainer.on_train_start()
    weights[0] = trainer.network.state_dict()["weight"].clone() if not hasattr(trainer.network, "module") \
        else trainer.network.module.weight.detach().clone()
    for e in range(1, epochs + 1):
        with torch.no_grad():
            for p in trainer.network.parameters():
                p.add_(1.0)
        if hasattr(trainer, "global_step"):
            trainer.global_step += 3
        trainer.on_epoch_end()
        net = trainer.network.module if hasattr(trainer.network, "module") else trainer.network
        weights[e] = net.weight.detach().clone()
    trainer.on_train_end()  # puts the SIGTERM handler back
    return weights


def test_cadence_and_content(tmp_path, monkeypatch):
    trainer = _make(_Supervised, tmp_path, monkeypatch)
    weights = _train(trainer, 5)
    snaps = list_snapshots(tmp_path)
    assert [s.name for s in snaps] == ["epoch_0000.pth", "epoch_0002.pth", "epoch_0004.pth"]
    assert not list((tmp_path / "snapshots").glob("*.tmp"))
    for snap, epoch in zip(snaps, (0, 2, 4)):
        state = torch.load(snap, weights_only=False)
        assert state["current_epoch"] == epoch and state["step"] == epoch * 5
        assert torch.equal(state["network_weights"]["weight"], weights[epoch])  # a copy of that moment
        assert state["trainer_name"] == "_Supervised" and state["init_args"]["configuration"] == "3d_fullres"
        assert "student_weights" not in state


def test_semi_supervised_keeps_model_and_student(tmp_path, monkeypatch):
    trainer = _make(_SemiSupervised, tmp_path, monkeypatch)
    teacher = trainer.teacher.weight.detach().clone()
    weights = _train(trainer, 2)
    state = torch.load(list_snapshots(tmp_path)[-1], weights_only=False)
    assert state["step"] == 6  # the trainer's own step counter
    assert torch.equal(state["network_weights"]["weight"], teacher)  # the model: the teacher (untouched here)
    assert torch.equal(state["student_weights"]["weight"], weights[2])


class _StudentIsModel(_SemiSupervised):  # pseudo-label, EN, UDA, Π: the model is the student
    def target_network(self):
        return self.plain_network()


def test_student_written_once_when_it_is_the_model(tmp_path, monkeypatch):
    trainer = _make(_StudentIsModel, tmp_path, monkeypatch)
    weights = _train(trainer, 2)
    state = torch.load(list_snapshots(tmp_path)[-1], weights_only=False)
    assert "student_weights" not in state
    assert torch.equal(state["network_weights"]["weight"], weights[2])


def test_off_and_resumed_runs_write_no_epoch_0(tmp_path, monkeypatch):
    off = _make(_Supervised, tmp_path / "off", monkeypatch)
    off.snapshot_every = 0
    _train(off, 3)
    assert list_snapshots(tmp_path / "off") == []
    resumed = _make(_Supervised, tmp_path / "resumed", monkeypatch)
    resumed.current_epoch = 3  # as after --c: the start is not the run's start
    _train(resumed, 1)
    assert [s.name for s in list_snapshots(tmp_path / "resumed")] == ["epoch_0004.pth"]

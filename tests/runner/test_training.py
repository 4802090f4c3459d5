"""The runner's nnUNetv2_train commands: resume rules and the environment each training gets."""
from __future__ import annotations

from types import SimpleNamespace

from fake_source import _fake_dataset
from nnunet_mt.runner import base
from nnunet_mt.runner.layout import INIT_PLANS, PLANS
from nnunet_mt.runner.reproduction import Reproduction
from nnunet_mt.runner.source_dataset import read_source
from nnunet_mt.runner.training import training_command

def test_training_command_resume_rules(tmp_path):
    fold = tmp_path / "fold_0"
    init = tmp_path / "init.pth"
    assert training_command(5, "T", fold, "cpu", INIT_PLANS) == [
        "nnUNetv2_train", "5", "3d_fullres", "0", "-tr", "T", "-device", "cpu", "-p", INIT_PLANS]
    assert training_command(5, "T", fold, "cpu", pretrained=init)[-2:] == ["-pretrained_weights", str(init)]
    fold.mkdir()
    (fold / "checkpoint_latest.pth").touch()
    cmd = training_command(5, "T", fold, "cpu", pretrained=init)
    assert cmd[-1] == "--c" and "-pretrained_weights" not in cmd  # nnU-Net refuses both together
    (fold / "checkpoint_final.pth").touch()
    assert training_command(5, "T", fold, "cpu", pretrained=init) is None


def test_training_environment(tmp_path, monkeypatch):
    """The trainings get the budget, no final validation (fold 0 validates on a training scan) and nnU-Net's
    pools sized by --num-processes; the variables of the runner's own environment do not leak in."""
    monkeypatch.setenv("nnUNet_mt_final_validation", "1")
    monkeypatch.setenv("nnUNet_mt_epochs", "99")
    args = SimpleNamespace(workdir=tmp_path / "work", counts=[2], methods=["DeepMedic"], seed=0, shared_test=None,
                           init_epochs=1, epochs=3, iterations_per_epoch=4, val_iterations=1, rampup=None,
                           trainer_suffix="", disable_tta=False, num_processes=0, device="cpu")
    repro = Reproduction(args, read_source(_fake_dataset(tmp_path / "raw")))
    args.workdir.mkdir()
    calls = []
    monkeypatch.setattr(base, "run", lambda name, cmd, env: calls.append((name, cmd, env)) or 0.0)
    repro.train("n2/train_DeepMedic", 2, "nnUNetTrainerDeepMedic", PLANS, 3)
    (name, cmd, env), = calls
    assert cmd[:2] == ["nnUNetv2_train", str(repro.dataset(2)[0])]
    assert env["nnUNet_mt_final_validation"] == "0" and env["nnUNet_def_n_proc"] == "1"
    assert env["nnUNet_mt_epochs"] == "3" and env["nnUNet_mt_iterations_per_epoch"] == "4"
    assert "nnUNet_mt_final_validation" not in repro.env and "nnUNet_mt_epochs" not in repro.env

"""``--start-model``: a supervised DeepMedic checkpoint is checked against the source before any work; what
does not fit is refused, naming the file and the mismatch. The end-to-end run from a given start is in
tests/commands/test_reproduce.py (``test_start_model_*``)."""
from __future__ import annotations

import json

import pytest
import torch

from fake_source import _fake_dataset
from nnunet_mt.architectures.deepmedic import DeepMedic
from nnunet_mt.commands import reproduce
from nnunet_mt.runner.source_dataset import ReproduceError
from nnunet_mt.runner.start_model import check_plans, record, sha256_of
from nnunet_mt.trainers.nnUNetTrainerDeepMedic import nnUNetTrainerDeepMedic_tiny

TINY = nnUNetTrainerDeepMedic_tiny.deepmedic_kwargs


def _save(path, state, **extra):
    torch.save({"network_weights": state, **extra}, path)
    return path


def _argv(tmp_path, start, *extra, methods=("DeepMedic", "MeanTeacher")):
    return ["-d", "321", "--raw", str(tmp_path / "raw"), "--workdir", str(tmp_path / "work"), "--device", "cpu",
            "--counts", "2", "--methods", *methods, "--trainer-suffix", "_tiny", "--start-model", str(start), *extra]


def _refused(tmp_path, start, *extra, **kwargs) -> str:
    with pytest.raises(SystemExit) as exc:
        reproduce.main(_argv(tmp_path, start, *extra, **kwargs))
    assert not (tmp_path / "work").exists()  # refused before any work
    return str(exc.value)


@pytest.fixture
def source(tmp_path):
    _fake_dataset(tmp_path / "raw", channels=2)
    return tmp_path


def test_a_fitting_checkpoint_passes_the_checks_and_is_recorded_by_sha256(source, tmp_path):
    from nnunet_mt.runner.start_model import check_start_model

    start = _save(tmp_path / "start.pth", DeepMedic(2, 2, **TINY).state_dict(), trainer_name="nnUNetTrainerDeepMedic_tiny")
    check_start_model(start, ["nnUNetTrainerDeepMedic_tiny", "nnUNetTrainerMeanTeacher_tiny"], 2, 2)
    import hashlib
    assert record(start) == {"file": "start.pth", "sha256": hashlib.sha256(start.read_bytes()).hexdigest()}
    assert sha256_of(start) == record(start)["sha256"]


def test_a_truncated_or_missing_file_is_refused(source, tmp_path):
    start = _save(tmp_path / "start.pth", DeepMedic(2, 2, **TINY).state_dict())
    data = start.read_bytes()
    start.write_bytes(data[: len(data) // 2])
    assert f"--start-model {start}: cannot be read as a torch checkpoint" in _refused(tmp_path, start)
    assert f"--start-model {tmp_path / 'nope.pth'}: no such file" in _refused(tmp_path, tmp_path / "nope.pth")
    torch.save({"state_dict": {}}, start)
    assert "holds no 'network_weights'" in _refused(tmp_path, start)


def test_another_channel_count_another_width_and_a_unet_are_refused(source, tmp_path):
    one_channel = _save(tmp_path / "c1.pth", DeepMedic(1, 2, **TINY).state_dict())
    message = _refused(tmp_path, one_channel)
    assert "normal.layers.0.conv.weight has shape [8, 1, 3, 3, 3], expected [8, 2, 3, 3, 3]" in message
    assert "1 input channel(s) in the checkpoint, 2 in this dataset" in message
    three_classes = _save(tmp_path / "k3.pth", DeepMedic(2, 3, **TINY).state_dict())
    assert "3 classes in the checkpoint, 2 in this dataset" in _refused(tmp_path, three_classes)
    full_width = _save(tmp_path / "full.pth", DeepMedic(2, 2).state_dict())
    assert "(another network width)" in _refused(tmp_path, full_width)
    unet = _save(tmp_path / "unet.pth", {"encoder.stages.0.0.convs.0.conv.weight": torch.zeros(32, 2, 3, 3, 3)},
                 trainer_name="nnUNetTrainer")
    message = _refused(tmp_path, unet)
    assert "not the DeepMedic that nnUNetTrainer" in message and "made by nnUNetTrainer;" in message


def test_options_that_the_start_model_replaces_and_unet_methods_are_refused(source, tmp_path):
    start = _save(tmp_path / "start.pth", DeepMedic(2, 2, **TINY).state_dict())
    assert "leave out --init-epochs, --start-epochs" in _refused(tmp_path, start, "--init-epochs", "2",
                                                                 "--start-epochs", "1")
    assert "MeanTeacherUNet start(s) from another network" in _refused(tmp_path, start,
                                                                       methods=("DeepMedic", "MeanTeacherUNet"))


def test_a_start_trained_at_another_spacing_is_refused(tmp_path):
    plans = {"configurations": {"3d_fullres": {"spacing": [6.5, 0.96, 0.96], "normalization_schemes": ["ZScoreNormalization"]}}}
    plans_file = tmp_path / "nnUNetPlans.json"
    plans_file.write_text(json.dumps(plans))
    same = {"init_args": {"configuration": "3d_fullres", "plans": plans}}
    check_plans(tmp_path / "s.pth", same, plans_file)  # passes
    check_plans(tmp_path / "s.pth", {}, plans_file)  # a weights-only file records no plans: nothing to compare
    other = json.loads(json.dumps(same))
    other["init_args"]["plans"]["configurations"]["3d_fullres"]["spacing"] = [1.0, 1.0, 1.0]
    with pytest.raises(ReproduceError, match=r"trained with spacing \[1.0, 1.0, 1.0\], the dataset's plans"):
        check_plans(tmp_path / "s.pth", other, plans_file)
    with pytest.raises(ReproduceError, match="configuration '2d'"):
        check_plans(tmp_path / "s.pth", {"init_args": {"configuration": "2d", "plans": plans}}, plans_file)


def test_export_keeps_the_weights_and_drops_the_optimizer_state(tmp_path, capsys):
    from nnunet_mt.runner import start_model

    weights = DeepMedic(2, 2, **TINY).state_dict()
    checkpoint = _save(tmp_path / "checkpoint_final.pth", weights, trainer_name="nnUNetTrainerDeepMedic_tiny",
                       optimizer_state={"state": {0: torch.zeros(1000)}}, current_epoch=4)
    start_model.main(["export", str(checkpoint), str(tmp_path / "out" / "start.pth")])
    out = tmp_path / "out" / "start.pth"
    assert capsys.readouterr().out.split() == [sha256_of(out), str(out)]
    exported = torch.load(out, map_location="cpu", weights_only=False)
    assert sorted(exported) == ["current_epoch", "network_weights", "trainer_name"]
    assert all(torch.equal(v, exported["network_weights"][k]) for k, v in weights.items())
    with pytest.raises(SystemExit, match="no such file"):
        start_model.main(["export", str(tmp_path / "missing.pth"), str(tmp_path / "x.pth")])

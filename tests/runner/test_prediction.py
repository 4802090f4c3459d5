"""Stage 4: nnUNetv2_predict of the test scans with each method's final model, then nnUNetv2_evaluate_folder; how
many processes the predictions get."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from fake_source import _fake_dataset
from nnunet_mt.runner import base
from nnunet_mt.runner.reproduction import Reproduction
from nnunet_mt.runner.source_dataset import ReproduceError, read_source


def test_prediction_processes(monkeypatch):
    repro = object.__new__(Reproduction)
    repro.args = SimpleNamespace(num_processes=6, predict_processes=None)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert repro.predict_processes() == 0  # sequential on small machines
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert repro.predict_processes() == 6
    repro.args.predict_processes = 3
    assert repro.predict_processes() == 3


@pytest.fixture
def stage(tmp_path, monkeypatch):
    """A run of count 2 whose nnU-Net commands are recorded; nnUNetv2_predict writes the cases in ``writes``."""
    args = SimpleNamespace(workdir=tmp_path / "work", counts=[2], methods=["MeanTeacher"], seed=0, shared_test=None,
                           trainer_suffix="_tiny", disable_tta=True, num_processes=3, predict_processes=1,
                           device="cpu")
    repro = Reproduction(args, read_source(_fake_dataset(tmp_path / "raw")))
    args.workdir.mkdir()
    repro.calls, repro.writes = [], list(repro.splits[2]["test"])

    def run(name, cmd, env):
        repro.calls.append((name, cmd))
        if cmd[0] == "nnUNetv2_predict":
            out = cmd[cmd.index("-o") + 1]
            os.makedirs(out, exist_ok=True)  # as nnUNetv2_predict does
            for case in repro.writes:
                open(os.path.join(out, f"{case}.nii.gz"), "w").close()
        return 0.0

    monkeypatch.setattr(base, "run", run)
    return repro


def test_predicts_with_the_final_model_then_scores_and_skips_what_is_done(stage):
    out = stage.count_dir(2) / "predictions" / "MeanTeacher"
    out.mkdir(parents=True)
    (out / "stale.nii.gz").touch()  # a half-written folder of an interrupted run (no marker)
    assert stage.predict(2, "MeanTeacher") == out
    (predict_name, predict), (evaluate_name, evaluate) = stage.calls
    dataset_id = str(stage.dataset(2)[0])
    model = stage.model_dir(2, "nnUNetTrainerMeanTeacher_tiny")
    assert predict_name == "n2/predict_MeanTeacher" and predict == [
        "nnUNetv2_predict", "-i", str(stage.count_dir(2) / "imagesTest"), "-o", str(out), "-d", dataset_id,
        "-c", "3d_fullres", "-f", "0", "-tr", "nnUNetTrainerMeanTeacher_tiny", "-chk", "checkpoint_final.pth",
        "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_tta"]
    assert not (out / "stale.nii.gz").exists()
    assert evaluate_name == "n2/evaluate_MeanTeacher" and evaluate == [
        "nnUNetv2_evaluate_folder", str(stage.count_dir(2) / "labelsTest"), str(out), "-djfile",
        str(model / "dataset.json"), "-pfile", str(model / "plans.json"), "-np", "3"]
    (out / "summary.json").write_text("{}")  # what nnUNetv2_evaluate_folder writes
    stage.calls.clear()
    assert stage.predict(2, "MeanTeacher") == out and stage.calls == []  # both done: nothing runs again


def test_a_missing_prediction_stops_the_run_and_leaves_the_folder_unfinished(stage):
    missing = stage.writes.pop()
    with pytest.raises(ReproduceError, match=f"nnUNetv2_predict wrote no prediction for \\['{missing}'\\]"):
        stage.predict(2, "MeanTeacher")
    stage.writes.append(missing)
    stage.calls.clear()
    stage.predict(2, "MeanTeacher")  # the next run predicts again
    assert [name for name, _ in stage.calls] == ["n2/predict_MeanTeacher", "n2/evaluate_MeanTeacher"]

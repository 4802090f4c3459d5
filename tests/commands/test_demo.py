"""nnunet_mt_demo: its table and statistics on fixed numbers, its --help, the settings it gives the
trainings, and a whole run on tiny scans whose printed export lines and nnUNetv2_predict command are run."""
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ttest_rel

from nnunet_mt.commands.demo import paired_t_test, write_table
from nnunet_mt.utils.pipeline import dice_per_case


def test_dice_per_case_reads_nnunet_summary(tmp_path):
    summary = {"metric_per_case": [
        {"reference_file": "/x/labelsTs/SDWI_T0001.nii.gz", "metrics": {"1": {"Dice": 0.5}}},
        {"reference_file": "/x/labelsTs/SDWI_T0002.nii.gz", "metrics": {"1": {"Dice": 0.25}}}]}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert dice_per_case(tmp_path / "summary.json") == {"SDWI_T0001": 0.5, "SDWI_T0002": 0.25}


def test_table_and_paired_t_test(tmp_path):
    tables = {"DeepMedic": {"a": 0.5, "b": 0.6, "c": 0.7}, "MeanTeacher": {"a": 0.55, "b": 0.62, "c": 0.71}}
    text = write_table(tables, tmp_path)
    # mean 0.6, sample std 0.1; mean 0.6267, std of (0.55, 0.62, 0.71) = 0.0802
    assert "| mean ± std | 0.6000 ± 0.1000 | 0.6267 ± 0.0802 |" in text
    assert (tmp_path / "dice_table.csv").read_text().splitlines()[0] == "case,DeepMedic,MeanTeacher"
    t, p, n = paired_t_test(tables, "MeanTeacher", "DeepMedic")
    ref = ttest_rel([0.55, 0.62, 0.71], [0.5, 0.6, 0.7])
    assert n == 3 and t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    # differences 0.05, 0.02, 0.01: mean 0.02667, sd 0.02082, t = 0.02667 / (0.02082 / sqrt 3) = 2.219
    assert t == pytest.approx(2.2188, abs=1e-3)
    assert np.isfinite(p)


def test_rerun_names_the_stages_it_skips(capsys):
    from nnunet_mt.utils.pipeline import skipped

    skipped("train supervised DeepMedic", Path("/w/fold_0/checkpoint_final.pth"))
    out = capsys.readouterr().out
    assert "train supervised DeepMedic: skipped, already done (/w/fold_0/checkpoint_final.pth)" in out


def test_closing_lines_point_to_every_result(tmp_path):
    from nnunet_mt.commands.demo import closing_lines

    raw, sup, mt = tmp_path / "raw", tmp_path / "sup", tmp_path / "mt"
    text = closing_lines(tmp_path, raw, sup, mt)
    for expected in ("dice_table.md", "dice_table.csv", str(raw / "montage.png"), "progress_mean_teacher.png",
                     str(sup / "fold_0" / "progress.png"), "summary.json"):
        assert expected in text, expected


def test_a_rerun_of_a_finished_demo_skips_every_stage_and_says_so(tmp_path, monkeypatch, capsys):
    import nnunet_mt.commands.demo as demo

    calls = []
    monkeypatch.setattr(demo, "run", lambda step, cmd, env: calls.append(cmd[0]) or 0.0)
    ds = demo.DATASET
    (tmp_path / "nnUNet_raw" / ds).mkdir(parents=True)
    (tmp_path / "nnUNet_preprocessed" / ds).mkdir(parents=True)
    (tmp_path / "nnUNet_preprocessed" / ds / "nnUNetPlans.json").write_text("{}")
    for i, trainer in enumerate(("nnUNetTrainerDeepMedic_demo", "nnUNetTrainerMeanTeacher_demo")):
        fold = tmp_path / "nnUNet_results" / ds / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0"
        fold.mkdir(parents=True)
        (fold / "checkpoint_final.pth").write_bytes(b"")
        pred = tmp_path / "predictions" / trainer
        pred.mkdir(parents=True)
        (pred / "summary.json").write_text(json.dumps({"metric_per_case": [
            {"reference_file": f"/x/SDWI_T{c}.nii.gz", "metrics": {"1": {"Dice": 0.1 * c + 0.01 * i * c}}}
            for c in (1, 2, 3)]}))
    demo.main(["--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert calls == ["nnunet_mt_preprocess_unlabeled"]  # it skips finished cases itself and says so
    for stage in ("generate synthetic cohort", "plan and preprocess", "train supervised DeepMedic",
                  "train the mean teacher from it", "predict and evaluate the test scans (DeepMedic)",
                  "predict and evaluate the test scans (MeanTeacher)"):
        assert f"=== {stage}: skipped, already done" in out, stage
    assert "montage.png" in out and "dice_table.csv" in out


def test_help_is_plain_text_and_describes_every_option(capsys):
    from nnunet_mt.commands.demo import build_parser, main

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and out.startswith("usage: nnunet_mt_demo")
    options = [a for a in build_parser()._actions if a.dest != "help"]
    assert {"seed", "device", "num_processes", "final_validation"} <= {a.dest for a in options}
    for action in options:
        assert action.help and "default" in action.help, action.option_strings
        assert action.option_strings[0] in out
    flat = " ".join(out.split())
    assert "seed of the synthetic cohort" in flat and "where nnUNetv2_train and nnUNetv2_predict run" in flat
    assert "(default: nnunet_mt_demo)" in flat and "(default: 10)" in flat and "default: cpu;" in flat


def _fake_finished_preprocessing(root: Path, cases=("SDWI_0001", "SDWI_0002", "SDWI_0003")) -> None:
    """A work folder whose cohort and preprocessing exist, and whose test predictions are scored."""
    import nnunet_mt.commands.demo as demo

    ds = demo.DATASET
    (root / "nnUNet_raw" / ds / "labelsTs").mkdir(parents=True)
    for c in (1, 2):
        (root / "nnUNet_raw" / ds / "labelsTs" / f"SDWI_T{c:04d}.nii.gz").write_bytes(b"")
    data = root / "nnUNet_preprocessed" / ds / "nnUNetPlans_3d_fullres"
    data.mkdir(parents=True)
    (data.parent / "nnUNetPlans.json").write_text("{}")
    for case in cases:
        (data / f"{case}.pkl").write_bytes(b"")
    for trainer in ("nnUNetTrainerDeepMedic_demo", "nnUNetTrainerMeanTeacher_demo"):
        pred = root / "predictions" / trainer
        pred.mkdir(parents=True)
        (pred / "summary.json").write_text(json.dumps({"metric_per_case": [
            {"reference_file": f"/x/SDWI_T{c:04d}.nii.gz", "metrics": {"1": {"Dice": 0.1 * c}}} for c in (1, 2)]}))


def test_the_trainings_skip_the_final_validation_and_size_nnunet_pools_by_default(tmp_path, monkeypatch, capsys):
    import nnunet_mt.commands.demo as demo

    calls = []
    monkeypatch.setattr(demo, "run", lambda step, cmd, env: calls.append((cmd, env)) or 0.0)
    _fake_finished_preprocessing(tmp_path)
    demo.main(["--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    trainings = [(cmd, env) for cmd, env in calls if cmd[0] == "nnUNetv2_train"]
    assert [cmd[cmd.index("-tr") + 1] for cmd, _ in trainings] == ["nnUNetTrainerDeepMedic_demo",
                                                                    "nnUNetTrainerMeanTeacher_demo"]
    n = str(demo.default_num_processes())
    for cmd, env in trainings:
        assert env["nnUNet_mt_final_validation"] == "0" and env["nnUNet_def_n_proc"] == n
    assert out.count("nnU-Net's end-of-training validation is skipped (nnUNet_mt_final_validation=0; "
                     "--final-validation runs it): the models are scored on the 2 test scans below") == 2
    assert "Mean Validation Dice" not in out
    preprocess = next(cmd for cmd, _ in calls if cmd[0] == "nnunet_mt_preprocess_unlabeled")
    assert preprocess[preprocess.index("-np") + 1] == n
    # the split: fold 0 trains on all annotated training scans but the last, nnU-Net's validation case
    split = json.loads((tmp_path / "nnUNet_preprocessed" / demo.DATASET / "splits_final.json").read_text())
    assert split == [{"train": ["SDWI_0001", "SDWI_0002"], "val": ["SDWI_0003"]}]


@pytest.mark.parametrize("shell", [None, "2"])
def test_the_trainings_augment_in_process_so_the_demo_replays(tmp_path, monkeypatch, capsys, shell):
    import nnunet_mt.commands.demo as demo

    if shell is None:
        monkeypatch.delenv("nnUNet_n_proc_DA", raising=False)
    else:
        monkeypatch.setenv("nnUNet_n_proc_DA", shell)
    calls = []
    monkeypatch.setattr(demo, "run", lambda step, cmd, env: calls.append((cmd, env)) or 0.0)
    _fake_finished_preprocessing(tmp_path)
    demo.main(["--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    trainings = [env for cmd, env in calls if cmd[0] == "nnUNetv2_train"]
    assert len(trainings) == 2 and all(env["nnUNet_n_proc_DA"] == (shell or "0") for env in trainings)
    preprocess = next(env for cmd, env in calls if cmd[0] == "nnunet_mt_preprocess_unlabeled")
    assert preprocess.get("nnUNet_n_proc_DA") == shell  # nnU-Net's planner fails with 0: only the trainings get it
    assert ("another run of the demo gives a slightly different table" in out) == (shell is not None)


def test_final_validation_option_and_worker_count_reach_the_trainings(tmp_path, monkeypatch, capsys):
    import nnunet_mt.commands.demo as demo

    calls = []
    monkeypatch.setattr(demo, "run", lambda step, cmd, env: calls.append((cmd, env)) or 0.0)
    _fake_finished_preprocessing(tmp_path)
    demo.main(["--workdir", str(tmp_path), "--final-validation", "--num-processes", "3"])
    out = capsys.readouterr().out
    envs = [env for cmd, env in calls if cmd[0] == "nnUNetv2_train"]
    assert len(envs) == 2 and all(e["nnUNet_mt_final_validation"] == "1" and e["nnUNet_def_n_proc"] == "3"
                                  for e in envs)
    assert out.count("this training ends with nnU-Net's final validation: it predicts and scores fold 0's 1 "
                     "validation case (SDWI_0003), an annotated training scan held out of its training, with 3 "
                     "worker processes (nnUNet_def_n_proc)") == 2
    with pytest.raises(SystemExit):
        demo.main(["--workdir", str(tmp_path), "--num-processes", "0"])
    assert "--num-processes 0: needs at least 1" in capsys.readouterr().err


VENV_BIN = Path(sys.executable).parent
TINY_TRAINERS = ("nnUNetTrainerDeepMedic_tiny", "nnUNetTrainerMeanTeacher_tiny")


def _env_without_nnunet_folders() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer")}
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    return env


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    """The whole demo on tiny scans (3 training, 2 test, 2 unannotated; 64 x 64 x 10 voxels), with the tests'
    tiny trainers and nnU-Net's final validation on; returns (work folder, what it printed)."""
    workdir = tmp_path_factory.mktemp("demo") / "work"
    cmd = [str(VENV_BIN / "nnunet_mt_demo"), "--workdir", str(workdir), "--num-train", "3", "--num-test", "2",
           "--num-unlabeled", "2", "--shape", "64", "64", "10", "--spacing", "3.6", "3.6", "13.65",
           "--supervised-trainer", TINY_TRAINERS[0], "--mean-teacher-trainer", TINY_TRAINERS[1],
           "--num-processes", "1", "--final-validation"]
    proc = subprocess.run(cmd, env=dict(_env_without_nnunet_folders(), PYTHONUNBUFFERED="1"),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return workdir, proc.stdout


def test_the_demo_says_what_the_final_validation_is_and_that_the_test_dice_is_the_result(tiny_demo):
    workdir, out = tiny_demo
    lines = out.splitlines()
    announcement = ("this training ends with nnU-Net's final validation: it predicts and scores fold 0's 1 "
                    "validation case (SDWI_0003), an annotated training scan held out of its training, with 1 "
                    "worker process (nnUNet_def_n_proc)")
    for step in ("=== train supervised DeepMedic:", "=== train the mean teacher from it:"):
        at = next(i for i, line in enumerate(lines) if line.startswith(step))
        assert announcement in lines[at - 2:at], step  # said just before the training starts
    for trainer in TINY_TRAINERS:
        fold = workdir / "nnUNet_results" / "Dataset990_SyntheticStrokeDWI" / f"{trainer}__nnUNetPlans__3d_fullres"
        summary = json.loads((fold / "fold_0" / "validation" / "summary.json").read_text())
        assert [Path(c["reference_file"]).name for c in summary["metric_per_case"]] == ["SDWI_0003.nii.gz"]
    explained = next(line for line in lines if line.startswith("nnU-Net's 'Mean Validation Dice'"))
    assert "fold 0's 1 validation case (SDWI_0003)" in explained
    assert "The table's test Dice, on 2 scans neither model saw, is the result to read." in explained
    assert out.index("| mean ± std |") < out.index(explained)


def test_the_printed_exports_and_predict_command_work_in_a_fresh_shell(tiny_demo, tmp_path):
    workdir, out = tiny_demo
    lines = out.rstrip().splitlines()
    exports = [line.strip() for line in lines if line.startswith("  export ")]
    values = {name: shlex.split(value)[0] for name, value in (e[len("export "):].split("=", 1) for e in exports)}
    assert values == {"nnUNet_raw": str(workdir / "nnUNet_raw"),
                      "nnUNet_preprocessed": str(workdir / "nnUNet_preprocessed"),
                      "nnUNet_results": str(workdir / "nnUNet_results"),
                      "nnUNet_extTrainer": values["nnUNet_extTrainer"]}
    assert Path(values["nnUNet_extTrainer"].split(os.pathsep)[0], "nnUNetTrainerMeanTeacher.py").is_file()
    predict = next(i for i, line in enumerate(lines) if line.strip().startswith("nnUNetv2_predict "))
    assert predict >= len(lines) - 2  # among the demo's last lines, after the export lines
    cmd = shlex.split(lines[predict])
    flag = {cmd[i]: cmd[i + 1] for i in range(1, len(cmd) - 1) if cmd[i].startswith("-")}
    assert flag["-tr"] == TINY_TRAINERS[1] and flag["-device"] == "cpu" and flag["-d"] == "990"
    assert f"-tr {TINY_TRAINERS[0]}" in lines[-1]

    one = tmp_path / "one_scan"
    one.mkdir()
    for f in Path(flag["-i"]).glob("SDWI_T0001_*.nii.gz"):
        shutil.copy(f, one / f.name)
    assert len(list(one.iterdir())) == 2
    cmd[cmd.index("-i") + 1], cmd[cmd.index("-o") + 1] = str(one), str(tmp_path / "pred")
    script = "set -e\n" + "\n".join(exports) + "\n" + shlex.join(cmd) + "\n"
    proc = subprocess.run(["bash", "-c", script], env=_env_without_nnunet_folders(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    import SimpleITK as sitk

    mine = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pred" / "SDWI_T0001.nii.gz")))
    demos = sitk.GetArrayFromImage(sitk.ReadImage(str(workdir / "predictions" / TINY_TRAINERS[1] /
                                                      "SDWI_T0001.nii.gz")))
    assert mine.shape == demos.shape and (mine == demos).all()  # the demo's own mean-teacher prediction

"""The demo's table and statistics, on fixed numbers."""
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ttest_rel

from nnunet_mt.demo import paired_t_test, write_table
from nnunet_mt.pipeline import dice_per_case


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
    from nnunet_mt.pipeline import skipped

    skipped("train supervised DeepMedic", Path("/w/fold_0/checkpoint_final.pth"))
    out = capsys.readouterr().out
    assert "train supervised DeepMedic: skipped, already done (/w/fold_0/checkpoint_final.pth)" in out


def test_closing_lines_point_to_every_result(tmp_path):
    from nnunet_mt.demo import closing_lines

    raw, sup, mt = tmp_path / "raw", tmp_path / "sup", tmp_path / "mt"
    text = closing_lines(tmp_path, raw, sup, mt)
    for expected in ("dice_table.md", "dice_table.csv", str(raw / "montage.png"), "progress_mean_teacher.png",
                     str(sup / "fold_0" / "progress.png"), "summary.json"):
        assert expected in text, expected


def test_a_rerun_of_a_finished_demo_skips_every_stage_and_says_so(tmp_path, monkeypatch, capsys):
    import nnunet_mt.demo as demo

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

"""``nnunet_mt_score_models``: committed weights score the test scans exactly as the runner's own prediction
with the full checkpoint does; wrong or missing models are refused before any prediction."""
from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
import subprocess

import pytest
import SimpleITK as sitk
import torch

from conftest import VENV_BIN
from nnunet_mt.commands import score_models
from nnunet_mt.evaluation.metrics import evaluate_cases
from nnunet_mt.runner.methods import METHODS as RUNNER_METHODS
from nnunet_mt.runner.source_dataset import ReproduceError
from nnunet_mt.runner.start_model import export_weights

SCORED = ("DeepMedic", "MeanTeacher-kl")  # the two methods the screen fixture's second run predicted


def _export(work, models, method):
    fold = (work / "nnUNet_results" / "Dataset500_Tiny_n2" /
            f"{RUNNER_METHODS[method][0]}_tiny__nnUNetPlans__3d_fullres" / "fold_0")
    return export_weights(fold / "checkpoint_final.pth", models / f"{method}.pth")


def _score(work, models, out, env, *methods, check=True):
    proc = subprocess.run([str(VENV_BIN / "nnunet_mt_score_models"), "--workdir", str(work), "--count", "2",
                           "--models", str(models), "--methods", *methods, "--reference", "DeepMedic",
                           "--out", str(out)], env=env, capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return proc


def test_exported_models_score_the_test_scans_as_the_runner_does(screen, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(screen.work, work, symlinks=True)
    models = tmp_path / "models"
    digests = {m: _export(work, models, m) for m in SCORED}
    out = tmp_path / "report"
    first = _score(work, models, out, screen.env, *SCORED)

    test = json.loads((work / "splits.json").read_text())["counts"]["2"]["test"]
    refs = {c: work / "n2" / "labelsTest" / f"{c}.nii.gz" for c in test}
    rows = list(csv.DictReader((out / "per_case_metrics.csv").open()))
    assert sorted((r["method"], r["case"]) for r in rows) == sorted((m, c) for m in SCORED for c in test)
    for method in SCORED:
        # the same label maps as nnUNetv2_predict with the full checkpoint (the runner's second screen run)
        for case in test:
            ours = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "n2" / "committed" / method / "predictions" /
                                                             f"{case}.nii.gz")))
            runner = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "n2" / "predictions" / method /
                                                               f"{case}.nii.gz")))
            assert (ours == runner).all(), (method, case)
        expected = evaluate_cases({c: work / "n2" / "predictions" / method / f"{c}.nii.gz" for c in test}, refs)
        for r in (r for r in rows if r["method"] == method):
            assert float(r["dice"]) == pytest.approx(expected[r["case"]]["dice"], abs=1e-12)

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["test_cases"] == sorted(test) and manifest["reference"] == "DeepMedic"
    assert {m: v["sha256"] for m, v in manifest["models"].items()} == digests
    assert digests["DeepMedic"] == hashlib.sha256((models / "DeepMedic.pth").read_bytes()).hexdigest()
    for volume in manifest["volume"]:  # predicted / true volume, from the per-case volumes
        mine = [r for r in rows if r["method"] == volume["method"]]
        ratio = sum(float(r["pred_ml"]) for r in mine) / sum(float(r["ref_ml"]) for r in mine)
        assert volume["ratio_of_sums"] == pytest.approx(ratio)
    table = list(csv.DictReader((out / "table_dice.csv").open()))
    assert [r["method"] for r in table] == list(SCORED) and math.isnan(float(table[0]["p_ttest_vs_reference"]))
    assert "MeanTeacher-kl" in (out / "statistics.md").read_text()
    assert "Predicted / true lesion volume" in (out / "report.md").read_text()
    assert first.stdout.count("=== predict ") == 2 * len(SCORED)  # start and end line of each prediction

    # a rerun predicts nothing again; new weights for one method predict that method only
    again = _score(work, models, out, screen.env, *SCORED)
    assert again.stdout.count("skipped, already done") == 2 and "predict DeepMedic done" not in again.stdout
    shutil.copyfile(work / "nnUNet_results" / "Dataset500_Tiny_n2" /
                    "nnUNetTrainerDeepMedic_tiny__nnUNetPlans_start__3d_fullres" / "fold_0" / "checkpoint_final.pth",
                    tmp_path / "start.pth")
    export_weights(tmp_path / "start.pth", models / "DeepMedic.pth")
    third = _score(work, models, out, screen.env, *SCORED)
    assert "predict DeepMedic done" in third.stdout and "predict MeanTeacher-kl: skipped" in third.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"]["DeepMedic"]["sha256"] != digests["DeepMedic"]


def test_another_methods_model_or_a_missing_one_is_refused_before_any_prediction(screen, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(screen.work, work, symlinks=True)
    models = tmp_path / "models"
    _export(work, models, "DeepMedic")
    shutil.copyfile(models / "DeepMedic.pth", models / "MeanTeacher-kl.pth")  # a DeepMedic under the teacher's name
    out = tmp_path / "report"
    refused = _score(work, models, out, screen.env, *SCORED, check=False)
    assert refused.returncode != 0
    assert (f"{models / 'MeanTeacher-kl.pth'}: made by nnUNetTrainerDeepMedic_tiny, but MeanTeacher-kl is trained "
            f"by nnUNetTrainerMeanTeacherKL_tiny") in refused.stderr, refused.stderr[-3000:]
    missing = _score(work, models, out, screen.env, "DeepMedic", "PseudoLabel", check=False)
    assert missing.returncode != 0 and f"{models / 'PseudoLabel.pth'}: no such file" in missing.stderr
    assert not out.exists() and not (work / "n2" / "committed").exists()

    weights = torch.load(models / "DeepMedic.pth", map_location="cpu", weights_only=False)
    with pytest.raises(ReproduceError, match=r"DeepMedic.pth: trained on Dataset500_Tiny_n2, but the run's count is "
                                             r"Dataset501_Tiny_n3"):
        score_models.check_weights_file(models / "DeepMedic.pth", "DeepMedic", "nnUNetTrainerDeepMedic_tiny",
                                        "Dataset501_Tiny_n3")
    torch.save({k: v for k, v in weights.items() if k != "init_args"}, tmp_path / "bare.pth")
    with pytest.raises(ReproduceError, match=r"bare.pth: holds no plans \(init_args\) to predict with"):
        score_models.check_weights_file(tmp_path / "bare.pth", "DeepMedic", "nnUNetTrainerDeepMedic_tiny",
                                        "Dataset500_Tiny_n2")


def test_the_run_and_the_options_are_checked(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        score_models.main(["--workdir", str(tmp_path), "--count", "2", "--models", str(tmp_path), "--methods",
                           "DeepMedic", "--out", str(tmp_path / "out")])
    assert f"{tmp_path}: no manifest.json (not a work folder of nnunet_mt_reproduce)" in str(exc.value)
    with pytest.raises(SystemExit):
        score_models.main(["--workdir", str(tmp_path), "--count", "2", "--models", str(tmp_path), "--methods",
                           "MeanTeacher", "--out", str(tmp_path / "out")])  # the reference, DeepMedic, not scored
    assert "--reference DeepMedic is not among --methods MeanTeacher" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        score_models.main(["--workdir", str(tmp_path), "--count", "2", "--models", str(tmp_path), "--methods",
                           "DeepMedic", "Nope", "--out", str(tmp_path / "out")])
    assert "unknown method(s) Nope" in str(exc.value)


def test_volume_ratios_by_hand():
    metrics = {"A": {"c1": {"pred_ml": 3.0, "ref_ml": 2.0}, "c2": {"pred_ml": 1.0, "ref_ml": 4.0},
                     "c3": {"pred_ml": 0.5, "ref_ml": 0.0}}}
    (row,) = score_models.volume_ratios(metrics, ["A"])
    assert row["ratio_of_sums"] == pytest.approx(4.5 / 6.0)
    assert row["median_case_ratio"] == pytest.approx((1.5 + 0.25) / 2)  # c3 has no reference lesion
    assert row["n_cases"] == 2
    empty = score_models.volume_ratios({"B": {"c1": {"pred_ml": 0.0, "ref_ml": 0.0}}}, ["B"])[0]
    assert math.isnan(empty["ratio_of_sums"]) and math.isnan(empty["median_case_ratio"])

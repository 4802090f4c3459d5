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


def _export(screen, models, method):
    fold = (screen.work / "nnUNet_results" / "Dataset500_Tiny_n2" /
            f"{RUNNER_METHODS[method][0]}_tiny__nnUNetPlans__3d_fullres" / "fold_0")
    return export_weights(fold / "checkpoint_final.pth", models / f"{method}.pth")


def _score(screen, work, models, out, *methods, check=True):
    """The command with the screen fixture's source and split options (its work folder is not read)."""
    proc = subprocess.run([str(VENV_BIN / "nnunet_mt_score_models"), "-d", "901", "--raw", str(screen.root / "raw"),
                           "--workdir", str(work), "--count", "2", "--shared-test", "2", "--validation", "2",
                           "--seed", "0", "--trainer-suffix", "_tiny", "--models", str(models), "--methods", *methods,
                           "--reference", "DeepMedic", "--out", str(out)], env=screen.env, capture_output=True,
                          text=True)
    if check:
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return proc


def test_exported_models_score_the_test_scans_as_the_runner_does(screen, tmp_path):
    """The split is redrawn from the options alone (the runner's work folder is not read) and the committed
    weights predict the same label maps as the runner's nnUNetv2_predict with the full checkpoint."""
    work, models, out = tmp_path / "score", tmp_path / "models", tmp_path / "report"
    digests = {m: _export(screen, models, m) for m in SCORED}
    first = _score(screen, work, models, out, *SCORED)

    test = json.loads((screen.work / "splits.json").read_text())["counts"]["2"]["test"]
    refs = {c: screen.work / "n2" / "labelsTest" / f"{c}.nii.gz" for c in test}
    rows = list(csv.DictReader((out / "per_case_metrics.csv").open()))
    assert sorted((r["method"], r["case"]) for r in rows) == sorted((m, c) for m in SCORED for c in test)
    for method in SCORED:
        # the same label maps as nnUNetv2_predict with the full checkpoint (the runner's second screen run)
        for case in test:
            ours = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "score_n2" / method / "predictions" /
                                                             f"{case}.nii.gz")))
            runner = sitk.GetArrayFromImage(sitk.ReadImage(str(screen.work / "n2" / "predictions" / method /
                                                               f"{case}.nii.gz")))
            assert (ours == runner).all(), (method, case)
        expected = evaluate_cases({c: screen.work / "n2" / "predictions" / method / f"{c}.nii.gz" for c in test},
                                  refs)
        for r in (r for r in rows if r["method"] == method):
            assert float(r["dice"]) == pytest.approx(expected[r["case"]]["dice"], abs=1e-12)

    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["test_files"]) == sorted(test) and manifest["reference"] == "DeepMedic"
    label = screen.work / "n2" / "labelsTest" / f"{test[0]}.nii.gz"
    assert manifest["test_files"][test[0]][label.name] == hashlib.sha256(label.read_bytes()).hexdigest()
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
    again = _score(screen, work, models, out, *SCORED)
    assert again.stdout.count("skipped, already done") == 2 and "predict DeepMedic done" not in again.stdout
    export_weights(screen.work / "nnUNet_results" / "Dataset500_Tiny_n2" /
                   "nnUNetTrainerDeepMedic_tiny__nnUNetPlans_start__3d_fullres" / "fold_0" / "checkpoint_final.pth",
                   models / "DeepMedic.pth")
    third = _score(screen, work, models, out, *SCORED)
    assert "predict DeepMedic done" in third.stdout and "predict MeanTeacher-kl: skipped" in third.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"]["DeepMedic"]["sha256"] != digests["DeepMedic"]


def test_another_methods_model_or_a_missing_one_is_refused_before_any_prediction(screen, tmp_path):
    work, models, out = tmp_path / "score", tmp_path / "models", tmp_path / "report"
    _export(screen, models, "DeepMedic")
    shutil.copyfile(models / "DeepMedic.pth", models / "MeanTeacher-kl.pth")  # a DeepMedic under the teacher's name
    refused = _score(screen, work, models, out, *SCORED, check=False)
    assert refused.returncode != 0
    assert (f"{models / 'MeanTeacher-kl.pth'}: made by nnUNetTrainerDeepMedic_tiny, but MeanTeacher-kl is trained "
            f"by nnUNetTrainerMeanTeacherKL_tiny") in refused.stderr, refused.stderr[-3000:]
    missing = _score(screen, work, models, out, "DeepMedic", "PseudoLabel", check=False)
    assert missing.returncode != 0 and f"{models / 'PseudoLabel.pth'}: no such file" in missing.stderr
    assert not out.exists() and not work.exists()

    weights = torch.load(models / "DeepMedic.pth", map_location="cpu", weights_only=False)
    with pytest.raises(ReproduceError, match=r"DeepMedic.pth: trained on Dataset500_Tiny_n2, but this run's count is "
                                             r"Dataset501_Tiny_n3"):
        score_models.check_weights_file(models / "DeepMedic.pth", "DeepMedic", "nnUNetTrainerDeepMedic_tiny",
                                        "Dataset501_Tiny_n3")
    torch.save({k: v for k, v in weights.items() if k != "init_args"}, tmp_path / "bare.pth")
    with pytest.raises(ReproduceError, match=r"bare.pth: holds no plans \(init_args\) to predict with"):
        score_models.check_weights_file(tmp_path / "bare.pth", "DeepMedic", "nnUNetTrainerDeepMedic_tiny",
                                        "Dataset500_Tiny_n2")


def test_the_source_and_the_options_are_checked(tmp_path, capsys):
    from fake_source import _fake_dataset

    _fake_dataset(tmp_path / "raw")  # a pool of 4
    common = ["-d", "321", "--raw", str(tmp_path / "raw"), "--workdir", str(tmp_path / "work"), "--models",
              str(tmp_path), "--out", str(tmp_path / "out")]
    for extra, message in ((["--count", "2", "--methods", "DeepMedic", "Nope"], "unknown method(s) Nope"),
                           (["--count", "2", "--shared-test", "3", "--methods", "DeepMedic"],
                            "count 2: with --shared-test 3 the training scans come from the other 1"),
                           (["--count", "2", "--counts", "1", "3", "--methods", "DeepMedic"],
                            "--count 2 is not among --counts 1 3"),
                           (["--count", "2", "--methods", "DeepMedic"], "DeepMedic.pth: no such file")):
        with pytest.raises(SystemExit) as exc:
            score_models.main([*common, *extra])
        assert message in str(exc.value), (extra, str(exc.value))
    with pytest.raises(SystemExit):
        score_models.main([*common, "--count", "2", "--methods", "MeanTeacher"])  # the reference is not scored
    assert "--reference DeepMedic is not among --methods MeanTeacher" in capsys.readouterr().err
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()


def test_volume_ratios_by_hand():
    metrics = {"A": {"c1": {"pred_ml": 3.0, "ref_ml": 2.0}, "c2": {"pred_ml": 1.0, "ref_ml": 4.0},
                     "c3": {"pred_ml": 0.5, "ref_ml": 0.0}}}
    (row,) = score_models.volume_ratios(metrics, ["A"])
    assert row["ratio_of_sums"] == pytest.approx(4.5 / 6.0)
    assert row["median_case_ratio"] == pytest.approx((1.5 + 0.25) / 2)  # c3 has no reference lesion
    assert row["n_cases"] == 2
    empty = score_models.volume_ratios({"B": {"c1": {"pred_ml": 0.0, "ref_ml": 0.0}}}, ["B"])[0]
    assert math.isnan(empty["ratio_of_sums"]) and math.isnan(empty["median_case_ratio"])

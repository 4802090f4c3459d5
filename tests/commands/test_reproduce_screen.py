"""``nnunet_mt_reproduce --screen`` on the tiny dataset (conftest's session fixture ``screen``): every
mean-teacher variant and control trained from one converged start, scored on the validation set, never on
the test scans; seeded reruns that replay bit for bit; ``--start-model``; and the over-segmentation analyses
run on its work folder. Its own file, so that under pytest-xdist the screen and test_reproduce.py's
end-to-end run are built in different workers."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import SCREEN_METHODS
from nnunet_mt.runner.methods import METHODS as RUNNER_METHODS
from nnunet_mt.trainers.semi_supervised import SemiSupervisedMixin


def test_screen_trains_every_variant_from_the_converged_start_and_never_predicts_the_test_scans(screen):
    results = screen.work / "nnUNet_results" / "Dataset500_Tiny_n2"
    start = results / "nnUNetTrainerDeepMedic_tiny__nnUNetPlans_start__3d_fullres" / "fold_0" / "checkpoint_final.pth"
    init = results / "nnUNetTrainerDeepMedic_tiny__nnUNetPlans_init__3d_fullres" / "fold_0" / "checkpoint_final.pth"
    start_weights = torch.load(start, map_location="cpu", weights_only=False)["network_weights"]
    init_weights = torch.load(init, map_location="cpu", weights_only=False)["network_weights"]
    assert not torch.equal(start_weights["classifier.conv.weight"], init_weights["classifier.conv.weight"])
    for method in SCREEN_METHODS:
        fold = results / f"{RUNNER_METHODS[method][0]}_tiny__nnUNetPlans__3d_fullres" / "fold_0"
        first = sorted((fold / "snapshots").iterdir())[0]
        snap = torch.load(first, map_location="cpu", weights_only=False)
        assert snap["step"] == 0
        for k, v in start_weights.items():  # every method starts from the start stage, not the init model
            torch.testing.assert_close(snap["network_weights"][k], v)
        if method == "DeepMedic":
            assert "seeded run: nnUNet_mt_seed=3" in "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
        else:  # a semi-supervised trainer seeds its own start, from noise_seed + nnUNet_mt_seed
            final = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
            noise = torch.Generator().set_state(final["semi_supervised"]["noise_generator"])
            assert noise.initial_seed() == SemiSupervisedMixin.noise_seed + 3, method
    # the first run predicted nothing; the second only its two methods
    predictions = screen.work / "n2" / "predictions"
    assert sorted(p.name for p in predictions.iterdir()) == ["DeepMedic", "MeanTeacher-kl"]
    assert "### Diagnostics, 2 annotated scans" in screen.first and "Mean validation Dice" in screen.first


def test_a_seeded_rerun_replays_the_trainings_bit_for_bit(screen, tmp_path):
    """nnUNet_mt_seed with nnUNet_n_proc_DA=0: a copy of the work folder with two trained methods removed trains
    them again to the same weights, exactly, supervised and mean teacher (student and teacher) alike."""
    work = tmp_path / "work"
    shutil.copytree(screen.work, work, symlinks=True)
    results = work / "nnUNet_results" / "Dataset500_Tiny_n2"
    methods = ("DeepMedic", "MeanTeacher-kl")
    folds = {m: f"{RUNNER_METHODS[m][0]}_tiny__nnUNetPlans__3d_fullres" for m in methods}
    for folder in folds.values():
        shutil.rmtree(results / folder)
    common = list(screen.common)
    common[common.index("--workdir") + 1] = str(work)
    rerun = subprocess.run([*common, "--methods", *methods, "--screen"], env=screen.env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout[-6000:] + rerun.stderr[-3000:]
    original = screen.work / "nnUNet_results" / "Dataset500_Tiny_n2"
    for method, folder in folds.items():
        old = torch.load(original / folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        new = torch.load(results / folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        keys = [k for k in ("network_weights", "student_weights") if k in old]
        assert keys == (["network_weights", "student_weights"] if method != "DeepMedic" else ["network_weights"])
        for key in keys:
            assert old[key].keys() == new[key].keys()
            for name, value in old[key].items():
                assert torch.equal(value, new[key][name]), (method, key, name)


def test_start_model_trains_every_method_from_the_given_weights_and_refuses_another_file(screen, tmp_path):
    """--start-model with a file holding the screen's converged start (network weights, no optimizer state): no
    init or start stage, the step-0 validation Dice and DeepMedic's trained weights equal the screen's exactly;
    the manifest records the file's sha256 and a rerun naming another file is refused."""
    original = screen.work / "nnUNet_results" / "Dataset500_Tiny_n2"
    full = torch.load(original / "nnUNetTrainerDeepMedic_tiny__nnUNetPlans_start__3d_fullres" / "fold_0" /
                      "checkpoint_final.pth", map_location="cpu", weights_only=False)
    start = tmp_path / "start_weights.pth"
    torch.save({k: full[k] for k in ("network_weights", "trainer_name", "init_args")}, start)
    work = tmp_path / "work"
    common = list(screen.common)
    common[common.index("--workdir") + 1] = str(work)
    for option in ("--init-epochs", "--start-epochs"):  # what --start-model replaces
        del common[common.index(option):common.index(option) + 2]
    methods = ("DeepMedic", "MeanTeacher-kl")
    run = subprocess.run([*common, "--methods", *methods, "--screen", "--start-model", str(start)], env=screen.env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    results = work / "nnUNet_results" / "Dataset500_Tiny_n2"
    assert sorted(p.name for p in results.iterdir()) == sorted(
        f"{RUNNER_METHODS[m][0]}_tiny__nnUNetPlans__3d_fullres" for m in methods)  # no init, no start stage
    for method in methods:
        old = json.loads((screen.work / "n2" / "diagnostics" / f"snapshots_{method}.json").read_text())["dice"]
        new = json.loads((work / "n2" / "diagnostics" / f"snapshots_{method}.json").read_text())["dice"]
        step0 = [[(r["case"], r["model"], r["dice"]) for r in rows if r["step"] == 0] for rows in (old, new)]
        assert step0[0] and step0[0] == step0[1], method
    folder = "nnUNetTrainerDeepMedic_tiny__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth"
    old = torch.load(original / folder, map_location="cpu", weights_only=False)["network_weights"]
    new = torch.load(results / folder, map_location="cpu", weights_only=False)["network_weights"]
    assert all(torch.equal(v, new[k]) for k, v in old.items())
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["start_model"] == {"file": "start_weights.pth", "sha256": hashlib.sha256(start.read_bytes()).hexdigest()}
    other = tmp_path / "other.pth"
    torch.save({"network_weights": {k: v + 1 if v.is_floating_point() else v for k, v in full["network_weights"].items()}},
               other)
    refused = subprocess.run([*common, "--methods", *methods, "--screen", "--start-model", str(other)], env=screen.env,
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "start_model: recorded" in refused.stderr, refused.stderr[-3000:]


def test_screening_table_scores_the_validation_set_and_the_unannotated_volume(screen):
    from nnunet_mt.evaluation.choice import read_screening

    splits = json.loads((screen.work / "splits.json").read_text())
    validation = splits["counts"]["2"]["validation"]
    assert len(validation) == 2 and not set(validation) & set(splits["counts"]["2"]["test"])
    rows = read_screening(screen.root / "results" / "screening_n2.csv")
    assert {r["method"] for r in rows} == set(SCREEN_METHODS)
    assert {(r["network"], r["step"]) for r in rows if r["method"] == "MeanTeacher-kl"} == {
        (net, s) for net in ("model", "student") for s in (0, 2, 4)}
    cached = json.loads((screen.work / "n2" / "diagnostics" / "snapshots_MeanTeacher-kl.json").read_text())
    assert cached["cases"] == validation
    volume = json.loads((screen.work / "n2" / "diagnostics" / "volume_MeanTeacher-kl.json").read_text())
    assert volume["cases"] == ["un_000", "un_001"]
    row = next(r for r in rows if r["method"] == "MeanTeacher-kl" and r["network"] == "model" and r["step"] == 4)
    pooled = [r for r in volume["rows"] if r["model"] == "network_weights" and r["step"] == 4]
    assert row["volume_ratio"] == pytest.approx(sum(r["predicted_voxels"] for r in pooled)
                                                / sum(r["true_voxels"] for r in pooled), rel=1e-5)
    manifest = json.loads((screen.root / "results" / "manifest.json").read_text())
    assert manifest["validation"] == 2 and manifest["budget"]["start_epochs"] == 1
    assert manifest["budget"]["training_seed"] == 3 and "source_files" not in manifest


def test_the_over_segmentation_benchmark_scores_snapshots_as_the_runner_does(screen):
    """benchmarks/analyses/over_segmentation.py's volume over training and the runner's volume diagnostics are one loop
    (curves.snapshot_scores): on the same unannotated scans they give the same figures."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "analyses"))
    from over_segmentation import unannotated_cases, volume_over_training
    from nnunet_mt.evaluation.curves import _predictor, preprocess_cases

    model = RUNNER_METHODS["MeanTeacher-kl"][0] + "_tiny__nnUNetPlans__3d_fullres"
    results = screen.work / "nnUNet_results" / "Dataset500_Tiny_n2"
    only = screen.root / "only_kl"
    only.mkdir()
    (only / model).symlink_to(results / model)
    raw = screen.work / "nnUNet_raw" / "Dataset500_Tiny_n2"
    cases = unannotated_cases(raw, screen.root / "truth", 2, ".nii.gz")
    prepared = preprocess_cases(_predictor(results / model / "fold_0", "checkpoint_final.pth", "cpu"), cases)
    rows = volume_over_training(only, cases, prepared)
    volume = json.loads((screen.work / "n2" / "diagnostics" / "volume_MeanTeacher-kl.json").read_text())
    assert sorted(cases) == volume["cases"]
    expected = {("model" if s["model"] == "network_weights" else "student", s["step"]): s for s in volume["summary"]}
    scored = {(r["model"], r["step"]) for r in rows}
    assert scored <= set(expected)
    for network, step in set(expected) - scored:  # the benchmark scores a student equal to its model once
        assert network == "student"
        for key in ("pooled_volume_ratio", "pooled_precision", "pooled_recall", "dice_mean"):
            assert expected[(network, step)][key] == pytest.approx(expected[("model", step)][key], nan_ok=True)
    for r in rows:
        s = expected[(r["model"], r["step"])]
        assert r["volume_ratio"] == pytest.approx(s["pooled_volume_ratio"], rel=1e-6, nan_ok=True)
        assert r["precision"] == pytest.approx(s["pooled_precision"], rel=1e-6, nan_ok=True)
        assert r["recall"] == pytest.approx(s["pooled_recall"], rel=1e-6, nan_ok=True)


def test_the_over_segmentation_benchmark_pushes_from_the_converged_start(screen):
    """The step-0 push of every consistency, on the start model's maps of the unannotated scans: the same
    patches for each, Eq. 1 and the released loss as their gradients' signs say, no push from the losses
    that vanish at s = t."""
    bench = Path(__file__).resolve().parents[2] / "benchmarks" / "analyses" / "over_segmentation.py"
    run = subprocess.run([sys.executable, str(bench), str(screen.work), "--truth", str(screen.root / "truth"),
                          "--n", "2", "--cases", "2", "--patches", "6", "--patch", "3", "5", "5", "--skip-snapshots"],
                         capture_output=True, text=True, env=dict(os.environ, nnUNet_def_n_proc="1"))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((screen.work / "report" / "over_segmentation.json").read_text())
    assert report["start_model"] == "nnUNetTrainerDeepMedic_tiny__nnUNetPlans_start__3d_fullres"
    push = report["step0_push"]
    assert list(push) == ["paper", "released", "squared", "mse", "kl", "kl confidence=0.95"]
    for kind in ("lesion", "healthy"):
        shared = {(r[kind]["patches"], r[kind]["model_lesion"], r[kind]["mean_foreground_mass"]) for r in push.values()}
        assert len(shared) == 1  # one set of patches for every consistency
    assert push["paper"]["healthy"]["patches"] > 0
    assert push["released"]["lesion"]["pushed_up"] == push["released"]["healthy"]["pushed_up"] == 0
    for name in ("mse", "kl", "kl confidence=0.95"):
        assert push[name]["healthy"]["max_abs_push"] < 1e-12 and push[name]["healthy"]["pushed_up"] == 0
    assert "| paper (MeanTeacher, MeanTeacher-deterministic-teacher) | pseudo-lesion |" in run.stdout


def test_the_operating_point_push_runs_each_trainer_from_the_start_on_the_same_batches(screen, tmp_path):
    bench = Path(__file__).resolve().parents[2] / "benchmarks" / "analyses" / "operating_point_push.py"
    start = (screen.work / "nnUNet_results" / "Dataset500_Tiny_n2" /
             "nnUNetTrainerDeepMedic_tiny__nnUNetPlans_start__3d_fullres" / "fold_0" / "checkpoint_final.pth")
    out = tmp_path / "push.json"
    run = subprocess.run([sys.executable, str(bench), str(screen.work), "--start", str(start), "--n", "2",
                          "--batches", "2", "--methods", "MeanTeacher", "MeanTeacher-deterministic-teacher",
                          "--trainer-suffix", "_tiny", "--json", str(out)], capture_output=True, text=True,
                         env=dict(os.environ, nnUNet_def_n_proc="1"))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    dropout, deterministic = results["MeanTeacher"], results["MeanTeacher-deterministic-teacher"]
    assert (dropout["teacher_dropout"], deterministic["teacher_dropout"]) == (True, False)
    for row in results.values():
        for kind in ("healthy", "pseudo-lesion"):
            assert row[kind]["patches"] == 2 and row[kind]["mean_abs_gap"] > 0  # 2 batches of 1 + 1
    # same start, same first student pass: only the teacher's dropout differs, so the gaps do
    assert dropout["healthy"]["mean_abs_gap"] != deterministic["healthy"]["mean_abs_gap"]
    assert "| MeanTeacher | healthy | 2 |" in run.stdout

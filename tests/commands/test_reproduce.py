"""``nnunet_mt_reproduce`` as a user runs it: the source dataset's reading, refusals before any work, and
one end-to-end run on the tiny dataset (two counts sharing a test set; DeepMedic, the mean teacher and the
pseudo-label baseline) that is killed during a training, resumed from the saved step and rerun; and a screen
of every mean-teacher variant. The stages' own rules are tested in tests/runner/."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from matplotlib.image import imread

from conftest import SCREEN_METHODS, TINY_NAME, VENV_BIN, write_tiny_raw
from nnunet_mt.commands import reproduce
from fake_source import _fake_dataset
from nnunet_mt.runner.layout import INIT_PLANS
from nnunet_mt.runner.methods import METHODS as RUNNER_METHODS, check_trainers
from nnunet_mt.runner.splits import check_inputs, check_truth, draw_splits
from nnunet_mt.runner.source_dataset import ReproduceError, find_dataset_folder, read_source
from nnunet_mt.trainers.semi_supervised import SemiSupervisedMixin

# ---- unit tests ----------------------------------------------------------------------------------


def test_read_source_pool_and_lookup(tmp_path):
    folder = _fake_dataset(tmp_path)
    assert find_dataset_folder(tmp_path, "321") == folder
    assert find_dataset_folder(tmp_path, "Dataset321_Fake") == folder
    with pytest.raises(ReproduceError, match="no dataset with ID 7"):
        find_dataset_folder(tmp_path, "7")
    source = read_source(folder)
    assert source.pool == ["a", "b", "c", "d"]  # labelled imagesTs cases join; 'e' has no label
    assert sorted(source.unlabeled) == ["u1", "u2"] and source.name == "Fake"
    images, label = source.annotated["d"]
    assert [p.name for p in images] == ["d_0000.nii.gz", "d_0001.nii.gz"] and label.parent.name == "labelsTs"


def test_read_source_rejects_duplicates_and_missing_channels(tmp_path):
    with pytest.raises(ReproduceError, match="case id a occurs in both imagesTr and imagesUnlabeled"):
        read_source(_fake_dataset(tmp_path / "dup", unlabeled=("a",)))
    folder = _fake_dataset(tmp_path / "chan")
    (folder / "imagesTr" / "b_0001.nii.gz").unlink()
    with pytest.raises(ReproduceError, match=r"case b .*missing \[1\]"):
        read_source(folder)


def test_cli_errors_write_nothing(tmp_path):
    _fake_dataset(tmp_path / "raw")
    work = tmp_path / "work"
    for extra, message in ((["--counts", "3", "9"], "count 9: needs 1 <= count < pool size"),
                           (["--methods", "MeanTeacher", "Nope"], "unknown method(s) Nope; valid: DeepMedic"),
                           (["--methods", "MeanTeacher-beta0"],
                            "MeanTeacher-beta0 is now called MeanTeacher-no-consistency"),
                           (["-d", "322"], "no dataset with ID 322")):
        argv = ["-d", "321", "--raw", str(tmp_path / "raw"), "--workdir", str(work), "--device", "cpu", *extra]
        with pytest.raises(SystemExit) as exc:
            reproduce.main(argv)
        assert message in str(exc.value)
    assert not work.exists()


def test_help_lists_every_method_as_it_is_typed(capsys):
    with pytest.raises(SystemExit):
        reproduce.main(["--help"])
    words = capsys.readouterr().out.split()
    assert all(m in words or f"{m})" in words for m in RUNNER_METHODS)  # no name broken at a hyphen
    assert "MeanTeacher-kl-confident" in words and not any("beta0" in w for w in words)


# ---- end to end ----------------------------------------------------------------------------------
COUNTS = (3, 4)
SHARED_TEST = 2
METHODS = ("DeepMedic", "MeanTeacher", "PseudoLabel")
TRAINERS = {"DeepMedic": "nnUNetTrainerDeepMedic_tiny", "MeanTeacher": "nnUNetTrainerMeanTeacher_tiny",
            "PseudoLabel": "nnUNetTrainerDeepMedicPseudoLabel_tiny"}
POOL = [f"tr_{i:03d}" for i in range(5)] + ["ts_000", "ts_001"]
STAGES_PER_COUNT = ("plan_and_preprocess", "preprocess_unlabeled", "train_init_nnUNetTrainerDeepMedic_tiny",
                    *[f"train_{m}" for m in METHODS], *[f"predict_{m}" for m in METHODS],
                    *[f"evaluate_{m}" for m in METHODS])


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() + f" {p.stat().st_mtime_ns}"
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _outputs(work: Path) -> dict[str, tuple[int, int]]:
    """mtime and size of every checkpoint and prediction."""
    files = [*(work / "nnUNet_results").rglob("*.pth"), *(work.glob("n*/predictions/*/*"))]
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in files}


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    source_raw = root / "source_raw"
    truth = root / "truth"  # the unannotated scans' true masks, for the diagnostics only
    write_tiny_raw(source_raw, truth_dir=truth)  # 5 train + 2 labelled test (pool 7), 3 unannotated
    user_pre, user_res = root / "user_preprocessed", root / "user_results"
    user_pre.mkdir()
    user_res.mkdir()
    before = _snapshot(source_raw)
    work = root / "work"
    env = dict(os.environ, nnUNet_raw=str(source_raw), nnUNet_preprocessed=str(user_pre),
               nnUNet_results=str(user_res), nnUNet_n_proc_DA="0", nnUNet_compile="false", nnUNet_def_n_proc="1",
               PYTHONUNBUFFERED="1")
    cmd = [str(VENV_BIN / "nnunet_mt_reproduce"), "-d", "901", "--workdir", str(work),
           "--counts", *map(str, COUNTS), "--shared-test", str(SHARED_TEST), "--methods", *METHODS,
           "--trainer-suffix", "_tiny", "--init-epochs", "1", "--epochs", "2", "--iterations-per-epoch", "2",
           "--val-iterations", "1", "--rampup", "2", "--device", "cpu", "--num-processes", "0",
           "--snapshot-every", "1", "--unlabeled-truth", str(truth)]
    results = work / "nnUNet_results" / "Dataset500_Tiny_n3"
    first_init = results / f"nnUNetTrainerDeepMedic_tiny__{INIT_PLANS}__3d_fullres" / "fold_0" / "checkpoint_final.pth"
    killed_fold = results / "nnUNetTrainerMeanTeacher_tiny__nnUNetPlans__3d_fullres" / "fold_0"
    latest = killed_fold / "checkpoint_latest.pth"

    # 1: killed (SIGKILL, the whole process group) *during* the mean teacher's training at n3: as soon as
    # its first epoch's checkpoint_latest.pth is there (written after every epoch; the training has 2). On a
    # loaded machine the kill can land after the second epoch; then that training is removed and the run
    # started again (its finished stages are skipped), up to three times.
    for attempt in range(3):
        with open(root / "run1.log", "w") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.time() + 1200
            while not latest.exists():
                if proc.poll() is not None:
                    pytest.fail(f"runner ended ({proc.returncode}) before the mean teacher's first epoch:\n"
                                + (root / "run1.log").read_text()[-4000:])
                if time.time() > deadline:
                    os.killpg(proc.pid, signal.SIGKILL)
                    pytest.fail("waited 1200 s for the mean teacher's first checkpoint_latest.pth at n3")
                time.sleep(0.02)
            os.killpg(proc.pid, signal.SIGKILL)
            killed_at = time.time()
            proc.wait()
        killed = torch.load(latest, map_location="cpu", weights_only=False)
        if not (killed_fold / "checkpoint_final.pth").exists() and killed["current_epoch"] == 1:
            break
        shutil.rmtree(killed_fold)  # killed after the first epoch's checkpoint had been replaced: again
    else:
        pytest.fail("three runs were each killed after the mean teacher's second epoch, not during it")
    first_init_stat = (first_init.stat().st_mtime_ns, first_init.stat().st_size)

    # 2: resumed to the end; 3: nothing left to do
    runs = []
    for _ in range(2):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
        runs.append(done.stdout + done.stderr)
        if len(runs) == 1:
            outputs_after_2 = _outputs(work)
    return SimpleNamespace(root=root, work=work, source=source_raw / TINY_NAME, source_raw=source_raw,
                           user_folders=(user_pre, user_res), before=before, cmd=cmd, env=env,
                           first_init=first_init, first_init_stat=first_init_stat, run2=runs[0], run3=runs[1],
                           outputs_after_2=outputs_after_2, run1=(root / "run1.log").read_text(),
                           killed=killed, killed_at=killed_at, killed_fold=killed_fold, truth=truth)


def test_killed_training_continues_from_the_saved_step(reproduction):
    r = reproduction
    k = r.killed
    assert k["current_epoch"] == 1 and k["semi_supervised"]["global_step"] == 2  # one epoch of 2 steps saved
    final = torch.load(r.killed_fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    state = final["semi_supervised"]
    assert final["current_epoch"] == 2 and state["global_step"] == 4
    # the saved epoch was not trained again: its records are the killed run's, the rest came after the kill
    starts = final["logging"]["epoch_start_timestamps"]
    assert starts[0] == k["logging"]["epoch_start_timestamps"][0] < r.killed_at < starts[1]
    assert final["logging"]["train_losses"][0] == k["logging"]["train_losses"][0]
    assert state["history"]["step"] == [0, 1, 2, 3]
    assert state["history"]["Lc"][:2] == k["semi_supervised"]["history"]["Lc"]
    assert state["pseudo_lesion_digest"] == k["semi_supervised"]["pseudo_lesion_digest"]
    assert "=== n3/train_MeanTeacher: nnUNetv2_train 500 3d_fullres 0 -tr nnUNetTrainerMeanTeacher_tiny " \
           "-device cpu --c" in r.run2


def test_resume_keeps_the_finished_training(reproduction):
    r = reproduction
    for stage in ("train_init_nnUNetTrainerDeepMedic_tiny", "plan_and_preprocess", "train_DeepMedic"):
        assert f"=== n3/{stage}: skip (done)" in r.run2
    assert "=== n3/train_PseudoLabel: nnUNetv2_train 500 3d_fullres 0 -tr nnUNetTrainerDeepMedicPseudoLabel_tiny" \
        in r.run2
    assert (r.first_init.stat().st_mtime_ns, r.first_init.stat().st_size) == r.first_init_stat


def test_third_run_redoes_nothing(reproduction):
    r = reproduction
    for n in COUNTS:
        for stage in STAGES_PER_COUNT:
            assert f"=== n{n}/{stage}: skip (done)" in r.run3
    assert "nnUNetv2_" not in r.run3 and "nnunet_mt_preprocess_unlabeled" not in r.run3
    assert "none (everything was finished)" in r.run3
    assert _outputs(r.work) == r.outputs_after_2


def test_every_method_starts_from_the_init_model(reproduction):
    r = reproduction
    for n, dataset in ((3, "Dataset500_Tiny_n3"), (4, "Dataset501_Tiny_n4")):
        results = r.work / "nnUNet_results" / dataset
        init = results / f"nnUNetTrainerDeepMedic_tiny__{INIT_PLANS}__3d_fullres"
        plans = json.loads((init / "plans.json").read_text())
        init_weights = torch.load(init / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                                  weights_only=False)["network_weights"]
        assert plans["plans_name"] == INIT_PLANS
        assert plans["configurations"]["3d_fullres"]["data_identifier"] == "nnUNetPlans_3d_fullres"
        for trainer in TRAINERS.values():
            fold = results / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0"
            assert (fold / "checkpoint_final.pth").exists()
            log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
            assert "training budget from the environment (nnUNet_mt_*): {'num_epochs': 2, " \
                   "'num_iterations_per_epoch': 2, 'num_val_iterations_per_epoch': 1, 'rampup_length': 2, " \
                   "'snapshot_every': 1}" in log
            # fold 0's validation case is a training scan: the runner skips nnU-Net's final validation
            assert "final validation skipped (nnUNet_mt_final_validation=0)" in log
            assert not (fold / "validation").exists()
            # the weights each method starts from (its epoch-0 snapshot) are the init model's, student and
            # teacher alike; and training moved them
            start = torch.load(fold / "snapshots" / "epoch_0000.pth", map_location="cpu", weights_only=False)
            end = torch.load(fold / "snapshots" / "epoch_0002.pth", map_location="cpu", weights_only=False)
            # only the mean teacher's model (its teacher) is another network than its student
            assert ("student_weights" in start) == (trainer == TRAINERS["MeanTeacher"])
            for key in [k for k in ("network_weights", "student_weights") if k in start]:
                assert all(torch.equal(start[key][k], v) for k, v in init_weights.items()), (trainer, key)
            assert start["step"] == 0 and end["step"] == 4
            moved = end.get("student_weights", end["network_weights"])
            assert any(not torch.equal(moved[k], v) for k, v in init_weights.items())


def test_splits_and_derived_datasets(reproduction):
    r = reproduction
    splits = json.loads((r.work / "splits.json").read_text())
    assert splits["seed"] == 0 and splits["pool"] == POOL and splits["shared_test"] == SHARED_TEST
    expected = draw_splits(POOL, list(COUNTS), 0, shared_test=SHARED_TEST)
    assert splits["counts"] == {str(n): expected[n] for n in COUNTS}
    tested = {n: sorted(p.name for p in (r.work / f"n{n}" / "labelsTest").iterdir()) for n in COUNTS}
    assert len(tested[3]) == SHARED_TEST and tested[3] == tested[4]  # the same test scans for every count
    for n in COUNTS:
        trained = {p.name for p in (r.work / "nnUNet_raw" / f"Dataset{500 + COUNTS.index(n)}_Tiny_n{n}"
                                    / "labelsTr").iterdir()}
        assert len(trained) == n and not trained & set(tested[n])
    for i, n in enumerate(COUNTS):
        name = f"Dataset{500 + i}_Tiny_n{n}"
        raw = r.work / "nnUNet_raw" / name
        train = expected[n]["train"]
        assert sorted(p.name for p in (raw / "labelsTr").iterdir()) == [f"{c}.nii.gz" for c in train]
        assert len(list((raw / "imagesTr").iterdir())) == 2 * n and len(list((raw / "imagesUnlabeled").iterdir())) == 6
        assert all(p.is_symlink() and str(p.resolve()).startswith(str(r.source_raw.resolve()))
                   for p in [*(raw / "imagesTr").iterdir(), *(raw / "labelsTr").iterdir()])
        assert json.loads((raw / "dataset.json").read_text())["numTraining"] == n
        fold0 = json.loads((r.work / "nnUNet_preprocessed" / name / "splits_final.json").read_text())
        assert fold0 == [{"train": train, "val": train[:1]}]
        assert sorted(p.name for p in (r.work / f"n{n}" / "labelsTest").iterdir()) == \
            [f"{c}.nii.gz" for c in expected[n]["test"]]


def test_predictions_and_nnunet_summaries(reproduction):
    r = reproduction
    test = draw_splits(POOL, list(COUNTS), 0, shared_test=SHARED_TEST)
    for n in COUNTS:
        for method in METHODS:
            pred = r.work / f"n{n}" / "predictions" / method
            assert (pred / ".complete").exists()
            for case in test[n]["test"]:
                assert (pred / f"{case}.nii.gz").exists()
            summary = json.loads((pred / "summary.json").read_text())
            assert len(summary["metric_per_case"]) == len(test[n]["test"])


def test_report_and_records(reproduction):
    r = reproduction
    report = r.work / "report"
    names = ["report.md", "table_dice.md", "table_dice.csv", "per_case_metrics.csv", "statistics.csv",
             "statistics.md"]
    for n in COUNTS:
        names += [f"boxplot_dice_n{n}.png", f"fig2_training_dice_n{n}.png", f"fig3_overlays_n{n}.png"]
    for name in names:
        assert (report / name).is_file(), name
    text = (report / "report.md").read_text()
    assert "Dataset901_Tiny" in text and "Seed 0" in text and "n3/train_MeanTeacher" in text
    timings = json.loads((r.work / "timings.json").read_text())
    # every stage (the killed training records its time when run 2 finishes it)
    diagnostics = [*(f"diagnostics_{m}" for m in METHODS), "diagnostics_pseudo_labels"]
    assert {f"n{n}/{s}" for n in COUNTS for s in (*STAGES_PER_COUNT, *diagnostics)} == set(timings)
    manifest = json.loads((r.work / "manifest.json").read_text())
    assert manifest["counts"] == list(COUNTS) and manifest["budget"]["epochs"] == 2
    assert manifest["shared_test"] == SHARED_TEST and manifest["test_set"] == "shared"
    assert "one shared test set of 2 annotated scans for every count" in text
    assert f"report: {report / 'report.md'}" in r.run3


def test_source_and_user_folders_untouched(reproduction):
    r = reproduction
    assert _snapshot(r.source_raw) == r.before
    assert all(not any(folder.iterdir()) for folder in r.user_folders)


def test_rerun_with_other_settings_stops(reproduction):
    r = reproduction
    manifest = (r.work / "manifest.json").read_text()
    with pytest.raises(SystemExit) as exc:
        reproduce.main([*r.cmd[1:], "--seed", "1", "--raw", str(r.source_raw)])
    assert "seed: recorded 0, now 1" in str(exc.value) and "new --workdir" in str(exc.value)
    assert (r.work / "manifest.json").read_text() == manifest


# ---- trainer names, truth masks, validation sizes checked before any work --------------------------
def test_wrong_trainer_suffix_stops_before_any_work(tmp_path):
    check_trainers(["DeepMedic", "MeanTeacher", "PseudoLabel"], "_tiny")  # all exist
    with pytest.raises(ReproduceError, match=r"no trainer class nnUNetTrainerDeepMedic_tyni, "
                                             r"nnUNetTrainerMeanTeacher_tyni in .*--trainer-suffix '_tyni'"):
        check_trainers(["MeanTeacher"], "_tyni")
    _fake_dataset(tmp_path / "raw")
    work = tmp_path / "work"
    with pytest.raises(SystemExit, match="no trainer class"):
        reproduce.main(["-d", "321", "--raw", str(tmp_path / "raw"), "--workdir", str(work), "--device", "cpu",
                        "--counts", "2", "--methods", "DeepMedic", "--trainer-suffix", "_tyni"])
    assert not work.exists()


def test_diagnostics_snapshots_and_pseudo_label_quality(reproduction):
    """Every method's snapshots scored on the test scans (model and student), distance from the
    init model, and the pseudo-labels against the true masks, which no trainer reads."""
    from nnunet_mt.evaluation.curves import label_quality

    r = reproduction
    folder = r.work / "n3" / "diagnostics"
    mt = json.loads((folder / "snapshots_MeanTeacher.json").read_text())
    assert mt["cases"] == json.loads((r.work / "splits.json").read_text())["counts"]["3"]["test"]
    assert {(d["model"], d["step"]) for d in mt["dice"]} == {(m, s) for m in ("network_weights", "student_weights")
                                                             for s in (0, 2, 4)}
    dist = {(d["model"], d["step"]): d["distance_from_init"] for d in mt["distance"]}
    assert dist[("network_weights", 0)] == dist[("student_weights", 0)] == 0.0
    # the EMA teacher moves less than its student
    assert 0 < dist[("network_weights", 4)] < dist[("student_weights", 4)]
    quality = json.loads((folder / "pseudo_label_quality.json").read_text())
    assert sorted(quality["per_case"]) == ["un_000", "un_001", "un_002"]
    # recompute one case by hand: its stored label map against its true mask, cropped as nnU-Net crops
    preprocessed = r.work / "nnUNet_preprocessed" / "Dataset500_Tiny_n3" / "nnUNetPlans_3d_fullres_unlabeled"
    labels = np.load(preprocessed / f"pseudo_labels_{quality['digest']}" / "un_000.npz")["labels"]
    props = pickle.loads((preprocessed / "un_000.pkl").read_bytes())
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(r.truth / "un_000.nii.gz")))
    bbox = props["bbox_used_for_cropping"]
    cropped = truth[tuple(slice(a, b) for a, b in bbox)]
    expected = label_quality(labels[0] if labels.ndim == 4 else labels, cropped)
    assert quality["per_case"]["un_000"]["dice"] == pytest.approx(expected["dice"], nan_ok=True)
    assert quality["per_case"]["un_000"]["true_voxels"] == int((truth > 0).sum()) > 0
    text = (r.work / "report" / "report.md").read_text()
    assert "### Diagnostics, 3 annotated scans" in text and "Pseudo-labels of the 3 unannotated scans" in text
    assert imread(r.work / "report" / "diagnostics_n3.png").shape[:2] == (400, 1100)  # its data: test_diagnostics.py


def test_unlabeled_truth_is_checked_before_any_work(tmp_path):
    source = read_source(_fake_dataset(tmp_path / "raw"))  # unannotated u1, u2
    truth = tmp_path / "truth"
    with pytest.raises(ReproduceError, match="not a folder"):
        check_truth(source, truth)
    truth.mkdir()
    (truth / "u1.nii.gz").touch()
    with pytest.raises(ReproduceError, match=r"no true mask for 1 of the 2 unannotated scans, e.g. u2.nii.gz"):
        check_truth(source, truth)
    (truth / "u2.nii.gz").touch()
    check_truth(source, truth)
    check_truth(source, None)


# ---- validation set, converged start, the screen of the mean-teacher variants ------------------------

def test_validation_size_is_checked(tmp_path):
    source = read_source(_fake_dataset(tmp_path / "ok"))  # pool of 4
    check_inputs(source, [1], ["DeepMedic"], shared_test=2, validation=1)
    with pytest.raises(ReproduceError, match=r"count 2: with --shared-test 2 .* outside the validation set"):
        check_inputs(source, [2], ["DeepMedic"], shared_test=2, validation=1)
    with pytest.raises(ReproduceError, match=r"--validation 3: needs 1 <= N <= pool size - 2"):
        check_inputs(source, [1], ["DeepMedic"], validation=3)
    with pytest.raises(SystemExit, match="--screen scores the snapshots on a validation set"):
        reproduce.main(["-d", "321", "--raw", str(tmp_path / "ok"), "--workdir", str(tmp_path / "w"),
                        "--counts", "1", "--methods", "DeepMedic", "--screen"])
    assert not (tmp_path / "w").exists()


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

"""The work folder: names, atomic writes and the lock that keeps a second run out."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from fake_source import _fake_dataset
from nnunet_mt.runner.layout import FIRST_DERIVED_ID, WorkdirLock, derived_dataset, results_folder
from nnunet_mt.runner.reproduction import Reproduction
from nnunet_mt.runner.source_dataset import ReproduceError, read_source

def test_second_run_on_a_work_folder_is_refused_while_the_first_holds_it(tmp_path):
    import multiprocessing

    work = tmp_path / "work"
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(work, ready, stop))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(ReproduceError) as exc:
            WorkdirLock(work)
        assert f"{work} is in use by another nnunet_mt_reproduce run (pid {holder.pid})" in str(exc.value)
    finally:
        stop.set()
        holder.join(60)
    WorkdirLock(work).release()  # free again once the holder is gone


def _hold_lock(work, ready, stop):
    lock = WorkdirLock(work)
    ready.set()
    stop.wait(60)
    lock.release()


def test_derived_dataset_ids_follow_the_sorted_counts():
    assert derived_dataset([10, 20, 30], "Stroke", 20) == (501, "Dataset501_Stroke_n20")
    assert derived_dataset([5], "X", 5) == (FIRST_DERIVED_ID, "Dataset500_X_n5")
    with pytest.raises(ValueError, match="30 is not in list"):  # not a count of this run
        derived_dataset([10, 20], "X", 30)


def test_results_folder_is_nnunets_name_for_trainer_plans_and_configuration(tmp_path):
    assert results_folder(tmp_path, "Dataset500_X_n5", "T") == \
        tmp_path / "nnUNet_results" / "Dataset500_X_n5" / "T__nnUNetPlans__3d_fullres"
    assert results_folder(tmp_path, "D", "T", "nnUNetPlans_init").name == "T__nnUNetPlans_init__3d_fullres"


def test_the_runners_unannotated_folder_is_named_from_the_plans_data_identifier(tmp_path):
    work = tmp_path / "work"
    args = SimpleNamespace(workdir=work, counts=[2], methods=["MeanTeacher"], seed=0, trainer_suffix="")
    repro = Reproduction(args, read_source(_fake_dataset(tmp_path / "raw")))
    preprocessed = work / "nnUNet_preprocessed" / repro.dataset(2)[1]
    preprocessed.mkdir(parents=True)
    plans = {"dataset_name": preprocessed.name, "plans_name": "nnUNetPlans", "configurations": {
        "3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres"}}}
    (preprocessed / "nnUNetPlans.json").write_text(json.dumps(plans))
    assert repro.unlabeled_folder(2) == preprocessed / "nnUNetPlans_3d_fullres_unlabeled"

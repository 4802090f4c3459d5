"""The runner's work folder: its own ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results``, one
derived dataset per count, the plans names of its supervised stages and the lock that
keeps a second run out."""
from __future__ import annotations

import os
from pathlib import Path

from nnunet_mt.runner.source_dataset import ReproduceError

CONFIGURATION = "3d_fullres"
PLANS = "nnUNetPlans"
#: the supervised init model's plans: ``nnUNetPlans`` under another ``plans_name`` (its own results folder)
INIT_PLANS = "nnUNetPlans_init"
#: the optional second supervised stage (``--start-epochs``): the converged start every method continues from
START_PLANS = "nnUNetPlans_start"
#: derived dataset IDs: FIRST_DERIVED_ID + index of the count in the sorted counts
FIRST_DERIVED_ID = 500
#: a prediction folder holding this file is finished
COMPLETE_MARKER = ".complete"


def derived_dataset(counts: list[int], source_name: str, n: int) -> tuple[int, str]:
    """(ID, ``DatasetXXX_<source>_n<n>``) of count n's derived dataset."""
    dataset_id = FIRST_DERIVED_ID + counts.index(n)
    return dataset_id, f"Dataset{dataset_id:03d}_{source_name}_n{n}"


def results_folder(workdir: Path, dataset_name: str, trainer: str, plans: str = PLANS) -> Path:
    """nnU-Net's model folder ``<trainer>__<plans>__3d_fullres`` of one dataset in the work folder."""
    return workdir / "nnUNet_results" / dataset_name / f"{trainer}__{plans}__{CONFIGURATION}"


def link(target: Path, link_path: Path) -> None:
    """``link_path`` -> the absolute ``target`` (replacing what was there)."""
    if link_path.is_symlink() or link_path.exists():
        link_path.unlink()
    link_path.symlink_to(Path(target).resolve())


class WorkdirLock:
    """An exclusive lock on ``WORKDIR/.lock`` for the run's life (released by the OS if the run dies), so two
    runs never preprocess or train into one work folder at the same time."""

    def __init__(self, workdir: Path) -> None:
        import fcntl

        workdir.mkdir(parents=True, exist_ok=True)
        self.path = workdir / ".lock"
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise ReproduceError(f"{workdir} is in use by another nnunet_mt_reproduce run ({holder}); wait for it "
                                 f"to finish or use another --workdir") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()}")
        self.file.flush()

    def release(self) -> None:
        self.file.close()  # closing the descriptor drops the flock

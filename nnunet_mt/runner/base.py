"""What every stage of a run shares: the options, the source, the drawn splits, the environment of the
nnU-Net commands, the timings, and the names and folders of each count's dataset and models.

The stages (:mod:`.data`, :mod:`.training`, :mod:`.prediction`, :mod:`.diagnostics`) are subclasses of
:class:`RunBase`, each adding its own methods; :class:`nnunet_mt.runner.reproduction.Reproduction` combines
them."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from nnunet_mt.preprocessing.unlabeled import unlabeled_data_folder
from nnunet_mt.runner.layout import (CONFIGURATION, INIT_PLANS, PLANS, START_PLANS, derived_dataset,
                                     results_folder)
from nnunet_mt.runner.methods import METHODS, SUPERVISED_METHODS
from nnunet_mt.runner.source_dataset import SourceDataset
from nnunet_mt.runner.splits import draw_splits
from nnunet_mt.training import final_validation
from nnunet_mt.training.budget import BUDGET_VARIABLES
from nnunet_mt.training.seeding import SEED_VARIABLE
from nnunet_mt.utils.atomic import write_json
from nnunet_mt.utils.pipeline import run, workdir_env


class RunBase:
    def __init__(self, args: argparse.Namespace, source: SourceDataset) -> None:
        self.args = args
        self.source = source
        self.workdir: Path = args.workdir
        self.counts: list[int] = args.counts
        self.methods: list[str] = args.methods
        self.shared_test: int | None = getattr(args, "shared_test", None)
        self.validation: int | None = getattr(args, "validation", None)
        self.splits = draw_splits(source.pool, self.counts, args.seed, self.shared_test, self.validation)
        self.semi = any(m not in SUPERVISED_METHODS for m in self.methods)
        self.timings_file = self.workdir / "timings.json"
        self.timings: dict[str, float] = (json.loads(self.timings_file.read_text())
                                          if self.timings_file.exists() else {})
        self.run_timings: dict[str, float] = {}
        #: nnU-Net's end-of-training validation: off, the fold-0 validation case is a training scan
        self.final_validation = False
        base = workdir_env(self.workdir)
        base["nnUNet_compile"] = os.environ.get("nnUNet_compile", "false")
        # nnU-Net's own worker pools (the end-of-training validation's export and scoring) follow the option too
        if getattr(args, "num_processes", None) is not None:
            base["nnUNet_def_n_proc"] = str(max(1, args.num_processes))
        # only the runner's options set a budget, a final validation or a seed, never the caller's shell
        for name in (*BUDGET_VARIABLES, final_validation.VARIABLE, SEED_VARIABLE):
            base.pop(name, None)
        self.env = base
        self.preprocess_env = {k: v for k, v in base.items() if k != "nnUNet_n_proc_DA"}  # crashes with 0

    # -- running a stage
    def stage(self, name: str, cmd: list[str], env: dict) -> None:
        """Run one nnU-Net command (:func:`nnunet_mt.utils.pipeline.run`); its wall time accumulates in timings.json."""
        took = run(name, cmd, env)
        self.record_time(name, took)
        self.run_timings[name] = took

    def record_time(self, name: str, seconds: float, accumulate: bool = True) -> None:
        self.timings[name] = (self.timings.get(name, 0.0) if accumulate else 0.0) + seconds
        write_json(self.timings_file, self.timings)

    @staticmethod
    def skip(name: str) -> None:
        print(f"=== {name}: skip (done)", flush=True)

    # -- names and folders
    def trainer(self, method: str) -> str:
        return METHODS[method][0] + self.args.trainer_suffix

    def init_trainer(self, method: str) -> str:
        return METHODS[method][1] + self.args.trainer_suffix

    def dataset(self, n: int) -> tuple[int, str]:
        """(ID, name) of count n's derived dataset."""
        return derived_dataset(self.counts, self.source.name, n)

    def count_dir(self, n: int) -> Path:
        """``WORKDIR/n<n>``: count n's test inputs, predictions and diagnostics."""
        return self.workdir / f"n{n}"

    def preprocessed_dir(self, n: int) -> Path:
        return self.workdir / "nnUNet_preprocessed" / self.dataset(n)[1]

    def model_dir(self, n: int, trainer: str, plans: str = PLANS) -> Path:
        return results_folder(self.workdir, self.dataset(n)[1], trainer, plans)

    def unlabeled_folder(self, n: int) -> Path:
        """Where nnunet_mt_preprocess_unlabeled writes count n's unannotated scans (the trainers' folder)."""
        preprocessed = self.preprocessed_dir(n)
        plans = json.loads((preprocessed / f"{PLANS}.json").read_text())
        return unlabeled_data_folder(preprocessed, plans["configurations"][CONFIGURATION]["data_identifier"])

    def start_checkpoint(self, n: int, method: str) -> Path:
        """The supervised model ``method`` starts from: ``--start-model``, else the init model, or the
        ``--start-epochs`` stage after it."""
        if getattr(self.args, "start_model", None) is not None:
            return self.args.start_model
        plans = START_PLANS if getattr(self.args, "start_epochs", None) else INIT_PLANS
        return self.model_dir(n, self.init_trainer(method), plans) / "fold_0" / "checkpoint_final.pth"

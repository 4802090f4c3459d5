"""One run of the protocol, count by count: the stages combined (:mod:`.data`, :mod:`.training`,
:mod:`.diagnostics`, :mod:`.prediction`) and the notes the report opens with."""
from __future__ import annotations

import time

from nnunet_mt.runner.data import DataStage
from nnunet_mt.runner.diagnostics import DiagnosticsStage
from nnunet_mt.runner.prediction import PredictionStage
from nnunet_mt.runner.start_model import record
from nnunet_mt.runner.training import TrainingStage


class Reproduction(DataStage, TrainingStage, DiagnosticsStage, PredictionStage):
    def run_count(self, n: int):
        """Every stage of count n; its test result (:class:`~nnunet_mt.evaluation.report.CountResult`), or None
        with ``--screen`` (no test predictions)."""
        print(f"\n##### {n} annotated training scans: {len(self.splits[n]['test'])} test scans", flush=True)
        self.build_raw(n)
        self.preprocess(n)
        self.train_starts(n)
        for method in self.methods:
            self.train_method(n, method)
            self.diagnose_method(n, method)  # as each finishes: a long screen shows its results as it goes
        self.diagnose(n)
        if getattr(self.args, "screen", False):
            return None
        return self.test_result(n)

    def notes(self, started: float) -> str:
        """The report's opening: source, split, protocol, budget and the wall time of every stage."""
        a, s = self.args, self.source
        budget = self.budget()
        shown = ", ".join(f"{k} {v if v is not None else 'trainer default'}" for k, v in budget.items())
        lines = [
            f"Source dataset: `{s.folder}` ({len(s.pool)} annotated scans in the pool, {len(s.unlabeled)} "
            f"unannotated). Seed {a.seed}; counts {', '.join(map(str, self.counts))} "
            + (f"(test set = the other {', '.join(str(len(s.pool) - n) for n in self.counts)} annotated scans)."
               if self.shared_test is None else
               f"(one shared test set of {self.shared_test} annotated scans for every count, drawn first; the "
               f"training scans of every count from the other {len(s.pool) - self.shared_test}: the columns "
               f"compare)."),
            "",
            (f"Protocol: every method trained from the given supervised model `{a.start_model.name}` "
             f"(--start-model, sha256 {record(a.start_model)['sha256'][:12]}...) with the same budget "
             if getattr(a, "start_model", None) is not None else
             "Protocol: per count a supervised init model, then every method trained from it with the same budget ")
            + f"({shown}). Trainer suffix `{a.trainer_suffix or '(none)'}`; device `{a.device}`; "
            f"test-time mirroring {'off' if a.disable_tta else 'as the trainer allows'}.",
            "",
            "nnU-Net's own validation in each results folder uses training scans (a training Dice); the test "
            "scans were never seen in training.",
            "",
            "Wall time per stage (s, accumulated over invocations):",
            "",
            "| stage | s |", "|---|---|",
            *[f"| {k} | {v:.0f} |" for k, v in self.timings.items()],
            "",
            f"This invocation: {time.time() - started:.0f} s.",
        ]
        if self.diagnostics_md:
            lines += ["", "## Diagnostics", "", *self.diagnostics_md]
        return "\n".join(lines)

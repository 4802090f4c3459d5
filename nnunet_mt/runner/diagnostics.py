"""The run's diagnostics, after each method's training: its weight snapshots scored on the validation set
(else on test scans, never to choose anything), their predicted volume on unannotated scans with true
masks, the pseudo-labels' quality, and the screening table the choice rule reads
(:mod:`nnunet_mt.evaluation.diagnostics` computes them; this stage decides what, where, and caches)."""
from __future__ import annotations

import time
from pathlib import Path

from nnunet_mt.runner.base import RunBase
from nnunet_mt.runner.methods import SUPERVISED_METHODS
from nnunet_mt.training.snapshots import list_snapshots


def torch_load(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


class DiagnosticsStage(RunBase):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        #: each count's markdown section of the report, in the order diagnosed
        self.diagnostics_md: list[str] = []

    def diagnostic_cases(self, n: int) -> tuple[str, dict]:
        """(name, case -> (images, label)) the snapshots are scored on: the validation set if there is one (it
        may serve choices), else the first ``--diagnostic-cases`` test scans (never used to choose anything)."""
        limit = getattr(self.args, "diagnostic_cases", None) or None
        if self.validation:
            chosen, name = sorted(self.splits[n]["validation"])[:limit], "validation"
        else:
            chosen, name = sorted(self.splits[n]["test"])[:limit], "test"
        return name, {c: self.source.annotated[c] for c in chosen}

    def volume_cases(self) -> dict:
        """The unannotated scans whose predicted volume is followed over training (``--volume-cases`` K, with
        ``--unlabeled-truth``): the first K, with their true masks."""
        truth, k = getattr(self.args, "unlabeled_truth", None), getattr(self.args, "volume_cases", None)
        if truth is None or not k:
            return {}
        ending = self.source.file_ending
        return {c: (self.source.unlabeled[c], Path(truth) / f"{c}{ending}") for c in sorted(self.source.unlabeled)[:k]}

    def diagnose_method(self, n: int, method: str) -> tuple[dict | None, dict | None]:
        """One method's snapshot diagnostics (Dice and distance from its start; volume on the unannotated
        scans), computed once and cached in ``n{n}/diagnostics/``; (None, None) without snapshots."""
        from nnunet_mt.evaluation import diagnostics as dg

        fold = self.model_dir(n, self.trainer(method)) / "fold_0"
        if not (fold / "checkpoint_final.pth").exists() or not list_snapshots(fold):
            return None, None
        folder = self.count_dir(n) / "diagnostics"
        _, cases = self.diagnostic_cases(n)
        start = time.time()
        scores = dg.snapshot_diagnostics(fold, cases, self.start_checkpoint(n, method),
                                         folder / f"snapshots_{method}.json", device=self.args.device)
        volume_cases = self.volume_cases()
        volume = (dg.snapshot_volume(fold, volume_cases, folder / f"volume_{method}.json", device=self.args.device)
                  if volume_cases else None)
        self.record_time(f"n{n}/diagnostics_{method}", time.time() - start)
        return scores, volume

    def pseudo_label_quality(self, n: int) -> dict | None:
        """With ``--unlabeled-truth``: the first semi-supervised method's pseudo-lesion maps (those of its start
        model) scored against the true masks; None without truth or without such a method."""
        from nnunet_mt.evaluation import diagnostics as dg

        truth = getattr(self.args, "unlabeled_truth", None)
        if truth is None:
            return None
        for method in self.methods:
            final = self.model_dir(n, self.trainer(method)) / "fold_0" / "checkpoint_final.pth"
            if method in SUPERVISED_METHODS or not final.exists():
                continue
            digest = torch_load(final).get("semi_supervised", {}).get("pseudo_lesion_digest")
            if digest is None:
                continue
            start = time.time()
            # the method's own model folder serves the predictor's preprocessing (weights do not enter it)
            pseudo = dg.pseudo_label_diagnostics(self.unlabeled_folder(n), digest, final.parent, truth,
                                                 self.source.unlabeled, self.source.file_ending,
                                                 self.count_dir(n) / "diagnostics" / "pseudo_label_quality.json")
            self.record_time(f"n{n}/diagnostics_pseudo_labels", time.time() - start, accumulate=False)
            if pseudo is not None:
                return pseudo
        return None

    def diagnose(self, n: int) -> None:
        """Snapshot curves (on the validation set, else test scans), volume on the unannotated scans and
        pseudo-label quality; the report's markdown section, the curves' plot and ``report/screening_n<n>.csv``.
        Only what the options ask for; nothing here reads a test result to choose anything."""
        from nnunet_mt.evaluation import diagnostics as dg

        set_name, cases = self.diagnostic_cases(n)
        per_method, volumes = {}, {}
        for method in self.methods:
            scores, volume = self.diagnose_method(n, method)
            if scores is not None:
                per_method[method] = scores
            if volume is not None:
                volumes[method] = volume
        pseudo = self.pseudo_label_quality(n)
        plot = None
        report_dir = self.workdir / "report"
        if per_method:
            report_dir.mkdir(parents=True, exist_ok=True)
            plot = f"diagnostics_n{n}.png"
            dg.write_snapshot_plot(per_method, report_dir / plot,
                                   f"{n} annotated scans: Dice on {len(cases)} {set_name} scans over training",
                                   set_name=set_name)
            dg.write_screening(dg.screening_rows(n, per_method, volumes), report_dir / f"screening_n{n}.csv")
        if per_method or pseudo is not None:
            self.diagnostics_md.append(dg.diagnostics_markdown(n, per_method, pseudo, plot, set_name=set_name,
                                                               volumes=volumes))

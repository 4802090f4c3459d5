"""The prediction stage of a run: ``nnUNetv2_predict`` of the test scans with each method's final model,
``nnUNetv2_evaluate_folder`` of each prediction folder, and this package's per-case metrics."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from nnunet_mt.runner.base import RunBase
from nnunet_mt.runner.layout import COMPLETE_MARKER, CONFIGURATION
from nnunet_mt.runner.source_dataset import ReproduceError
from nnunet_mt.runner.training import training_log


class PredictionStage(RunBase):
    def predict(self, n: int, method: str) -> Path:
        """Count n's test predictions of ``method`` and nnU-Net's ``summary.json`` of them; the folder."""
        dataset_id, _ = self.dataset(n)
        out = self.count_dir(n) / "predictions" / method
        name = f"n{n}/predict_{method}"
        if (out / COMPLETE_MARKER).exists():
            self.skip(name)
        else:
            if out.exists():
                shutil.rmtree(out)  # a half-written prediction folder: start again
            np_ = str(self.predict_processes())
            cmd = ["nnUNetv2_predict", "-i", str(self.count_dir(n) / "imagesTest"), "-o", str(out), "-d",
                   str(dataset_id), "-c", CONFIGURATION, "-f", "0", "-tr", self.trainer(method), "-chk",
                   "checkpoint_final.pth", "-device", self.args.device, "-npp", np_, "-nps", np_]
            if self.args.disable_tta:
                cmd.append("--disable_tta")
            self.stage(name, cmd, self.env)
            missing = [c for c in self.splits[n]["test"] if not (out / f"{c}{self.source.file_ending}").exists()]
            if missing:
                raise ReproduceError(f"nnUNetv2_predict wrote no prediction for {missing} in {out}")
            (out / COMPLETE_MARKER).touch()
        name = f"n{n}/evaluate_{method}"
        if (out / "summary.json").exists():
            self.skip(name)
        else:
            model = self.model_dir(n, self.trainer(method))
            self.stage(name, ["nnUNetv2_evaluate_folder", str(self.count_dir(n) / "labelsTest"), str(out),
                              "-djfile", str(model / "dataset.json"), "-pfile", str(model / "plans.json"),
                              "-np", str(max(1, self.args.num_processes))], self.env)
        return out

    def predict_processes(self) -> int:
        """``-npp``/``-nps`` of the test predictions: ``--predict-processes``, else sequential (0) on a machine
        of up to 4 cores (there nnUNetv2_predict's worker processes only compete with the network for the
        cores: minutes per method slower, measured on 2 cores), else ``--num-processes``."""
        chosen = getattr(self.args, "predict_processes", None)
        if chosen is not None:
            return chosen
        return 0 if (os.cpu_count() or 1) <= 4 else self.args.num_processes

    def test_result(self, n: int):
        """Every method's test predictions of count n, scored: a :class:`~nnunet_mt.evaluation.report.CountResult`."""
        from nnunet_mt.evaluation.metrics import evaluate_cases
        from nnunet_mt.evaluation.report import CountResult

        ending = self.source.file_ending
        test = self.splits[n]["test"]
        refs = {c: self.count_dir(n) / "labelsTest" / f"{c}{ending}" for c in test}
        images = {c: self.count_dir(n) / "imagesTest" / f"{c}_0000{ending}" for c in test}
        predictions, metrics, logs = {}, {}, {}
        for method in self.methods:
            out = self.predict(n, method)
            predictions[method] = {c: out / f"{c}{ending}" for c in test}
            metrics[method] = evaluate_cases(predictions[method], refs)
            log = training_log(self.model_dir(n, self.trainer(method)) / "fold_0")
            if log is not None:
                logs[method] = log
        return CountResult(count=n, images=images, references=refs, predictions=predictions, metrics=metrics,
                           training_logs=logs)

"""The data stage of a run: record the settings and the split, build each count's derived raw dataset
(links to the source's files) and its test inputs, and preprocess it with nnU-Net (annotated scans) and
``nnunet_mt_preprocess_unlabeled`` (unannotated scans)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from nnunet_mt.runner.base import RunBase
from nnunet_mt.runner.layout import CONFIGURATION, INIT_PLANS, PLANS, START_PLANS, link
from nnunet_mt.runner.source_dataset import UNLABELED_FOLDER, check_unchanged, fingerprint
from nnunet_mt.runner.splits import check_manifest
from nnunet_mt.runner.start_model import record
from nnunet_mt.utils.atomic import write_json


def write_init_plans(preprocessed: Path, name: str = INIT_PLANS) -> Path:
    """``<name>.json`` (default ``nnUNetPlans_init``): the plans with that ``plans_name`` (its own results folder),
    configurations and their ``data_identifier`` unchanged (same preprocessed data)."""
    plans = json.loads((preprocessed / f"{PLANS}.json").read_text())
    plans["plans_name"] = name
    out = preprocessed / f"{name}.json"
    write_json(out, plans)
    return out


def write_fold0_split(preprocessed: Path, train: list[str]) -> None:
    """Fold 0 trains on every training case and validates on the first of them (nnU-Net needs a validation
    set; one case keeps its final dense validation short)."""
    write_json(preprocessed / "splits_final.json", [{"train": sorted(train), "val": sorted(train)[:1]}])


class DataStage(RunBase):
    def budget(self) -> dict:
        """The training lengths and rates every method gets (recorded in the manifest)."""
        a = self.args
        budget = {"init_epochs": a.init_epochs, "epochs": a.epochs, "iterations_per_epoch": a.iterations_per_epoch,
                  "val_iterations": a.val_iterations, "rampup": a.rampup}
        # absent from manifests written before the options existed, so only recorded when set
        for key in ("init_lr", "start_epochs", "training_seed"):
            if getattr(a, key, None) is not None:
                budget[key] = getattr(a, key)
        return budget

    def manifest(self) -> dict:
        return {"source": self.source.folder.name, "source_folder": str(self.source.folder.resolve()),
                "pool": self.source.pool, "unlabeled": sorted(self.source.unlabeled), "seed": self.args.seed,
                "counts": self.counts, "shared_test": self.shared_test, "validation": self.validation,
                "test_set": "shared" if self.shared_test is not None else "rest of the pool",
                "budget": self.budget(), "disable_tta": self.args.disable_tta,
                "methods": self.methods, "trainer_suffix": self.args.trainer_suffix,
                # not a setting a rerun must match, but exact replay needs in-process augmentation ("0")
                "nnUNet_n_proc_DA": os.environ.get("nnUNet_n_proc_DA"),
                "start_model": (record(self.args.start_model) if getattr(self.args, "start_model", None) is not None
                                else None)}

    def prepare(self) -> None:
        """``manifest.json`` (a rerun with other settings or changed source files stops) and ``splits.json``."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        manifest_file = self.workdir / "manifest.json"
        manifest = self.manifest()
        check_manifest(manifest_file, manifest)
        recorded = json.loads(manifest_file.read_text()).get("source_files") if manifest_file.exists() else None
        manifest["source_files"] = fingerprint(self.source, recorded)
        check_unchanged(self.source.folder, recorded, manifest["source_files"])
        write_json(manifest_file, manifest)
        write_json(self.workdir / "splits.json", {
            "seed": self.args.seed, "pool": self.source.pool, "shared_test": self.shared_test,
            "validation": self.validation,
            "counts": {str(n): self.splits[n] for n in self.counts}})

    def build_raw(self, n: int) -> Path:
        """The derived raw dataset (links to the source's files) and the test inputs for count n."""
        _, name = self.dataset(n)
        ending = self.source.file_ending
        folder = self.workdir / "nnUNet_raw" / name
        if not (folder / "dataset.json").exists():
            tmp = folder.with_name(folder.name + ".tmp")
            if tmp.exists():
                shutil.rmtree(tmp)
            for sub in ("imagesTr", "labelsTr"):
                (tmp / sub).mkdir(parents=True)
            for case in self.splits[n]["train"]:
                images, label = self.source.annotated[case]
                for c, f in enumerate(images):
                    link(f, tmp / "imagesTr" / f"{case}_{c:04d}{ending}")
                link(label, tmp / "labelsTr" / f"{case}{ending}")
            if self.source.unlabeled:
                (tmp / UNLABELED_FOLDER).mkdir()
                for case, images in self.source.unlabeled.items():
                    for c, f in enumerate(images):
                        link(f, tmp / UNLABELED_FOLDER / f"{case}_{c:04d}{ending}")
            dataset_json = dict(self.source.dataset_json, numTraining=n)
            write_json(tmp / "dataset.json", dataset_json)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        test_images, test_labels = self.count_dir(n) / "imagesTest", self.count_dir(n) / "labelsTest"
        for d in (test_images, test_labels):
            d.mkdir(parents=True, exist_ok=True)
        for case in self.splits[n]["test"]:
            images, label = self.source.annotated[case]
            for c, f in enumerate(images):
                if not (test_images / f"{case}_{c:04d}{ending}").is_symlink():
                    link(f, test_images / f"{case}_{c:04d}{ending}")
            if not (test_labels / f"{case}{ending}").is_symlink():
                link(label, test_labels / f"{case}{ending}")
        return folder

    def preprocess(self, n: int) -> None:
        """nnU-Net's planning and preprocessing, fold 0's split, the supervised stages' plans and, for
        semi-supervised methods, the unannotated scans; each command once (a marker file says it finished)."""
        dataset_id, _ = self.dataset(n)
        preprocessed = self.preprocessed_dir(n)
        np_ = str(max(1, self.args.num_processes))
        marker = self.count_dir(n) / ".preprocessed"
        if marker.exists():
            self.skip(f"n{n}/plan_and_preprocess")
        else:
            (self.count_dir(n) / ".preprocessed_unlabeled").unlink(missing_ok=True)
            self.stage(f"n{n}/plan_and_preprocess", ["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c",
                                                     CONFIGURATION, "-npfp", np_, "-np", np_], self.preprocess_env)
            marker.touch()
        write_fold0_split(preprocessed, self.splits[n]["train"])
        write_init_plans(preprocessed)
        if getattr(self.args, "start_epochs", None):
            write_init_plans(preprocessed, START_PLANS)
        if self.semi:
            marker = self.count_dir(n) / ".preprocessed_unlabeled"
            if marker.exists():
                self.skip(f"n{n}/preprocess_unlabeled")
            else:
                self.stage(f"n{n}/preprocess_unlabeled", ["nnunet_mt_preprocess_unlabeled", "-d", str(dataset_id),
                                                          "-c", CONFIGURATION, "-np", np_], self.preprocess_env)
                marker.touch()

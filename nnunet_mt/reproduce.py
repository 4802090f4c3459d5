"""``nnunet_mt_reproduce``: the paper's experiment on your nnU-Net dataset, in one command.

Cui et al. (IPMI 2019), Sec. 3: with 10, 20 and 30 annotated training scans (plus all unannotated
scans), supervised DeepMedic, DeepMedic-UDA, DeepMedic-EN and the mean teacher are compared on the
remaining annotated scans (the test set) by Dice, with a paired t-test. Besides the paper's four (the
default ``--methods``): ``PiModel`` (ablation), ``PseudoLabel`` (the pseudo-label recipe nnU-Net's
maintainers give: cross-entropy on the init model's hard labels of the unannotated scans,
:mod:`nnunet_mt.trainers.nnUNetTrainerDeepMedicPseudoLabel`), ``nnUNet`` and ``MeanTeacherUNet``.

Input: an nnU-Net raw dataset (``$nnUNet_raw`` or ``--raw``; ``-d`` is its ID or name) with
``dataset.json``, ``imagesTr``/``labelsTr``, optionally ``imagesTs``/``labelsTs`` (annotated test
cases join the pool) and ``imagesUnlabeled`` (needed by every semi-supervised method). The *pool* is
every case with a label.

Protocol, per count n (``--counts``):

1. **Split.** One permutation of the sorted pool, drawn with ``numpy.random.default_rng(seed)``; the
   first n cases train, all others are the test set (as in the paper). The draws are nested: the 10
   training scans are among the 20. With ``--shared-test N`` the first N cases of the permutation are
   the test set of every count and the n training cases follow them (still nested), so the counts'
   columns of the table are measured on the same scans and compare. Recorded in ``WORKDIR/splits.json``
   and ``manifest.json``.
2. **Data.** A derived dataset ``WORKDIR/nnUNet_raw/Dataset{500+i}_{Name}_n{n}`` whose ``imagesTr`` /
   ``labelsTr`` are symbolic links to the n training cases' files and ``imagesUnlabeled`` links to
   the source's unannotated scans; ``nnUNetv2_plan_and_preprocess`` and
   ``nnunet_mt_preprocess_unlabeled`` on it. Fold 0 trains on all n cases; nnU-Net needs a
   validation set, so fold 0 "validates" on the first (sorted) *training* case: nnU-Net's
   validation Dice (``fold_0/validation``, progress.png's pseudo-Dice) is a training Dice here. The
   test scans are never seen in training.
3. **A fair start.** One supervised *init* model is trained first (``--init-epochs`` epochs), then
   *every* method, the supervised baseline included, is trained from it
   (``-pretrained_weights init/fold_0/checkpoint_final.pth``) with the same budget (``--epochs`` x
   ``--iterations-per-epoch``). The methods thus differ only in how they use the unannotated scans:
   the mean teacher needs a supervised start (Sec. 2.2: the teacher is initialised with the
   supervised network, and its pseudo-lesion sampling uses that network's predictions), and the
   baseline gets the same number of extra steps. The init model gets its own nnU-Net output folder
   without a new trainer class: the runner copies the plans ``nnUNetPlans.json`` to
   ``nnUNetPlans_init.json`` with ``plans_name`` ``nnUNetPlans_init`` and trains it with ``-p
   nnUNetPlans_init``; nnU-Net names the output folder ``<trainer>__<plans_name>__<configuration>``,
   and the configuration's ``data_identifier`` (``nnUNetPlans_3d_fullres``) is unchanged, so the
   preprocessed data and ``nnUNetPlans_3d_fullres_unlabeled`` are shared.
4. **Test.** ``nnUNetv2_predict`` of the test scans with each method, ``nnUNetv2_evaluate_folder``
   (nnU-Net's ``summary.json`` in each prediction folder) and this package's metrics.
5. **Report.** ``WORKDIR/report/report.md``: Dice table, per-case metrics, paired t-tests against the
   mean teacher, box plots, training curves and overlays (:mod:`nnunet_mt.evaluation.report`).

Budget: ``--init-epochs``, ``--epochs``, ``--iterations-per-epoch``, ``--val-iterations`` and
``--rampup`` reach the trainers as ``nnUNet_mt_*`` environment variables
(:mod:`nnunet_mt.training.budget`); an option left out keeps the trainer's own (full) length. The
variables are removed from the environment the runner was started with, so only its options count.
The trainings also get ``nnUNet_mt_final_validation=0`` (:mod:`nnunet_mt.training.final_validation`):
nnU-Net's end-of-training validation would score a placeholder validation case drawn from the training
scans; every method is evaluated on the test scans instead.

Everything is written under ``--workdir`` (its own ``nnUNet_raw``, ``nnUNet_preprocessed``,
``nnUNet_results``); the source dataset is only read and your nnU-Net folders are not used.
Interrupted? Run the same command again: finished stages are skipped (a training is finished when
its ``fold_0/checkpoint_final.pth`` exists; one with only ``checkpoint_latest.pth``, which every
trainer here writes after each epoch, continues from it with ``--c``; a prediction folder is
finished when its ``.complete`` marker exists, else it is redone). The settings that results depend
on (pool, unannotated scans, seed, counts, shared test set, budget, test-time augmentation) are
recorded in ``WORKDIR/manifest.json``; a rerun with other settings stops. Wall time per stage
accumulates in ``WORKDIR/timings.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from nnunet_mt.pipeline import run, workdir_env
from nnunet_mt.source_dataset import (UNLABELED_FOLDER, ReproduceError, SourceDataset, check_unchanged,
                                      find_dataset_folder, fingerprint, read_source)
from nnunet_mt.training import final_validation
from nnunet_mt.training.budget import BUDGET_VARIABLES, env_for_budget
from nnunet_mt.training.seeding import SEED_VARIABLE
from nnunet_mt.training.snapshots import list_snapshots

CONFIGURATION = "3d_fullres"
PLANS = "nnUNetPlans"
INIT_PLANS = "nnUNetPlans_init"
#: the optional second supervised stage (``--start-epochs``): the converged start every method continues from
START_PLANS = "nnUNetPlans_start"
#: derived dataset IDs: FIRST_DERIVED_ID + index of the count in the sorted counts
FIRST_DERIVED_ID = 500
COMPLETE_MARKER = ".complete"

#: display name -> (trainer, trainer of the supervised init model it starts from)
METHODS: dict[str, tuple[str, str]] = {
    "DeepMedic": ("nnUNetTrainerDeepMedic", "nnUNetTrainerDeepMedic"),
    "DeepMedic-UDA": ("nnUNetTrainerDeepMedicUDA", "nnUNetTrainerDeepMedic"),
    "DeepMedic-EN": ("nnUNetTrainerDeepMedicEN", "nnUNetTrainerDeepMedic"),
    "MeanTeacher": ("nnUNetTrainerMeanTeacher", "nnUNetTrainerDeepMedic"),
    "PiModel": ("nnUNetTrainerPiModel", "nnUNetTrainerDeepMedic"),
    "PseudoLabel": ("nnUNetTrainerDeepMedicPseudoLabel", "nnUNetTrainerDeepMedic"),
    "nnUNet": ("nnUNetTrainerUNet", "nnUNetTrainerUNet"),
    "MeanTeacherUNet": ("nnUNetTrainerMeanTeacherUNet", "nnUNetTrainerUNet"),
}
#: the mean teacher's consistency variants and controls (trainers/mean_teacher_variants.py), as methods
#: ``MeanTeacher-<name>``; ``MeanTeacher`` itself is the paper's Eq. 1
MEAN_TEACHER_VARIANTS = {
    "released": "nnUNetTrainerMeanTeacherReleased",
    "released-beta1": "nnUNetTrainerMeanTeacherReleasedBeta1",
    "released-gram": "nnUNetTrainerMeanTeacherReleasedGram",
    "squared": "nnUNetTrainerMeanTeacherSquared",
    "mse": "nnUNetTrainerMeanTeacherMSE",
    "kl": "nnUNetTrainerMeanTeacherKL",
    "kl-confident": "nnUNetTrainerMeanTeacherKLConfident",
    "beta0": "nnUNetTrainerMeanTeacherNoConsistency",
    "beta0-annotated-bn": "nnUNetTrainerMeanTeacherNoConsistencyAnnotatedBN",
}
METHODS.update({f"MeanTeacher-{k}": (v, "nnUNetTrainerDeepMedic") for k, v in MEAN_TEACHER_VARIANTS.items()})
DEFAULT_METHODS = ["DeepMedic", "DeepMedic-UDA", "DeepMedic-EN", "MeanTeacher"]
#: methods that use no unannotated scans
SUPERVISED_METHODS = {"DeepMedic", "nnUNet"}
#: manifest entries a rerun must match (results depend on them)
MANIFEST_SETTINGS = ("source", "pool", "unlabeled", "seed", "counts", "shared_test", "validation", "budget",
                     "disable_tta")
#: what a manifest written before a setting existed means by its absence
MANIFEST_DEFAULTS = {"shared_test": None, "validation": None}


# ---- checks, splits, manifest ------------------------------------------------------------------
def check_methods(methods: list[str]) -> None:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ReproduceError(f"unknown method(s) {', '.join(unknown)}; valid: {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        raise ReproduceError(f"--methods lists a method twice: {' '.join(methods)}")


def check_inputs(source: SourceDataset, counts: list[int], methods: list[str],
                 shared_test: int | None = None, validation: int | None = None) -> None:
    """Counts fit the pool (each leaves at least one test case; with a shared test set, they fit beside it;
    a validation set comes off the pool first); semi-supervised methods have scans."""
    pool = len(source.annotated)
    if validation is not None:
        if validation < 1 or validation > pool - 2:
            raise ReproduceError(f"--validation {validation}: needs 1 <= N <= pool size - 2 (a training and a test "
                                 f"scan must remain); the pool of {source.folder} has {pool} annotated case(s)")
        pool -= validation
    if shared_test is not None:
        if shared_test < 1 or shared_test >= pool:
            raise ReproduceError(f"--shared-test {shared_test}: needs 1 <= N < pool size; the pool of {source.folder} "
                                 f"has {pool} annotated case(s) (labelsTr + labelsTs"
                                 f"{', less the validation set' if validation else ''})")
        for n in counts:
            if n < 1 or n > pool - shared_test:
                raise ReproduceError(
                    f"count {n}: with --shared-test {shared_test} the training scans come from the other "
                    f"{pool - shared_test} of the {pool} annotated case(s) of {source.folder}"
                    f"{' outside the validation set' if validation else ''}; needs 1 <= count <= {pool - shared_test}")
    for n in counts if shared_test is None else ():
        if n < 1 or n >= pool:
            raise ReproduceError(
                f"count {n}: needs 1 <= count < pool size (the rest are the test set); the pool of {source.folder} "
                f"has {pool} annotated case(s) (labelsTr + labelsTs{', less the validation set' if validation else ''})")
    semi = [m for m in methods if m not in SUPERVISED_METHODS]
    if semi and not source.unlabeled:
        raise ReproduceError(f"{', '.join(semi)} need(s) unannotated scans in {source.folder / UNLABELED_FOLDER}/ "
                             f"(missing or empty); add them there or run only {', '.join(sorted(SUPERVISED_METHODS))}")


def draw_splits(pool: list[str], counts: list[int], seed: int, shared_test: int | None = None,
                validation: int | None = None) -> dict[int, dict[str, list[str]]]:
    """Per count n, from one seeded permutation of the sorted pool; every list sorted.

    Default (the paper's): ``train`` = the first n cases of the permutation (nested across counts),
    ``test`` = all the others, so each count has its own test set. ``shared_test`` = N: the first N
    cases of the permutation are the test set of *every* count, and ``train`` = the n cases after
    them (nested across counts, never among the N), so the counts' results compare on the same scans.
    ``validation`` = V: the *last* V cases of the permutation are every count's ``validation`` set,
    neither training nor test, for choices (a variant, a training length); taking them from the end
    leaves the training scans of a shared-test draw as they are without it."""
    pool = sorted(pool)
    order = np.random.default_rng(seed).permutation(len(pool))
    drawn = [pool[i] for i in order]
    val: list[str] = []
    if validation:
        drawn, val = drawn[:-validation], sorted(drawn[-validation:])
    if shared_test is None:
        splits = {n: {"train": sorted(drawn[:n]), "test": sorted(drawn[n:])} for n in counts}
    else:
        test, rest = sorted(drawn[:shared_test]), drawn[shared_test:]
        splits = {n: {"train": sorted(rest[:n]), "test": list(test)} for n in counts}
    if validation:
        for split in splits.values():
            split["validation"] = list(val)
    return splits


def check_manifest(path: Path, manifest: dict) -> None:
    """Stop if ``path`` records other settings than ``manifest`` (for the keys in MANIFEST_SETTINGS)."""
    if not path.exists():
        return
    old = json.loads(path.read_text())
    old = {**{k: v for k, v in MANIFEST_DEFAULTS.items() if k not in old}, **old}
    differ = [k for k in MANIFEST_SETTINGS if k in old and old[k] != manifest.get(k)]
    if differ:
        def show(v):
            text = json.dumps(v)
            return text if len(text) < 120 else text[:117] + "..."
        lines = [f"  {k}: recorded {show(old[k])}, now {show(manifest.get(k))}" for k in differ]
        raise ReproduceError(
            f"{path.parent} was used with other settings:\n" + "\n".join(lines) + "\n"
            "Its finished trainings and predictions were made with the recorded settings. Use a new --workdir "
            "for the new settings (or rerun with the recorded ones to continue).")


def write_init_plans(preprocessed: Path, name: str = INIT_PLANS) -> Path:
    """``<name>.json`` (default ``nnUNetPlans_init``): the plans with that ``plans_name`` (its own results folder),
    configurations and their ``data_identifier`` unchanged (same preprocessed data)."""
    plans = json.loads((preprocessed / f"{PLANS}.json").read_text())
    plans["plans_name"] = name
    out = preprocessed / f"{name}.json"
    _write_json(out, plans)
    return out


def write_fold0_split(preprocessed: Path, train: list[str]) -> None:
    """Fold 0 trains on every training case and validates on the first of them (nnU-Net needs a validation
    set; one case keeps its final dense validation short)."""
    _write_json(preprocessed / "splits_final.json", [{"train": sorted(train), "val": sorted(train)[:1]}])


def training_command(dataset_id: int, trainer: str, fold_dir: Path, device: str, plans: str = PLANS,
                     pretrained: Path | None = None) -> list[str] | None:
    """``nnUNetv2_train`` for one model: None if finished (``checkpoint_final.pth``), ``--c`` if
    ``checkpoint_latest.pth`` exists, else from ``pretrained`` (if given)."""
    if (fold_dir / "checkpoint_final.pth").exists():
        return None
    cmd = ["nnUNetv2_train", str(dataset_id), CONFIGURATION, "0", "-tr", trainer, "-device", device]
    if plans != PLANS:
        cmd += ["-p", plans]
    if (fold_dir / "checkpoint_latest.pth").exists():
        cmd.append("--c")
    elif pretrained is not None:
        cmd += ["-pretrained_weights", str(pretrained)]
    return cmd


def training_log(fold_dir: Path) -> Path | None:
    """The semi-supervised trainers' per-step log (``mean_teacher_log.json``, or another ``<name>_log.json``)."""
    preferred = fold_dir / "mean_teacher_log.json"
    if preferred.exists():
        return preferred
    found = sorted(fold_dir.glob("*_log.json")) if fold_dir.is_dir() else []
    return found[0] if found else None


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(Path(target).resolve())


# ---- the runner --------------------------------------------------------------------------------
class Reproduction:
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
        self.diagnostics_md: list[str] = []
        base = workdir_env(self.workdir)
        base["nnUNet_compile"] = os.environ.get("nnUNet_compile", "false")
        # nnU-Net's own worker pools (the end-of-training validation's export and scoring) follow the option too
        if getattr(args, "num_processes", None) is not None:
            base["nnUNet_def_n_proc"] = str(max(1, args.num_processes))
        for name in (*BUDGET_VARIABLES, final_validation.VARIABLE, SEED_VARIABLE):
            base.pop(name, None)
        self.env = base
        self.preprocess_env = {k: v for k, v in base.items() if k != "nnUNet_n_proc_DA"}  # crashes with 0

    # -- bookkeeping
    def budget(self) -> dict:
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
                "methods": self.methods, "trainer_suffix": self.args.trainer_suffix}

    def stage(self, name: str, cmd: list[str], env: dict) -> None:
        took = run(name, cmd, env)
        self.timings[name] = self.timings.get(name, 0.0) + took
        self.run_timings[name] = took
        _write_json(self.timings_file, self.timings)

    @staticmethod
    def skip(name: str) -> None:
        print(f"=== {name}: skip (done)", flush=True)

    def trainer(self, method: str) -> str:
        return METHODS[method][0] + self.args.trainer_suffix

    def init_trainer(self, method: str) -> str:
        return METHODS[method][1] + self.args.trainer_suffix

    def dataset(self, n: int) -> tuple[int, str]:
        i = self.counts.index(n)
        dataset_id = FIRST_DERIVED_ID + i
        return dataset_id, f"Dataset{dataset_id:03d}_{self.source.name}_n{n}"

    def unlabeled_folder(self, n: int) -> Path:
        """Where nnunet_mt_preprocess_unlabeled writes count n's unannotated scans (the trainers' folder)."""
        from nnunet_mt.preprocessing.unlabeled import OUTPUT_SUFFIX

        preprocessed = self.workdir / "nnUNet_preprocessed" / self.dataset(n)[1]
        plans = json.loads((preprocessed / f"{PLANS}.json").read_text())
        return preprocessed / (plans["configurations"][CONFIGURATION]["data_identifier"] + OUTPUT_SUFFIX)

    def count_dir(self, n: int) -> Path:
        return self.workdir / f"n{n}"

    def model_dir(self, n: int, trainer: str, plans: str = PLANS) -> Path:
        return self.workdir / "nnUNet_results" / self.dataset(n)[1] / f"{trainer}__{plans}__{CONFIGURATION}"

    # -- stages
    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        manifest_file = self.workdir / "manifest.json"
        manifest = self.manifest()
        check_manifest(manifest_file, manifest)
        recorded = json.loads(manifest_file.read_text()).get("source_files") if manifest_file.exists() else None
        manifest["source_files"] = fingerprint(self.source, recorded)
        check_unchanged(self.source.folder, recorded, manifest["source_files"])
        _write_json(manifest_file, manifest)
        _write_json(self.workdir / "splits.json", {
            "seed": self.args.seed, "pool": self.source.pool, "shared_test": self.shared_test,
            "validation": self.validation,
            "counts": {str(n): self.splits[n] for n in self.counts}})

    def build_raw(self, n: int) -> Path:
        """The derived raw dataset (links to the source's files) and the test inputs for count n."""
        dataset_id, name = self.dataset(n)
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
                    _link(f, tmp / "imagesTr" / f"{case}_{c:04d}{ending}")
                _link(label, tmp / "labelsTr" / f"{case}{ending}")
            if self.source.unlabeled:
                (tmp / UNLABELED_FOLDER).mkdir()
                for case, images in self.source.unlabeled.items():
                    for c, f in enumerate(images):
                        _link(f, tmp / UNLABELED_FOLDER / f"{case}_{c:04d}{ending}")
            dataset_json = dict(self.source.dataset_json, numTraining=n)
            _write_json(tmp / "dataset.json", dataset_json)
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
                    _link(f, test_images / f"{case}_{c:04d}{ending}")
            if not (test_labels / f"{case}{ending}").is_symlink():
                _link(label, test_labels / f"{case}{ending}")
        return folder

    def preprocess(self, n: int) -> None:
        dataset_id, name = self.dataset(n)
        preprocessed = self.workdir / "nnUNet_preprocessed" / name
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

    def train(self, name: str, n: int, trainer: str, plans: str, epochs: int | None,
              pretrained: Path | None = None, lr: float | None = None) -> None:
        fold_dir = self.model_dir(n, trainer, plans) / "fold_0"
        cmd = training_command(self.dataset(n)[0], trainer, fold_dir, self.args.device, plans, pretrained)
        if cmd is None:
            self.skip(name)
            return
        if pretrained is not None and "--c" not in cmd and not pretrained.exists():
            raise ReproduceError(f"{pretrained} is missing (the init model did not finish)")
        env = dict(self.env, **env_for_budget(epochs=epochs, iterations_per_epoch=self.args.iterations_per_epoch,
                                              val_iterations=self.args.val_iterations, rampup=self.args.rampup,
                                              lr=lr, snapshot_every=getattr(self.args, "snapshot_every", None)),
                   **{final_validation.VARIABLE: "1" if self.final_validation else "0"})
        if getattr(self.args, "training_seed", None) is not None:
            env[SEED_VARIABLE] = str(self.args.training_seed)
        self.stage(name, cmd, env)

    def predict(self, n: int, method: str) -> Path:
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

    def run_count(self, n: int):
        from nnunet_mt.evaluation.metrics import evaluate_cases
        from nnunet_mt.evaluation.report import CountResult

        print(f"\n##### {n} annotated training scans: {len(self.splits[n]['test'])} test scans", flush=True)
        self.build_raw(n)
        self.preprocess(n)
        starts = {}
        for init in dict.fromkeys(self.init_trainer(m) for m in self.methods):
            self.train(f"n{n}/train_init_{init}", n, init, INIT_PLANS, self.args.init_epochs,
                       lr=getattr(self.args, "init_lr", None))
            starts[init] = self.model_dir(n, init, INIT_PLANS) / "fold_0" / "checkpoint_final.pth"
            if getattr(self.args, "start_epochs", None):  # the converged start: a second supervised stage
                self.train(f"n{n}/train_start_{init}", n, init, START_PLANS, self.args.start_epochs,
                           pretrained=starts[init])
                starts[init] = self.model_dir(n, init, START_PLANS) / "fold_0" / "checkpoint_final.pth"
        for method in self.methods:
            self.train(f"n{n}/train_{method}", n, self.trainer(method), PLANS, self.args.epochs,
                       pretrained=starts[self.init_trainer(method)])
            self.diagnose_method(n, method)  # as each finishes: a long screen shows its results as it goes
        self.diagnose(n)
        if getattr(self.args, "screen", False):
            return None
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

    def start_checkpoint(self, n: int, method: str) -> Path:
        """The supervised model ``method`` starts from: the init model, or the ``--start-epochs`` stage after it."""
        plans = START_PLANS if getattr(self.args, "start_epochs", None) else INIT_PLANS
        return self.model_dir(n, self.init_trainer(method), plans) / "fold_0" / "checkpoint_final.pth"

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
        name = f"n{n}/diagnostics_{method}"
        self.timings[name] = self.timings.get(name, 0.0) + time.time() - start
        _write_json(self.timings_file, self.timings)
        return scores, volume

    def diagnose(self, n: int) -> None:
        """Snapshot curves (on the validation set, else test scans), volume on the unannotated scans and
        pseudo-label quality (:mod:`nnunet_mt.evaluation.diagnostics`); the report's markdown section and, with
        a validation set, ``report/screening.csv``. Only what the options ask for; nothing here reads a test
        result to choose anything."""
        from nnunet_mt.evaluation import diagnostics as dg

        folder = self.count_dir(n) / "diagnostics"
        set_name, cases = self.diagnostic_cases(n)
        per_method, volumes = {}, {}
        for method in self.methods:
            scores, volume = self.diagnose_method(n, method)
            if scores is not None:
                per_method[method] = scores
            if volume is not None:
                volumes[method] = volume
        pseudo = None
        truth = getattr(self.args, "unlabeled_truth", None)
        if truth is not None:
            for method in self.methods:
                final = self.model_dir(n, self.trainer(method)) / "fold_0" / "checkpoint_final.pth"
                if method in SUPERVISED_METHODS or not final.exists():
                    continue
                digest = torch_load(final).get("semi_supervised", {}).get("pseudo_lesion_digest")
                if digest is None:
                    continue
                start = time.time()
                pseudo = dg.pseudo_label_diagnostics(self.unlabeled_folder(n), digest,
                                                     self.start_checkpoint(n, method).parent, truth,
                                                     self.source.unlabeled, self.source.file_ending,
                                                     folder / "pseudo_label_quality.json")
                self.timings[f"n{n}/diagnostics_pseudo_labels"] = time.time() - start
                if pseudo is not None:
                    break
        _write_json(self.timings_file, self.timings)
        plot = None
        report_dir = self.workdir / "report"
        if per_method:
            report_dir.mkdir(parents=True, exist_ok=True)
            plot = f"diagnostics_n{n}.png"
            dg.write_snapshot_plot(per_method, report_dir / plot,
                                   f"{n} annotated scans: Dice on {len(cases)} {set_name} scans over training",
                                   set_name=set_name)
            rows = dg.screening_rows(n, per_method, volumes)
            dg.write_screening(rows, report_dir / f"screening_n{n}.csv")
        if per_method or pseudo is not None:
            self.diagnostics_md.append(dg.diagnostics_markdown(n, per_method, pseudo, plot, set_name=set_name,
                                                               volumes=volumes))

    def notes(self, started: float) -> str:
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
            f"Protocol: per count a supervised init model, then every method trained from it with the same "
            f"budget ({shown}). Trainer suffix `{a.trainer_suffix or '(none)'}`; device `{a.device}`; "
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


def check_trainers(methods: list[str], suffix: str) -> None:
    """Every trainer the methods need exists (a wrong ``--trainer-suffix`` stops here, before any preprocessing)."""
    from nnunet_mt.cli import trainers_dir
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    needed = sorted({name + suffix for m in methods for name in METHODS[m]})
    missing = [t for t in needed if recursive_find_python_class(trainers_dir(), t, "nnunet_mt.trainers") is None]
    if missing:
        raise ReproduceError(f"no trainer class {', '.join(missing)} in {trainers_dir()} (--trainer-suffix "
                             f"{suffix!r}; the plugin's variants are _tiny, _demo, _5epochs, _50epochs, and not every "
                             f"trainer has each)")


def check_truth(source: SourceDataset, truth: Path | None) -> None:
    """``--unlabeled-truth``: a mask for every unannotated scan, checked before hours of training, not after."""
    if truth is None:
        return
    if not Path(truth).is_dir():
        raise ReproduceError(f"--unlabeled-truth {truth}: not a folder")
    missing = [c for c in sorted(source.unlabeled) if not (Path(truth) / f"{c}{source.file_ending}").is_file()]
    if missing:
        raise ReproduceError(f"--unlabeled-truth {truth}: no true mask for {len(missing)} of the "
                             f"{len(source.unlabeled)} unannotated scans, e.g. {missing[0]}{source.file_ending}")


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


def announce_replaced_report(report_dir: Path, methods: list[str], counts: list[int]) -> None:
    """The report covers this invocation's methods and counts: say what an earlier report had beyond them."""
    record = report_dir / "contents.json"
    if record.exists():
        old = json.loads(record.read_text())
        gone_methods = [m for m in old.get("methods", []) if m not in methods]
        gone_counts = [n for n in old.get("counts", []) if n not in counts]
        if gone_methods or gone_counts:
            print(f"note: {report_dir} is rewritten for methods {', '.join(methods)} and counts "
                  f"{', '.join(map(str, counts))}; the previous report also had "
                  + "; ".join(x for x in (f"methods {', '.join(gone_methods)}" if gone_methods else "",
                                          f"counts {', '.join(map(str, gone_counts))}" if gone_counts else "") if x)
                  + ". Their trainings and predictions stay in the work folder: rerun with them in --methods / "
                    "--counts to report them again.", flush=True)
    report_dir.mkdir(parents=True, exist_ok=True)
    _write_json(record, {"methods": methods, "counts": counts})


#: the small text files of a run worth keeping beside the code (``--results``); large outputs stay in the workdir
RESULT_FILES = ("manifest.json", "splits.json", "timings.json", "report/table_dice.csv", "report/table_dice.md",
                "report/per_case_metrics.csv", "report/statistics.csv", "report/statistics.md",
                "report/screening.md", "report/screening_n*.csv")


def export_results(workdir: Path, dest: Path) -> list[str]:
    """Copy the run's :data:`RESULT_FILES` that exist into ``dest`` (flat, names kept); returns their names.
    The manifest loses ``source_folder``/``source_files`` (paths and file stamps of this machine)."""
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for pattern in RESULT_FILES:
        for f in sorted(workdir.glob(pattern)):
            if f.name == "manifest.json":
                manifest = {k: v for k, v in json.loads(f.read_text()).items()
                            if k not in ("source_folder", "source_files")}
                _write_json(dest / f.name, manifest)
            else:
                shutil.copyfile(f, dest / f.name)
            copied.append(f.name)
    return copied


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def torch_load(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value > 0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def source_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with the options every orchestrator on a source dataset shares: -d, --workdir, --raw."""
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", dest="dataset", required=True, help="source dataset ID or name (e.g. 501 or Dataset501_X)")
    p.add_argument("--workdir", type=Path, required=True, help="everything this command writes goes here")
    p.add_argument("--raw", type=Path, default=None, help="nnU-Net raw folder holding the source (default $nnUNet_raw)")
    return p


def source_of(args: argparse.Namespace) -> SourceDataset:
    """The source dataset ``-d`` in ``--raw`` (or ``$nnUNet_raw``)."""
    raw = args.raw or (Path(os.environ["nnUNet_raw"]) if os.environ.get("nnUNet_raw") else None)
    if raw is None:
        raise ReproduceError("set nnUNet_raw or pass --raw (the nnU-Net raw folder holding the source dataset)")
    return read_source(find_dataset_folder(raw, args.dataset))


def build_parser() -> argparse.ArgumentParser:
    p = source_parser("nnunet_mt_reproduce", __doc__)
    p.add_argument("--counts", type=_positive_int, nargs="+", default=[10, 20, 30],
                   help="numbers of annotated training scans (default 10 20 30)")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                   help=f"methods to compare (default {' '.join(DEFAULT_METHODS)}; all: {' '.join(METHODS)})")
    p.add_argument("--seed", type=int, default=0, help="seed of the training/test draw (default 0)")
    p.add_argument("--shared-test", type=_positive_int, default=None, metavar="N",
                   help="test every count on the same N annotated scans, drawn once from the pool; the counts' "
                        "training scans are drawn, nested, from the rest (default: the paper's, each count tests "
                        "on all annotated scans it does not train on)")
    p.add_argument("--validation", type=_positive_int, default=None, metavar="N",
                   help="a validation set of N annotated scans, neither training nor test (drawn from the end of the "
                        "permutation, so a shared-test draw's training scans stay the same): the snapshots are "
                        "scored on it instead of the test scans, for choosing a variant or a length")
    p.add_argument("--screen", action="store_true",
                   help="train and score the snapshots (with --validation) but never predict the test scans: a "
                        "screen of variants; rerun without it, with the chosen --methods, for the test table")
    p.add_argument("--device", choices=["cpu", "cuda", "mps"], default=None,
                   help="training and inference device (default cuda if available, else cpu)")
    p.add_argument("--init-epochs", type=_positive_int, default=None, help="epochs of the supervised init model")
    p.add_argument("--epochs", type=_positive_int, default=None, help="epochs of every method after the init")
    p.add_argument("--iterations-per-epoch", type=_positive_int, default=None, help="optimizer steps per epoch")
    p.add_argument("--val-iterations", type=_positive_int, default=None, help="validation batches per epoch")
    p.add_argument("--rampup", type=_positive_int, default=None, help="consistency ramp-up length in steps")
    p.add_argument("--init-lr", type=_positive_float, default=None,
                   help="learning rate of the supervised init model (default the trainer's 1e-4; DeepMedic's own "
                        "default is 1e-3); the methods keep the paper's 1e-4")
    p.add_argument("--start-epochs", type=_positive_int, default=None, metavar="E",
                   help="a converged start: after the init model, E more epochs of the supervised trainer at its own "
                        "lr (1e-4); every method then starts from that model (default: from the init model)")
    p.add_argument("--training-seed", type=_non_negative_int, default=None, metavar="S",
                   help="seed of every training (weights, sampling, augmentation, noise; nnUNet_mt_seed, default the "
                        "trainers' 0); exact replays need nnUNet_n_proc_DA=0")
    p.add_argument("--snapshot-every", type=_positive_int, default=None, metavar="K",
                   help="write weight snapshots every K epochs (fold_0/snapshots/), for the diagnostics' curves; "
                        "results do not depend on it")
    p.add_argument("--unlabeled-truth", type=Path, default=None, metavar="DIR",
                   help="true masks of the unannotated scans (CASE<file_ending>), e.g. the synthetic generator's "
                        "<raw>_truth/DatasetXXX_Name/labelsUnlabeled: the report then gives the pseudo-labels' "
                        "Dice against them (diagnostics only; no trainer reads them)")
    p.add_argument("--diagnostic-cases", type=_positive_int, default=None, metavar="K",
                   help="score the snapshots (--snapshot-every) on the first K validation scans (with --validation), "
                        "else test scans, only (default all)")
    p.add_argument("--volume-cases", type=_positive_int, default=None, metavar="K",
                   help="with --unlabeled-truth: follow every snapshot's predicted / true volume, precision and recall "
                        "on the first K unannotated scans (default none)")
    p.add_argument("--trainer-suffix", default="", help="appended to every trainer name (e.g. _tiny for tests)")
    p.add_argument("--num-processes", type=_non_negative_int, default=None,
                   help="processes for preprocessing, prediction and evaluation, and nnU-Net's worker pools in "
                        "training (nnUNet_def_n_proc; default $nnUNet_def_n_proc or 8); "
                        "0: nnUNetv2_predict runs sequentially without worker processes (-npp 0 -nps 0), the "
                        "other steps use 1")
    p.add_argument("--predict-processes", type=_non_negative_int, default=None, metavar="N",
                   help="nnUNetv2_predict's -npp / -nps for the test predictions (default: 0, sequential, on machines "
                        "of up to 4 cores, where it is faster; else --num-processes)")
    p.add_argument("--results", type=Path, default=None, metavar="DIR",
                   help="also copy the run's small result files (tables, per-case metrics, statistics, manifest, "
                        "screening) to DIR, e.g. results/<run name>/ of a repository")
    p.add_argument("--disable-tta", action="store_true", help="no test-time mirroring (nnUNetv2_predict --disable_tta)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    started = time.time()
    try:
        args.counts = sorted(set(args.counts))
        check_methods(args.methods)
        source = source_of(args)
        check_inputs(source, args.counts, args.methods, args.shared_test, args.validation)
        if args.screen and not args.validation:
            raise ReproduceError("--screen scores the snapshots on a validation set: give --validation N")
        if args.device is None:
            import torch
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        if args.num_processes is None:
            args.num_processes = int(os.environ.get("nnUNet_def_n_proc", 8))
        args.workdir = args.workdir.resolve()
        check_trainers(args.methods, args.trainer_suffix)
        check_truth(source, args.unlabeled_truth)
        lock = WorkdirLock(args.workdir)  # held to the end of main
        repro = Reproduction(args, source)
        repro.prepare()
        print(f"source {source.folder}: pool of {len(source.pool)} annotated scans, {len(source.unlabeled)} "
              f"unannotated; counts {args.counts}; methods {', '.join(args.methods)}; work folder {args.workdir}",
              flush=True)
        results = [repro.run_count(n) for n in args.counts]
    except ReproduceError as e:
        sys.exit(f"nnunet_mt_reproduce: error: {e}")
    except subprocess.CalledProcessError as e:
        sys.exit(f"nnunet_mt_reproduce: error: {' '.join(map(str, e.cmd))} failed with exit code {e.returncode} "
                 f"(its output is above); run the same command again to continue from the finished stages")

    from nnunet_mt.evaluation.report import write_report

    report_dir = args.workdir / "report"
    if args.screen:  # no test predictions: the diagnostics are the whole report
        report_dir.mkdir(parents=True, exist_ok=True)
        screening = report_dir / "screening.md"
        screening.write_text(f"# Screening on {source.folder.name}\n\n" + repro.notes(started) + "\n")
        print("\n" + "\n".join(repro.diagnostics_md))
    else:
        reference = "MeanTeacher" if "MeanTeacher" in args.methods else args.methods[-1]
        announce_replaced_report(report_dir, args.methods, args.counts)
        write_report(report_dir, results, args.methods, reference_method=reference,
                     title=f"Semi-supervised lesion segmentation (Cui et al. 2019) on {source.folder.name}",
                     notes=repro.notes(started))
        table = report_dir / "table_dice.md"
        if table.exists():
            print("\n" + table.read_text())
    if args.results is not None:
        copied = export_results(args.workdir, args.results)
        print(f"result files copied to {args.results}: {', '.join(copied)}")
    print("wall time per stage this run (s): " + (", ".join(f"{k} {v:.0f}" for k, v in repro.run_timings.items())
                                                  or "none (everything was finished)"))
    print(f"total {time.time() - started:.0f} s; report: {report_dir / 'report.md'}", flush=True)
    lock.release()


if __name__ == "__main__":
    main()

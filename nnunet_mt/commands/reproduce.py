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

1. **Split** (the data stage, :mod:`nnunet_mt.runner.data`). One permutation of the sorted pool, drawn
   with ``numpy.random.default_rng(seed)``; the first n cases train, all others are the test set (as in
   the paper). The draws are nested: the 10 training scans are among the 20. With ``--shared-test N`` the
   first N cases of the permutation are the test set of every count and the n training cases follow them
   (still nested), so the counts' columns of the table are measured on the same scans and compare.
   Recorded in ``WORKDIR/splits.json`` and ``manifest.json``.
2. **Data** (the data stage). A derived dataset ``WORKDIR/nnUNet_raw/Dataset{500+i}_{Name}_n{n}`` whose
   ``imagesTr`` / ``labelsTr`` are symbolic links to the n training cases' files and ``imagesUnlabeled``
   links to the source's unannotated scans; ``nnUNetv2_plan_and_preprocess`` and
   ``nnunet_mt_preprocess_unlabeled`` on it. Fold 0 trains on all n cases; nnU-Net needs a validation
   set, so fold 0 "validates" on the first (sorted) *training* case: nnU-Net's validation Dice
   (``fold_0/validation``, progress.png's pseudo-Dice) is a training Dice here. The test scans are never
   seen in training.
3. **A fair start** (the training stage, :mod:`nnunet_mt.runner.training`). One supervised *init* model
   is trained first (``--init-epochs`` epochs), then *every* method, the supervised baseline included, is
   trained from it (``-pretrained_weights init/fold_0/checkpoint_final.pth``) with the same budget
   (``--epochs`` x ``--iterations-per-epoch``). The methods thus differ only in how they use the
   unannotated scans: the mean teacher needs a supervised start (Sec. 2.2: the teacher is initialised
   with the supervised network, and its pseudo-lesion sampling uses that network's predictions), and the
   baseline gets the same number of extra steps. The init model gets its own nnU-Net output folder
   without a new trainer class: the runner copies the plans ``nnUNetPlans.json`` to
   ``nnUNetPlans_init.json`` with ``plans_name`` ``nnUNetPlans_init`` and trains it with ``-p
   nnUNetPlans_init``; nnU-Net names the output folder ``<trainer>__<plans_name>__<configuration>``, and
   the configuration's ``data_identifier`` (``nnUNetPlans_3d_fullres``) is unchanged, so the preprocessed
   data and ``nnUNetPlans_3d_fullres_unlabeled`` are shared.
4. **Test** (the prediction stage, :mod:`nnunet_mt.runner.prediction`). ``nnUNetv2_predict`` of the test
   scans with each method, ``nnUNetv2_evaluate_folder`` (nnU-Net's ``summary.json`` in each prediction
   folder) and this package's metrics.
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
import os
import subprocess
import sys
import time
from pathlib import Path

from nnunet_mt.runner.arguments import non_negative_int, positive_float, positive_int, source_of, source_parser
from nnunet_mt.runner.layout import WorkdirLock
from nnunet_mt.runner.methods import DEFAULT_METHODS, METHODS, check_methods, check_trainers
from nnunet_mt.runner.reproduction import Reproduction
from nnunet_mt.runner.results import announce_replaced_report, export_results
from nnunet_mt.runner.source_dataset import ReproduceError
from nnunet_mt.runner.splits import check_inputs, check_truth
from nnunet_mt.runner.start_model import check_start_options


def build_parser() -> argparse.ArgumentParser:
    p = source_parser("nnunet_mt_reproduce", __doc__)
    p.add_argument("--counts", type=positive_int, nargs="+", default=[10, 20, 30],
                   help="numbers of annotated training scans (default 10 20 30)")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                   help=f"methods to compare (default {' '.join(DEFAULT_METHODS)}; all: {' '.join(METHODS)})")
    p.add_argument("--seed", type=int, default=0, help="seed of the training/test draw (default 0)")
    p.add_argument("--shared-test", type=positive_int, default=None, metavar="N",
                   help="test every count on the same N annotated scans, drawn once from the pool; the counts' "
                        "training scans are drawn, nested, from the rest (default: the paper's, each count tests "
                        "on all annotated scans it does not train on)")
    p.add_argument("--validation", type=positive_int, default=None, metavar="N",
                   help="a validation set of N annotated scans, neither training nor test (drawn from the end of the "
                        "permutation, so a shared-test draw's training scans stay the same): the snapshots are "
                        "scored on it instead of the test scans, for choosing a variant or a length")
    p.add_argument("--screen", action="store_true",
                   help="train and score the snapshots (with --validation) but never predict the test scans: a "
                        "screen of variants; rerun without it, with the chosen --methods, for the test table")
    p.add_argument("--device", choices=["cpu", "cuda", "mps"], default=None,
                   help="training and inference device (default cuda if available, else cpu)")
    p.add_argument("--init-epochs", type=positive_int, default=None, help="epochs of the supervised init model")
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs of every method after the init")
    p.add_argument("--iterations-per-epoch", type=positive_int, default=None, help="optimizer steps per epoch")
    p.add_argument("--val-iterations", type=positive_int, default=None, help="validation batches per epoch")
    p.add_argument("--rampup", type=positive_int, default=None, help="consistency ramp-up length in steps")
    p.add_argument("--init-lr", type=positive_float, default=None,
                   help="learning rate of the supervised init model (default the trainer's 1e-4; DeepMedic's own "
                        "default is 1e-3); the methods keep the paper's 1e-4")
    p.add_argument("--start-epochs", type=positive_int, default=None, metavar="E",
                   help="a converged start: after the init model, E more epochs of the supervised trainer at its own "
                        "lr (1e-4); every method then starts from that model (default: from the init model)")
    p.add_argument("--start-model", type=Path, default=None, metavar="CHECKPOINT",
                   help="a supervised DeepMedic checkpoint (e.g. nnUNetTrainerDeepMedic's checkpoint_final.pth, or a "
                        "file with its network_weights) every method starts from, instead of training the init "
                        "(and --start-epochs) model; checked against the dataset and recorded by sha256")
    p.add_argument("--training-seed", type=non_negative_int, default=None, metavar="S",
                   help="seed of every training (weights, sampling, augmentation, noise; nnUNet_mt_seed, default the "
                        "trainers' 0); exact replays need nnUNet_n_proc_DA=0")
    p.add_argument("--snapshot-every", type=positive_int, default=None, metavar="K",
                   help="write weight snapshots every K epochs (fold_0/snapshots/), for the diagnostics' curves; "
                        "results do not depend on it")
    p.add_argument("--unlabeled-truth", type=Path, default=None, metavar="DIR",
                   help="true masks of the unannotated scans (CASE<file_ending>), e.g. the synthetic generator's "
                        "<raw>_truth/DatasetXXX_Name/labelsUnlabeled: the report then gives the pseudo-labels' "
                        "Dice against them (diagnostics only; no trainer reads them)")
    p.add_argument("--diagnostic-cases", type=positive_int, default=None, metavar="K",
                   help="score the snapshots (--snapshot-every) on the first K validation scans (with --validation), "
                        "else test scans, only (default all)")
    p.add_argument("--volume-cases", type=positive_int, default=None, metavar="K",
                   help="with --unlabeled-truth: follow every snapshot's predicted / true volume, precision and recall "
                        "on the first K unannotated scans (default none)")
    p.add_argument("--trainer-suffix", default="", help="appended to every trainer name (e.g. _tiny for tests)")
    p.add_argument("--num-processes", type=non_negative_int, default=None,
                   help="processes for preprocessing, prediction and evaluation, and nnU-Net's worker pools in "
                        "training (nnUNet_def_n_proc; default $nnUNet_def_n_proc or 8); "
                        "0: nnUNetv2_predict runs sequentially without worker processes (-npp 0 -nps 0), the "
                        "other steps use 1")
    p.add_argument("--predict-processes", type=non_negative_int, default=None, metavar="N",
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
        if args.start_model is not None:
            args.start_model = args.start_model.resolve()
            check_start_options(args, source)
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

"""Synthetic acute ischemic stroke DWI cohort written as an nnU-Net v2 raw dataset.

The cohort imitates the data of Cui et al. 2019 (Sec. 3.1): 246 DWI scans of acute ischemic stroke
patients, 3T, b = 1000 s/mm^2 plus a b0 image, 0.96 x 0.96 x 6.5 mm, 240 x 240 x 21 voxels, 50 of them
annotated (20 train / 30 test) and 196 unannotated.  It is used as demo, test and benchmark data for
``nnunet_mt``.

How a subject is made (every step is one small function in :mod:`nnunet_mt.dataset_conversion.synthetic`:
``params``, ``anatomy``, ``lesions`` and confounders, ``acquisition``, ``subject``, ``writer``):

1. *Parameters first.*  Every random quantity of a subject is drawn up front from its own generator
   ``np.random.default_rng([seed, subject_index, role])`` into a :class:`SubjectParams` dataclass
   (:func:`draw_subject_params`).  Rendering is a deterministic function of these parameters (noise
   fields use seeds stored in them), so a subject can be replayed and the files do not depend on the
   number of worker processes.
2. *Anatomy.*  The MNI152 2009a GM / WM probability maps and brain mask bundled with nilearn (no
   download) give tissue fractions; CSF = brain - GM - WM.  The template is resampled through a small
   random affine (rotation, scaling, translation) into the subject grid on a fine grid (thin
   sub-slices) and then averaged over each 6.5 mm slab, which gives thick-slice partial volume.
3. *Contrast.*  b0 is T2-like (CSF bright, GM > WM).  DWI follows ``S = S0 * exp(-b * ADC)`` with
   per-tissue ADC.  Partial-volume voxels mix the tissue signals linearly (signals, not ADCs, add).
4. *Acute lesions* (labelled): 1-3 irregular blobs (or a shower of small embolic ones) in GM/WM of a
   vascular territory, ADC reduced by 15-55 %, b0 slightly raised.  Label = slab fraction >= 0.5.
5. *Confounders* (never labelled, present in some subjects only): T2 shine-through (old infarcts,
   white-matter hyperintensities: bright on b0 *and* DWI, ADC normal/high), susceptibility
   drop-out / pile-up near the skull base, N/2 ghost, smooth bias field, gain, Rician noise with some
   low-SNR subjects.
6. *Skull stripping*, as in the paper: outside the subject's brain mask both channels are exactly 0,
   inside every voxel is > 0. With ``background="noisy"`` (``--background noisy``) nothing is stripped
   and the Rician noise covers the whole field of view, as in raw DWI.

Array conventions: numpy arrays of images are indexed ``(z, y, x)`` (SimpleITK order); ``shape`` and
``spacing`` arguments are given in ``(x, y, z)`` order like SimpleITK.  The subject frame is LPS (ITK
convention, identity direction): array x increases to the patient's left, y to posterior, z to
superior.  MNI coordinates are RAS millimetres.  Volumes are in mL, lengths in mm, ADC in mm^2/s.

This module is the public entry point (console script ``nnunet_mt_synthetic``): it builds the dataset from
the subpackage's pieces and re-exports their names, so ``synthetic_stroke_dwi.<name>`` keeps working.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Sequence

from nnunet_mt.dataset_conversion.staging import remove_stale_temporaries, temporary_sibling
from nnunet_mt.dataset_conversion.synthetic.params import (BlobParams, CASE_PREFIX, CHANNEL_NAMES, DATASET_NAME,
                                                           DEFAULT_DATASET_ID, FILE_ENDING, GENERATOR_VERSION, LABELS,
                                                           PAPER_REFERENCE, ROLE_NAMES, ROLE_TEST, ROLE_TRAIN,
                                                           ROLE_UNLABELED, RenderedSubject, SubjectParams,
                                                           SusceptibilityParams, case_identifier)
from nnunet_mt.dataset_conversion.synthetic.anatomy import (Grid, TissueTemplate, _set_template, fine_grid,
                                                            linear_resize, load_tissue_template, mni_to_subject_index,
                                                            render_tissue_fractions, sample_template, slab_average,
                                                            subject_index_to_mni, tissue_signals)
from nnunet_mt.dataset_conversion.synthetic.lesions import (BlobRender, add_slab_averaged, blob_signal_change,
                                                            draw_acute_lesions, draw_confounders,
                                                            draw_total_lesion_volume, label_from_fine, render_blob)
from nnunet_mt.dataset_conversion.synthetic.acquisition import (BACKGROUNDS, B_VALUE, add_nyquist_ghost,
                                                                add_rician_noise, bias_field, draw_susceptibility,
                                                                skull_strip, susceptibility_field, texture_field)
from nnunet_mt.dataset_conversion.synthetic.subject import draw_subject_params, render_subject
from nnunet_mt.dataset_conversion.synthetic.writer import (CaseJob, _check_target, _role_folders, dataset_folder_name,
                                                           generate_case, unlabeled_truth_folder, write_montage,
                                                           write_nifti)

__all__ = [
    "BlobParams", "CASE_PREFIX", "CHANNEL_NAMES", "DATASET_NAME", "DEFAULT_DATASET_ID", "FILE_ENDING",
    "GENERATOR_VERSION", "LABELS", "PAPER_REFERENCE", "ROLE_NAMES", "ROLE_TEST", "ROLE_TRAIN", "ROLE_UNLABELED",
    "RenderedSubject", "SubjectParams", "SusceptibilityParams", "case_identifier", "Grid", "TissueTemplate",
    "fine_grid", "linear_resize", "load_tissue_template", "mni_to_subject_index", "render_tissue_fractions",
    "sample_template", "slab_average", "subject_index_to_mni", "tissue_signals", "BlobRender",
    "add_slab_averaged", "blob_signal_change", "draw_acute_lesions", "draw_confounders",
    "draw_total_lesion_volume", "label_from_fine", "render_blob", "BACKGROUNDS", "B_VALUE", "add_nyquist_ghost",
    "add_rician_noise", "bias_field", "draw_susceptibility", "skull_strip", "susceptibility_field",
    "texture_field", "draw_subject_params", "render_subject", "CaseJob", "dataset_folder_name", "generate_case",
    "unlabeled_truth_folder", "write_montage", "write_nifti", "generate_synthetic_stroke_dwi", "main",
]


# generate_case is looked up in this module's namespace, so patching synthetic_stroke_dwi.generate_case (as the
# tests do) takes effect here.
def _init_worker(template, parent_pid: int) -> None:
    """Worker initializer: the parent's template, and death with the parent (no orphans after a kill)."""
    from nnunet_mt.training.workers import exit_with_parent

    exit_with_parent(parent_pid)
    _set_template(template)


def _run_jobs(jobs: list[CaseJob], num_workers: int, log_every: int) -> list[dict]:
    """Run case jobs serially or in a spawn-based process pool, printing one progress line per
    ``log_every`` cases.  Results are sorted by role, then index (independent of completion order)."""
    results = []
    start = time.time()

    def progress(done: int) -> None:
        if done % log_every == 0 or done == len(jobs):
            el = time.time() - start
            print(f"[synthetic_stroke_dwi] {done}/{len(jobs)} subjects, {el:.1f} s "
                  f"({el / max(done, 1):.2f} s/subject)", flush=True)

    if num_workers <= 1:
        for job in jobs:
            results.append(generate_case(job))
            progress(len(results))
    else:
        # spawn: safe even when the caller holds threads (torch, BLAS); the template is shipped to the
        # workers once so they need not import nilearn.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=num_workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(load_tissue_template(), os.getpid())) as pool:
            for fut in as_completed([pool.submit(generate_case, job) for job in jobs]):
                results.append(fut.result())
                progress(len(results))
    order = {n: i for i, n in ROLE_NAMES.items()}
    return sorted(results, key=lambda r: (order[r["role"]], r["case_id"]))


def generate_synthetic_stroke_dwi(raw_root: str | Path, dataset_id: int = DEFAULT_DATASET_ID, num_train: int = 20,
                                  num_test: int = 30, num_unlabeled: int = 196,
                                  shape: tuple[int, int, int] = (240, 240, 21),
                                  spacing: tuple[float, float, float] = (0.96, 0.96, 6.5), seed: int = 0,
                                  num_workers: int = 1, montage: bool = True, overwrite: bool = False,
                                  background: str = "skull-stripped") -> Path:
    """Write the synthetic stroke DWI cohort as ``raw_root/Dataset{id:03d}_SyntheticStrokeDWI``.

    shape: voxels (x, y, z); spacing: mm (x, y, z).  Defaults mirror the paper: 20 annotated training
    + 30 annotated test + 196 unannotated scans of 240 x 240 x 21 at 0.96 x 0.96 x 6.5 mm.
    Files: imagesTr/labelsTr, imagesTs/labelsTs, imagesUnlabeled (lesions but no labels),
    dataset.json, synthetic_cases.json (per-case parameters and lesion volumes) and montage.png.
    The unannotated scans' true masks go to ``unlabeled_truth_folder(raw_root, dataset_id)``, outside
    ``raw_root`` (for diagnostics such as the quality of pseudo-labels; replaced with the dataset).
    background: ``"skull-stripped"`` (the paper's inputs) or ``"noisy"`` (unstripped, Rician-noise
    background; see ``render_subject``).
    The dataset is built in a hidden temporary sibling folder and renamed into place at the end, so an
    interrupted run leaves no partial dataset; a later run removes the temporary folders of killed runs (their
    writer process is gone) and says so.  Returns the dataset folder.
    """
    if not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"dataset_id must be in 1..999, got {dataset_id}")
    if min(num_train, num_test, num_unlabeled) < 0 or num_train + num_test + num_unlabeled == 0:
        raise ValueError("case counts must be >= 0 and not all zero")
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or min(shape) < 1 or len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"shape and spacing need 3 positive values (x, y, z), got {shape}, {spacing}")
    if int(seed) < 0:
        raise ValueError("seed must be >= 0")
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    raw_root = Path(raw_root).expanduser().resolve()
    truth = unlabeled_truth_folder(raw_root, dataset_id)
    # a killed run's staging folders (their writer process is gone); first, since a restored backup is a target
    remove_stale_temporaries(raw_root)
    remove_stale_temporaries(truth.parent, targets=[truth.name])
    target = _check_target(raw_root, int(dataset_id), overwrite)
    raw_root.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(target, "tmp")
    truth_tmp = temporary_sibling(truth, "tmp")
    try:
        truth_tmp.mkdir(parents=True)
        for role in (ROLE_TRAIN, ROLE_TEST, ROLE_UNLABELED):
            for folder in _role_folders(role):
                if folder is not None:
                    (tmp / folder).mkdir(parents=True, exist_ok=True)
        jobs = [CaseJob(dataset_dir=str(tmp), seed=int(seed), subject_index=i, role=role, shape=shape,
                        spacing=spacing, background=background, truth_dir=str(truth_tmp))
                for role, n in ((ROLE_TRAIN, num_train), (ROLE_TEST, num_test), (ROLE_UNLABELED, num_unlabeled))
                for i in range(1, n + 1)]
        print(f"[synthetic_stroke_dwi] writing {len(jobs)} subjects ({num_train} train, {num_test} test, "
              f"{num_unlabeled} unlabeled), shape {shape}, spacing {spacing}, seed {seed} -> {target}",
              flush=True)
        load_tissue_template()
        summaries = _run_jobs(jobs, max(1, int(num_workers)), log_every=max(1, min(10, len(jobs) // 10 or 1)))
        generator_args = {"module": __name__, "version": GENERATOR_VERSION, "seed": int(seed),
                          "dataset_id": int(dataset_id), "num_train": int(num_train), "num_test": int(num_test),
                          "num_unlabeled": int(num_unlabeled), "shape_xyz": list(shape),
                          "spacing_xyz_mm": list(spacing), "background": background, "b_value": B_VALUE,
                          "rng": "numpy.random.default_rng([seed, subject_index, role]), role 0 train / "
                                 "1 test / 2 unlabeled, subject_index 1-based",
                          "anatomy": "MNI152 2009a GM/WM/brain mask bundled with nilearn",
                          "unlabeled_folder": "imagesUnlabeled", "unlabeled_truth": str(truth)}
        from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

        generate_dataset_json(
            str(tmp), channel_names=dict(CHANNEL_NAMES), labels=dict(LABELS), num_training_cases=int(num_train),
            file_ending=FILE_ENDING, dataset_name=target.name, reference=PAPER_REFERENCE,
            description=("Synthetic acute ischemic stroke DWI (b=1000 s/mm2) + b0, "
                         + ("skull-stripped" if background == "skull-stripped" else
                            "not skull-stripped (Rician-noise background)") + ", imitating "
                         "Cui et al. 2019 (240x240x21, 0.96x0.96x6.5 mm). Anatomy from MNI152 with random "
                         "affine; acute lesions (reduced ADC) in vascular territories are labelled; T2 "
                         "shine-through, susceptibility, N/2 ghost, bias field and Rician noise are not. "
                         "imagesUnlabeled holds unannotated scans (with lesions), imagesTs/labelsTs the "
                         "annotated test scans."),
            license="Synthetic data; anatomy from the MNI ICBM152 2009a template (see nilearn)",
            converted_by="nnunet_mt.dataset_conversion.synthetic_stroke_dwi",
            numTest=int(num_test), numUnlabeled=int(num_unlabeled), synthetic_generator=generator_args)
        with open(tmp / "synthetic_cases.json", "w") as f:
            json.dump({"synthetic_generator": generator_args, "cases": summaries}, f, indent=1)
        if montage:
            write_montage(tmp, tmp / "montage.png")
        old = None
        if target.exists():  # overwrite=True (checked above): swap, then delete the old one
            old = temporary_sibling(target, "old")
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if truth.exists():
            shutil.rmtree(truth)
        truth_tmp.rename(truth)
    finally:
        for folder in (tmp, truth_tmp):
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
    print(f"[synthetic_stroke_dwi] done: {target}; true masks of the unannotated scans (for diagnostics "
          f"only): {truth}", flush=True)
    return target


def main(argv: Sequence[str] | None = None) -> None:
    """CLI (console script ``nnunet_mt_synthetic``)."""
    parser = argparse.ArgumentParser(
        prog="nnunet_mt_synthetic",
        description="Write the synthetic acute-stroke DWI cohort (DWI b=1000 + b0) as an nnU-Net v2 raw dataset.")
    parser.add_argument("-d", "--dataset-id", type=int, default=DEFAULT_DATASET_ID,
                        help=f"nnU-Net dataset id (default {DEFAULT_DATASET_ID})")
    parser.add_argument("--num-train", type=int, default=20, help="annotated training scans (imagesTr)")
    parser.add_argument("--num-test", type=int, default=30, help="annotated test scans (imagesTs/labelsTs)")
    parser.add_argument("--num-unlabeled", type=int, default=196, help="unannotated scans (imagesUnlabeled)")
    parser.add_argument("--shape", type=int, nargs=3, default=(240, 240, 21), metavar=("X", "Y", "Z"),
                        help="voxels (default 240 240 21)")
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.96, 0.96, 6.5), metavar=("X", "Y", "Z"),
                        help="mm (default 0.96 0.96 6.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--background", choices=BACKGROUNDS, default="skull-stripped",
                        help="skull-stripped (default; zero outside the brain, the paper's inputs) or noisy "
                             "(unstripped: Rician noise over the whole field of view, as raw DWI)")
    parser.add_argument("--num-workers", type=int, default=1, help="worker processes")
    parser.add_argument("--no-montage", action="store_true", help="skip montage.png")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    parser.add_argument("--raw-root", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    args = parser.parse_args(argv)
    raw_root = args.raw_root or os.environ.get("nnUNet_raw")
    if not raw_root:
        parser.error("no output folder: pass --raw-root or set the environment variable nnUNet_raw")
    try:
        generate_synthetic_stroke_dwi(raw_root, dataset_id=args.dataset_id, num_train=args.num_train,
                                      num_test=args.num_test, num_unlabeled=args.num_unlabeled,
                                      shape=tuple(args.shape), spacing=tuple(args.spacing), seed=args.seed,
                                      num_workers=args.num_workers, montage=not args.no_montage,
                                      overwrite=args.overwrite, background=args.background)
    except (FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()

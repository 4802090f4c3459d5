"""Seconds per optimizer step of supervised DeepMedic, the mean teacher, DeepMedic-EN and DeepMedic-UDA, in one run.

Both trainers' own ``train_step`` run on the same random batches of the paper's segments (8 annotated
patches of 54x69x69 voxels, 2 channels, plus 8 unannotated for the semi-supervised trainers), so the figures
measure the optimisation step itself, not data loading. Each trainer runs in its own subprocess so its
peak memory is its own (peak resident memory on CPU, peak allocated GPU memory on CUDA).

usage: python benchmarks/step_time.py [--device cpu|cuda] [--steps 5] [--warmup 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DATASET = "Dataset999_Bench"
PATCH = (54, 69, 69)
SPACING = [6.5, 0.96, 0.96]


def _plans() -> dict:
    config = {"data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
              "batch_size": 2, "patch_size": [21, 200, 160], "median_image_size_in_voxels": [21, 200, 160],
              "spacing": SPACING, "normalization_schemes": ["ZScoreNormalization"] * 2,
              "use_mask_for_norm": [True, True], "batch_dice": False,
              "architecture": {"network_class_name": "unused", "arch_kwargs": {}, "_kw_requires_import": []}}
    return {"dataset_name": DATASET, "plans_name": "nnUNetPlans", "transpose_forward": [0, 1, 2],
            "transpose_backward": [0, 1, 2], "image_reader_writer": "SimpleITKIO", "label_manager": "LabelManager",
            "original_median_spacing_after_transp": SPACING, "original_median_shape_after_transp": [21, 200, 160],
            "configurations": {"3d_fullres": config}, "foreground_intensity_properties_per_channel": {}}


def _prepare_folders(root: Path) -> None:
    pre = root / "preprocessed" / DATASET
    (pre / "nnUNetPlans_3d_fullres").mkdir(parents=True)
    (pre / "nnUNetPlans_3d_fullres" / "placeholder.b2nd").touch()  # lets nnU-Net infer its dataset class
    (pre / "dataset_fingerprint.json").write_text(json.dumps({"shapes_after_crop": [[21, 200, 160]],
                                                              "spacings": [SPACING]}))
    (root / "results").mkdir()


def measure(trainer_name: str, device: str, steps: int, warmup: int) -> dict:
    """Runs inside the subprocess: build the trainer, time ``train_step``."""
    import itertools
    import resource
    import time

    import torch

    from nnunet_mt.trainers.nnUNetTrainerDeepMedic import nnUNetTrainerDeepMedic
    from nnunet_mt.trainers.nnUNetTrainerDeepMedicEN import nnUNetTrainerDeepMedicEN
    from nnunet_mt.trainers.nnUNetTrainerDeepMedicUDA import nnUNetTrainerDeepMedicUDA
    from nnunet_mt.trainers.nnUNetTrainerMeanTeacher import nnUNetTrainerMeanTeacher
    from nnunet_mt.training.mean_teacher import make_teacher

    cls = {"DeepMedic": nnUNetTrainerDeepMedic, "MeanTeacher": nnUNetTrainerMeanTeacher,
           "DeepMedic-EN": nnUNetTrainerDeepMedicEN, "DeepMedic-UDA": nnUNetTrainerDeepMedicUDA}[trainer_name]
    dataset_json = {"channel_names": {"0": "DWI", "1": "b0"}, "labels": {"background": 0, "lesion": 1},
                    "numTraining": 1, "file_ending": ".nii.gz"}
    plans = _plans()
    plans["continue_training"] = False
    trainer = cls(plans, "3d_fullres", 0, dataset_json, torch.device(device))
    trainer.initialize()
    g = torch.Generator().manual_seed(0)
    batch = {"data": torch.randn(8, 2, *PATCH, generator=g),
             "target": torch.randint(0, 2, (8, 1, *PATCH), generator=g).to(torch.int16)}
    if trainer_name == "MeanTeacher":
        trainer.teacher = make_teacher(trainer.plain_network()).to(trainer.device)
    if trainer_name != "DeepMedic":
        trainer.dataloader_unlabeled = itertools.repeat({"data": torch.randn(8, 2, *PATCH, generator=g)})
    trainer.network.train()
    for _ in range(warmup):
        trainer.train_step(batch)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batch)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    patches = 8 if trainer_name == "DeepMedic" else 16
    return {"trainer": trainer_name, "seconds_per_step": seconds, "patches_per_second": patches / seconds,
            "peak_memory_mib": peak, "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.device, args.steps, args.warmup)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _prepare_folders(root)
        env = dict(os.environ, nnUNet_raw=str(root), nnUNet_preprocessed=str(root / "preprocessed"),
                   nnUNet_results=str(root / "results"), nnUNet_compile="false")
        rows = []
        for name in ("DeepMedic", "MeanTeacher", "DeepMedic-EN", "DeepMedic-UDA"):
            out = subprocess.run([sys.executable, __file__, "--child", name, "--device", args.device,
                                  "--steps", str(args.steps), "--warmup", str(args.warmup)],
                                 env=env, capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"device {args.device}, {rows[0]['threads']} threads, {args.steps} timed steps after {args.warmup} warm-up")
    print(f"{'trainer':<14} {'s/step':>8} {'patches/s':>10} {'peak MiB':>9} {'x supervised':>13}")
    for r in rows:
        print(f"{r['trainer']:<14} {r['seconds_per_step']:8.3f} {r['patches_per_second']:10.2f} "
              f"{r['peak_memory_mib']:9.0f} {r['seconds_per_step'] / rows[0]['seconds_per_step']:13.2f}")


if __name__ == "__main__":
    main()

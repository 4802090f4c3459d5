"""Seconds per optimizer step of supervised DeepMedic, the mean teacher, DeepMedic-EN and DeepMedic-UDA, in one run.

Both trainers' own ``train_step`` run on the same random batches of the paper's segments (8 annotated
patches of 54x69x69 voxels, 2 channels, plus 8 unannotated for the semi-supervised trainers), so the figures
measure the optimisation step itself, not data loading. Each trainer runs in its own subprocess so its
peak memory is its own (peak resident memory on CPU, peak allocated GPU memory on CUDA).

Each step's work is counted, not assumed: forward hooks add up the FLOPs of every 3-D convolution the
step runs (student, teacher, adversaries), three times for those whose output receives a gradient
(forward + backward of inputs and weights), once for the rest. ``efficiency`` is that count over the
step time and the fp32 matmul peak measured in the same process; ``x work`` is the step's FLOPs over the
supervised step's, to compare with ``x supervised`` (its time).

Then (unless ``--real-iterations 0``) a real ``nnUNetv2_train`` of the supervised DeepMedic and of the
mean teacher on a small synthetic cohort (4 annotated + 2 unannotated scans of 240 x 240 x 21), with
nnU-Net's augmentation workers on the same cores: seconds per iteration from the second epoch's
"Epoch time" (train iterations + one validation batch), to compare with the pure step.

usage: python benchmarks/speed/step_time.py [--device cpu|cuda] [--steps 5] [--warmup 1] [--real-iterations 10]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import matmul_peak  # benchmarks/speed/machine.py: this folder is the script's sys.path[0]

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
    from nnunet_mt.utils.allocator import reuse_freed_memory
    reuse_freed_memory()  # what the trainers' on_train_start does
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
    flops = _count_step_flops(trainer, batch)
    peak_gflops = matmul_peak()
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
            "peak_memory_mib": peak, "threads": torch.get_num_threads(), "gflop_per_step": flops / 1e9,
            "matmul_peak_gflops": peak_gflops, "efficiency": flops / seconds / (peak_gflops * 1e9)}


def _count_step_flops(trainer, batch) -> int:
    """FLOPs of one ``train_step``: every Conv3d forward it runs, x3 where the output gets a gradient."""
    import math

    import torch

    total = [0]

    def hook(module, inputs, output):
        fwd = 2 * module.in_channels * module.out_channels // module.groups * math.prod(module.kernel_size) \
            * output[0, 0].numel() * output.shape[0]
        total[0] += 3 * fwd if output.requires_grad else fwd

    handles = [m.register_forward_hook(hook) for m in torch.nn.Module.modules(trainer.network)
               if isinstance(m, torch.nn.Conv3d)]
    for name in ("teacher", "adversary"):
        module = getattr(trainer, name, None)
        if isinstance(module, torch.nn.Module):
            handles += [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, torch.nn.Conv3d)]
    try:
        trainer.train_step(batch)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def real_iterations(root: Path, env: dict, iterations: int) -> dict:
    """Seconds per iteration of real nnUNetv2_train runs (second epoch), DeepMedic then the mean teacher."""
    import re

    from nnunet_mt.dataset_conversion.synthetic_stroke_dwi import generate_synthetic_stroke_dwi
    from nnunet_mt.utils.ext_trainer import ext_trainer_value

    env = dict(env, nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "pre"),
               nnUNet_results=str(root / "res"), nnUNet_extTrainer=ext_trainer_value(None),
               nnUNet_mt_epochs="2", nnUNet_mt_iterations_per_epoch=str(iterations), nnUNet_mt_val_iterations="1")
    generate_synthetic_stroke_dwi(root / "raw", dataset_id=821, num_train=4, num_test=0, num_unlabeled=2,
                                  montage=False)

    def run(*cmd):
        with open(root / "log.txt", "a") as log:
            if subprocess.run(list(cmd), env=env, stdout=log, stderr=subprocess.STDOUT).returncode:
                raise SystemExit(f"{' '.join(cmd)} failed:\n" + (root / "log.txt").read_text()[-3000:])

    run("nnUNetv2_plan_and_preprocess", "-d", "821", "-c", "3d_fullres", "-npfp", "1", "-np", "1")
    run("nnunet_mt_preprocess_unlabeled", "-d", "821", "-c", "3d_fullres")
    # fold 0 trains on 3 scans and validates on 1 (nnU-Net's 5-fold split needs 5 scans)
    cases = sorted(p.name[:-len(".pkl")] for p in (root / "pre" / "Dataset821_SyntheticStrokeDWI" /
                                                   "nnUNetPlans_3d_fullres").glob("*.pkl"))
    (root / "pre" / "Dataset821_SyntheticStrokeDWI" / "splits_final.json").write_text(
        json.dumps([{"train": cases[:-1], "val": cases[-1:]}]))
    out = {}
    for label, trainer, extra in (("DeepMedic", "nnUNetTrainerDeepMedic", []),
                                  ("MeanTeacher", "nnUNetTrainerMeanTeacher", ["-pretrained_weights", str(
                                      root / "res" / "Dataset821_SyntheticStrokeDWI" /
                                      "nnUNetTrainerDeepMedic__nnUNetPlans__3d_fullres" / "fold_0" /
                                      "checkpoint_final.pth")])):
        run("nnUNetv2_train", "821", "3d_fullres", "0", "-tr", trainer, "-device", "cpu", *extra)
        folder = root / "res" / "Dataset821_SyntheticStrokeDWI" / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0"
        log = "".join(p.read_text() for p in sorted(folder.glob("training_log_*.txt")))
        epoch_times = [float(t) for t in re.findall(r"Epoch time: ([0-9.]+) s", log)]
        out[label] = epoch_times[-1] / iterations
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--real-iterations", type=int, default=10,
                   help="iterations per epoch of the real nnUNetv2_train runs (0: skip them)")
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
        print(json.dumps(rows), flush=True)  # the pure steps, before the (slower) real runs
        real = {}
        if args.real_iterations > 0 and args.device == "cpu":
            (root / "real").mkdir()
            real = real_iterations(root / "real", env, args.real_iterations)
    print(f"device {args.device}, {rows[0]['threads']} threads, {args.steps} timed steps after {args.warmup} warm-up")
    print("| trainer | s/step | patches/s | peak MiB | GFLOP/step | matmul peak GFLOP/s | efficiency | "
          "x supervised | x work | real nnUNetv2_train s/iteration |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = rows[0]
    for r in rows:
        it = f"{real[r['trainer']]:.2f}" if r["trainer"] in real else "-"
        print(f"| {r['trainer']} | {r['seconds_per_step']:.3f} | {r['patches_per_second']:.2f} | "
              f"{r['peak_memory_mib']:.0f} | {r['gflop_per_step']:.0f} | {r['matmul_peak_gflops']:.0f} | "
              f"{100 * r['efficiency']:.0f} % | {r['seconds_per_step'] / base['seconds_per_step']:.2f} | "
              f"{r['gflop_per_step'] / base['gflop_per_step']:.2f} | {it} |")


if __name__ == "__main__":
    main()

"""Inference speed of DeepMedic against nnU-Net's own U-Net, from one run on the same cases.

Prints, for synthetic stroke DWI in the paper's geometry (240 x 240 x 21 at 0.96 x 0.96 x 6.5 mm, two
channels) with a skull-stripped (zero) and with an unstripped (Rician-noise) background, and for one
BraTS-sized skull-stripped volume (240 x 240 x 155 at 1 mm):

* seconds per case end to end through ``nnUNetv2_predict`` (process start, preprocessing, network,
  export; total wall time / cases, nnU-Net's default worker counts): our DeepMedic, and nnU-Net's
  default ``3d_fullres`` U-Net (``nnUNetTrainer``) with ``--disable_tta`` and with its default mirroring;
  again for DeepMedic and the U-Net without mirroring with ``-npp 0 -nps 0`` (no worker processes: on 2
  cores the 6 spawned workers of the default cost more than they overlap); peak resident memory of the
  largest process;
* the DeepMedic network alone on one preprocessed case, padded into the inference window exactly as
  nnU-Net's predictor pads it (``DenseDeepMedic.forward_window``), its FLOP count
  (``dense_inference.block_flops`` of the outputs it computes), the fp32 matmul peak measured in the
  same process (2048^2 ``torch.mm``) and the efficiency FLOPs / time / peak; beside it the plain
  PyTorch ``forward_valid`` (unfused, NCDHW) of the same outputs;
* the mean teacher's pseudo-lesion pass per unannotated scan (the trainer's own predictor and
  ``predict_pseudo_lesions``) on the noisy-background scans;
* nnU-Net's floor for each model folder (``benchmarks/speed/predict_breakdown.py --zero-network``): what
  ``nnUNetv2_predict -npp 0 -nps 0`` costs on the same cases with a network that returns zeros at no cost
  (imports, the trainer search, the Gaussian tile weight over the window, preprocessing, the float16
  accumulation, export). With the forward at the matmul peak added, it bounds DeepMedic's s/case from
  below for any implementation doing the direct convolutions' multiplications.

Checkpoints are freshly initialised networks (``initialize()`` + ``save_checkpoint``): timing does not
depend on the weights. Everything lives under ``--workdir`` (nnU-Net folders included) and is reused by
a rerun (datasets, preprocessing, checkpoints); the timings are always measured anew.

usage: python benchmarks/speed/inference.py [--workdir DIR] [--cases 5] [--no-unet] [--no-brats] [--no-tta]
                                     [--no-sequential | --only-sequential]
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

from machine import matmul_peak  # benchmarks/speed/machine.py: this folder is the script's sys.path[0]

DATASETS = {  # id: (name, generator arguments)
    811: ("stripped", dict(shape=(240, 240, 21), spacing=(0.96, 0.96, 6.5), background="skull-stripped")),
    812: ("noisy", dict(shape=(240, 240, 21), spacing=(0.96, 0.96, 6.5), background="noisy")),
    813: ("brats", dict(shape=(240, 240, 155), spacing=(1.0, 1.0, 1.0), background="skull-stripped")),
}
DEEPMEDIC, UNET = "nnUNetTrainerDeepMedic", "nnUNetTrainer"


SEQ_DEEPMEDIC = "DeepMedic -npp 0 -nps 0"
SEQ_UNET = "U-Net --disable_tta -npp 0 -nps 0"


def _env(workdir: Path) -> dict:
    from nnunet_mt.utils.ext_trainer import ext_trainer_value

    env = dict(os.environ)
    env.update(nnUNet_raw=str(workdir / "raw"), nnUNet_preprocessed=str(workdir / "preprocessed"),
               nnUNet_results=str(workdir / "results"), nnUNet_extTrainer=ext_trainer_value(None),
               nnUNet_compile="false")
    return env


def _run(cmd: list[str], env: dict, log: Path) -> tuple[float, float]:
    """Run ``cmd``; returns (wall seconds, peak RSS in GB of its largest process)."""
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)")
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], env=env, stdout=out, stderr=subprocess.PIPE,
                              text=True)
    wall = time.perf_counter() - start
    lines = proc.stderr.strip().splitlines()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}\n" + "\n".join(lines[-20:]))
    return wall, int(lines[-1]) / 1024 ** 2


def prepare(workdir: Path, dataset_id: int, cases: int, env: dict) -> None:
    """Synthetic dataset (2 training scans, ``cases`` test scans, 2 unannotated), planned and preprocessed."""
    from nnunet_mt.dataset_conversion.synthetic_stroke_dwi import dataset_folder_name, generate_synthetic_stroke_dwi

    name = dataset_folder_name(dataset_id)
    if not (workdir / "raw" / name).is_dir():
        kind, kwargs = DATASETS[dataset_id]
        generate_synthetic_stroke_dwi(workdir / "raw", dataset_id=dataset_id, num_train=2, num_test=cases,
                                      num_unlabeled=2 if kind == "noisy" else 0, montage=False, **kwargs)
    if not (workdir / "preprocessed" / name / "nnUNetPlans.json").is_file():
        _run(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", "3d_fullres", "-npfp", "1", "-np", "1"], env,
             workdir / f"plan_{dataset_id}.log")
    if DATASETS[dataset_id][0] == "noisy" and not (workdir / "preprocessed" / name /
                                                   "nnUNetPlans_3d_fullres_unlabeled").is_dir():
        _run(["nnunet_mt_preprocess_unlabeled", "-d", str(dataset_id), "-c", "3d_fullres"], env,
             workdir / f"unlabeled_{dataset_id}.log")


def checkpoint(workdir: Path, dataset_id: int, trainer_name: str) -> Path:
    """A freshly initialised model folder for ``trainer_name`` (fold 0, checkpoint_final.pth)."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from nnunet_mt.dataset_conversion.synthetic_stroke_dwi import dataset_folder_name
    from nnunet_mt.trainers.nnUNetTrainerDeepMedic import nnUNetTrainerDeepMedic

    name = dataset_folder_name(dataset_id)
    pre = workdir / "preprocessed" / name
    model = workdir / "results" / name / f"{trainer_name}__nnUNetPlans__3d_fullres"
    if (model / "fold_0" / "checkpoint_final.pth").is_file():
        return model
    import nnunetv2

    cls = nnUNetTrainerDeepMedic if trainer_name == DEEPMEDIC else recursive_find_python_class(
        str(Path(nnunetv2.__file__).parent / "training" / "nnUNetTrainer"), trainer_name,
        "nnunetv2.training.nnUNetTrainer")
    dataset_json = load_json(str(pre / "dataset.json"))
    plans = load_json(str(pre / "nnUNetPlans.json"))
    plans["continue_training"] = False  # nnU-Net 2.8.1's trainer pops this entry
    trainer = cls(plans, "3d_fullres", 0, dataset_json, torch.device("cpu"))
    trainer.initialize()
    # what on_train_start would decide: the mirroring axes the checkpoint gives nnUNetv2_predict (None for DeepMedic)
    trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    (model / "fold_0").mkdir(parents=True, exist_ok=True)
    save_json(trainer.plans_manager.plans, str(model / "plans.json"), sort_keys=False)
    save_json(dataset_json, str(model / "dataset.json"), sort_keys=False)
    shutil.copy(pre / "dataset_fingerprint.json", model / "dataset_fingerprint.json")
    trainer.save_checkpoint(str(model / "fold_0" / "checkpoint_final.pth"))
    return model


def predict(workdir: Path, dataset_id: int, trainer: str, cases: int, env: dict, tta: bool = True,
            sequential: bool = False) -> dict:
    """``nnUNetv2_predict`` of the test scans: nnU-Net's default worker pools (3 preprocessing + 3 export
    processes, spawned), or ``sequential`` (``-npp 0 -nps 0``: everything in the one process)."""
    from nnunet_mt.dataset_conversion.synthetic_stroke_dwi import dataset_folder_name

    out = workdir / "pred" / f"{dataset_id}_{trainer}_{'tta' if tta else 'notta'}{'_seq' if sequential else ''}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["nnUNetv2_predict", "-i", str(workdir / "raw" / dataset_folder_name(dataset_id) / "imagesTs"),
           "-o", str(out), "-d", str(dataset_id), "-c", "3d_fullres", "-f", "0", "-tr", trainer,
           "-chk", "checkpoint_final.pth", "-device", "cpu"] + ([] if tta else ["--disable_tta"]) \
        + (["-npp", "0", "-nps", "0"] if sequential else [])
    wall, rss = _run(cmd, env, workdir / f"predict_{out.name}.log")
    written = len(list(out.glob("*.nii.gz")))
    if written != cases:
        raise SystemExit(f"{trainer} wrote {written} of {cases} predictions in {out}")
    return {"s_per_case": wall / cases, "wall_s": wall, "peak_rss_gb": rss}


def floor(workdir: Path, dataset_id: int, trainer: str, env: dict) -> dict:
    """nnU-Net's own cost for ``trainer``'s model folder on the test scans: ``predict_breakdown.py
    --zero-network`` (the predictor of ``nnUNetv2_predict -npp 0 -nps 0`` around a network costing nothing)."""
    from nnunet_mt.dataset_conversion.synthetic_stroke_dwi import dataset_folder_name

    name = dataset_folder_name(dataset_id)
    out = workdir / "pred" / f"{dataset_id}_{trainer}_floor"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = [sys.executable, str(Path(__file__).parent / "predict_breakdown.py"),
           str(workdir / "results" / name / f"{trainer}__nnUNetPlans__3d_fullres"),
           str(workdir / "raw" / name / "imagesTs"), str(out), "--zero-network", "--disable-tta"]
    log = workdir / f"floor_{dataset_id}_{trainer}.log"
    with open(log, "w") as f:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=f, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r["process_s"] = r["import_s"] + r["init_s"]
    r["total_s_per_case"] = (r["process_s"] + r["predict_s"]) / r["cases"]
    # a case after the first: no Gaussian to compute (nnU-Net caches it for the call)
    later = r["sliding_window_s"][1:]
    r["later_case_s"] = sum(later) / len(later) + r["mean_outside_sliding_window_s"] if later else None
    return r


def forward_alone(workdir: Path, dataset_id: int, plain: bool, tile_voxels: int | None = None) -> dict:
    """The DeepMedic network on the first test case, as nnU-Net's predictor passes it (``tile_voxels``:
    its ``dense_tile_voxels`` instead of the default)."""
    import torch
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_mt.architectures.dense_inference import block_flops
    from nnunet_mt.dataset_conversion.synthetic_stroke_dwi import dataset_folder_name
    from nnunet_mt.trainers.nnUNetTrainerDeepMedic import nnUNetTrainerDeepMedic

    name = dataset_folder_name(dataset_id)
    model = workdir / "results" / name / f"{DEEPMEDIC}__nnUNetPlans__3d_fullres"
    pm = PlansManager(load_json(str(model / "plans.json")))
    cm = pm.get_configuration("3d_fullres")
    dataset_json = load_json(str(model / "dataset.json"))
    files = sorted(str(p) for p in (workdir / "raw" / name / "imagesTs").glob("*_000[01].nii.gz"))[:2]
    data, _, _ = DefaultPreprocessor(verbose=False).run_case(files, None, pm, cm, dataset_json)
    net = nnUNetTrainerDeepMedic.build_network_architecture(pm, cm, data.shape[0], 2, False)
    net.load_state_dict(torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                                   weights_only=False)["network_weights"])
    net.eval()
    if tile_voxels is not None:
        net.dense_tile_voxels = int(tile_voxels)
    x = pad_nd_image(torch.from_numpy(data), cm.patch_size, "constant", {"value": 0}, False, None)[None]
    lo, hi = net.window_outputs(x)
    size = [h - l for l, h in zip(lo, hi)]
    flops = block_flops(net, size)
    peak = matmul_peak()
    with torch.no_grad():
        start = time.perf_counter()
        net(x)
        seconds = time.perf_counter() - start
    result = {"case_shape": list(data.shape[1:]), "window": list(cm.patch_size), "outputs_computed": size,
              "tile_voxels": net.dense_tile_voxels,
              "tflop": flops / 1e12, "forward_s": seconds, "matmul_peak_gflops": peak,
              "efficiency": flops / seconds / (peak * 1e9), "peak_at_forward_s": flops / (peak * 1e9)}
    if plain:  # the same outputs with the plain valid forward (unfused, NCDHW), one pass
        padded = torch.nn.functional.pad(x, [w for p in reversed(
            [net._pad_widths(n, n // 2) for n in x.shape[2:]]) for w in p])
        offsets = [net._pad_widths(n, n // 2)[0] - net.margin for n in x.shape[2:]]
        f = net.subsample_factor
        o_lo = [(l + o) // f * f for l, o in zip(lo, offsets)]
        o_hi = [-(-(h + o) // f) * f for h, o in zip(hi, offsets)]
        block = padded[(slice(None), slice(None), *[slice(a, b + 2 * net.margin) for a, b in zip(o_lo, o_hi)])]
        with torch.no_grad():
            start = time.perf_counter()
            net.forward_valid(block)
            result["plain_forward_valid_s"] = time.perf_counter() - start
    return result


def pseudo_lesion_pass(workdir: Path, dataset_id: int) -> dict:
    """The mean teacher's pass over the preprocessed unannotated scans, as the trainer runs it."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_mt.dataset_conversion.synthetic_stroke_dwi import dataset_folder_name
    from nnunet_mt.trainers.nnUNetTrainerDeepMedic import nnUNetTrainerDeepMedic
    from nnunet_mt.training.pseudo_lesions import predict_pseudo_lesions

    name = dataset_folder_name(dataset_id)
    model = workdir / "results" / name / f"{DEEPMEDIC}__nnUNetPlans__3d_fullres"
    pm = PlansManager(load_json(str(model / "plans.json")))
    cm = pm.get_configuration("3d_fullres")
    folder = workdir / "preprocessed" / name / "nnUNetPlans_3d_fullres_unlabeled"
    dataset = infer_dataset_class(str(folder))(str(folder))
    net = nnUNetTrainerDeepMedic.build_network_architecture(pm, cm, 2, 2, False)
    net.load_state_dict(torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                                   weights_only=False)["network_weights"])
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                allow_tqdm=False)
    predictor.manual_initialization(net, pm, cm, None, load_json(str(model / "dataset.json")), DEEPMEDIC, None)
    start = time.perf_counter()
    predict_pseudo_lesions(lambda x: predictor.predict_sliding_window_return_logits(x).float(), dataset,
                           log=lambda *a: None)
    n = len(dataset.identifiers)
    return {"scans": n, "s_per_scan": (time.perf_counter() - start) / n}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("inference_benchmark"))
    parser.add_argument("--cases", type=int, default=5, help="test scans per dataset (default 5)")
    parser.add_argument("--no-unet", action="store_true", help="skip nnU-Net's U-Net")
    parser.add_argument("--no-tta", action="store_true", help="skip the U-Net with mirroring (the slowest part)")
    parser.add_argument("--no-brats", action="store_true", help="skip the BraTS-sized volume")
    parser.add_argument("--no-sequential", action="store_true",
                        help="skip the runs with -npp 0 -nps 0 (no worker processes; the fastest on 2 cores)")
    parser.add_argument("--only-sequential", action="store_true",
                        help="skip the runs with nnU-Net's default worker counts")
    args = parser.parse_args(argv)
    if args.no_sequential and args.only_sequential:
        parser.error("--no-sequential and --only-sequential exclude each other")
    workdir = args.workdir.resolve()
    env = _env(workdir)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results",
                                           "nnUNet_extTrainer")})
    import torch

    torch.set_num_threads(os.cpu_count() or 1)  # as nnUNetv2_predict -device cpu does
    results = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    ids = [811, 812] + ([] if args.no_brats else [813])
    for dataset_id in ids:
        kind = DATASETS[dataset_id][0]
        cases = 1 if kind == "brats" else args.cases
        print(f"== {kind}: preparing", flush=True)
        prepare(workdir, dataset_id, cases, env)
        trainers = [DEEPMEDIC] + ([] if args.no_unet or kind == "brats" else [UNET])
        for trainer in trainers:
            checkpoint(workdir, dataset_id, trainer)
        r = {}
        if not args.only_sequential:
            r["DeepMedic"] = predict(workdir, dataset_id, DEEPMEDIC, cases, env)
            print(f"   DeepMedic nnUNetv2_predict: {r['DeepMedic']['s_per_case']:.1f} s/case", flush=True)
        if not args.no_sequential:
            r[SEQ_DEEPMEDIC] = predict(workdir, dataset_id, DEEPMEDIC, cases, env, sequential=True)
            print(f"   {SEQ_DEEPMEDIC}: {r[SEQ_DEEPMEDIC]['s_per_case']:.1f} s/case", flush=True)
        if UNET in trainers:
            if not args.only_sequential:
                r["U-Net --disable_tta"] = predict(workdir, dataset_id, UNET, cases, env, tta=False)
                print(f"   U-Net --disable_tta: {r['U-Net --disable_tta']['s_per_case']:.1f} s/case", flush=True)
            if not args.no_sequential:
                r[SEQ_UNET] = predict(workdir, dataset_id, UNET, cases, env, tta=False, sequential=True)
                print(f"   {SEQ_UNET}: {r[SEQ_UNET]['s_per_case']:.1f} s/case", flush=True)
            if not args.no_tta:
                r["U-Net (mirroring)"] = predict(workdir, dataset_id, UNET, cases, env, tta=True)
                print(f"   U-Net (mirroring): {r['U-Net (mirroring)']['s_per_case']:.1f} s/case", flush=True)
        r["floor"] = {t: floor(workdir, dataset_id, t, env) for t in trainers}
        print("   nnU-Net's floor (network costing nothing): " + ", ".join(
            f"{t} {f['total_s_per_case']:.1f} s/case" for t, f in r["floor"].items()), flush=True)
        r["forward"] = forward_alone(workdir, dataset_id, plain=kind != "brats")
        if kind == "noisy":
            r["pseudo_lesions"] = pseudo_lesion_pass(workdir, dataset_id)
        results[kind] = r
        (workdir / "inference_benchmark.json").write_text(json.dumps(results, indent=1))
    print_report(results)


def print_report(results: dict) -> None:
    print(f"\ntorch {results['torch']}, {results['threads']} CPU threads; s/case = nnUNetv2_predict wall time / "
          f"cases (process start, preprocessing, network, export)\n")
    print("| scans | command | s/case | peak RSS | vs DeepMedic |")
    print("|---|---|---|---|---|")
    for kind in ("stripped", "noisy", "brats"):
        if kind not in results:
            continue
        r = results[kind]
        base = (r["DeepMedic"] if "DeepMedic" in r else r[SEQ_DEEPMEDIC])["s_per_case"]
        for label in ("DeepMedic", SEQ_DEEPMEDIC, "U-Net --disable_tta", SEQ_UNET, "U-Net (mirroring)"):
            if label in r:
                print(f"| {kind} | {label} | {r[label]['s_per_case']:.1f} | {r[label]['peak_rss_gb']:.2f} GB | "
                      f"{r[label]['s_per_case'] / base:.2f}x |")
    print("\n| scans | case (z, y, x) | window | outputs computed | TFLOP | forward | at matmul peak | peak "
          "GFLOP/s | efficiency | plain forward_valid |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind in ("stripped", "noisy", "brats"):
        if kind in results:
            f = results[kind]["forward"]
            plain = f"{f['plain_forward_valid_s']:.1f} s" if "plain_forward_valid_s" in f else "-"
            print(f"| {kind} | {f['case_shape']} | {f['window']} | {f['outputs_computed']} | {f['tflop']:.3f} | "
                  f"{f['forward_s']:.1f} s | {f['peak_at_forward_s']:.1f} s | {f['matmul_peak_gflops']:.0f} | "
                  f"{100 * f['efficiency']:.0f} % | {plain} |")
    print("\nnnU-Net's floor: nnUNetv2_predict -npp 0 -nps 0's predictor with a network that returns zeros "
          "(benchmarks/speed/predict_breakdown.py --zero-network), and DeepMedic's bound: the floor plus the forward at the "
          "matmul peak\n")
    print("| scans | model folder | window | imports | trainer search + checkpoint | first case (incl. Gaussian) | "
          "later case | floor s/case | + forward at peak | peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind in ("stripped", "noisy", "brats"):
        if kind not in results or "floor" not in results[kind]:
            continue
        for trainer, f in results[kind]["floor"].items():
            later = f"{f['later_case_s']:.2f} s" if f["later_case_s"] is not None else "-"
            bound = (f"{f['total_s_per_case'] + results[kind]['forward']['peak_at_forward_s']:.1f} s"
                     if trainer == DEEPMEDIC else "-")
            print(f"| {kind} | {trainer} | {'x'.join(map(str, f['window']))} | {f['import_s']:.1f} s | "
                  f"{f['init_s']:.1f} s | {f['first_case_sliding_window_s'] + f['mean_outside_sliding_window_s']:.1f} s | "
                  f"{later} | {f['total_s_per_case']:.2f} | {bound} | {f['peak_rss_gb']:.2f} GB |")
    if "noisy" in results and "pseudo_lesions" in results["noisy"]:
        p = results["noisy"]["pseudo_lesions"]
        print(f"\npseudo-lesion pass (noisy background): {p['s_per_scan']:.1f} s per unannotated scan "
              f"({p['scans']} scans)")


if __name__ == "__main__":
    main()

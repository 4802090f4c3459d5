"""The measurements behind two single changes, each A/B in one run on the same inputs.

* **Memory reuse** (``nnunet_mt/utils/allocator.py``): each measurement runs in a fresh subprocess with
  ``nnUNet_mt_reuse_memory=1`` and ``=0``, alternating, ``--repeats`` times. It prints seconds, page
  faults (minor faults x 4 KiB) and the subprocess's peak RSS for:
  - a DeepMedic forward + backward in train mode on 8 and on 16 segments of 54 x 69 x 69 (the
    supervised and the mean teacher's student batch);
  - with ``--workdir`` of ``benchmarks/speed/inference.py``, the dense forward of its first noisy-background
    case (``forward_alone``, as there).
* **The dense tile size** (``DenseDeepMedic.dense_tile_voxels``), with ``--workdir``: the dense forward
  of the first case of each of the inference benchmark's datasets (skull-stripped, noisy, BraTS size) in
  a fresh subprocess per tile size, seconds and the subprocess's peak RSS (``--tiles``, default 1e6,
  4e5 and 2e5 output voxels; memory reuse on).
* **The classifier's GEMM**: the 1^3 head's last layer (250 -> 2 channels) over the 1.2 M voxels of a
  240 x 240 x 21 case, in chunks of 2048 rows: ``addmm`` with the transposed weight (before) against
  ``F.linear`` (now).

usage: python benchmarks/speed/micro.py [--workdir INFERENCE_WORKDIR] [--repeats 2] [--tiles N [N ...]]
                                 [--only-tiles]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PATCH = (54, 69, 69)


def _child(kind: str, workdir: str | None) -> dict:
    """Runs in the subprocess: the allocator setting comes from the environment."""
    import resource

    import torch

    from nnunet_mt.utils.allocator import reuse_freed_memory

    applied = reuse_freed_memory()
    torch.set_num_threads(os.cpu_count() or 1)
    if workdir is not None:  # the dense-forward kinds reuse benchmarks/speed/inference.py's forward_alone
        sys.path.insert(0, str(Path(__file__).parent))
        import inference
    if kind.startswith("tile"):  # tile:DATASET:VOXELS, time and peak RSS only
        _, dataset_id, voxels = kind.split(":")
        r = inference.forward_alone(Path(workdir), int(dataset_id), plain=False, tile_voxels=int(voxels))
        return {"applied": applied, "seconds": r["forward_s"],
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}
    if kind == "forward":
        inference.forward_alone(Path(workdir), 812, plain=False)  # warm-up (and page-in of the weights)
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        seconds = inference.forward_alone(Path(workdir), 812, plain=False)["forward_s"]
    else:
        from nnunet_mt.architectures.deepmedic import DeepMedic

        net = DeepMedic(2, 2).train()
        x = torch.randn(int(kind), 2, *PATCH)

        def step():
            net.zero_grad(set_to_none=True)
            net(x).float().mean().backward()

        step()
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        for _ in range(2):
            step()
        seconds = (time.perf_counter() - start) / 2
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    if kind != "forward":
        faults /= 2
    return {"applied": applied, "seconds": seconds, "fault_gib": faults * 4096 / 2 ** 30,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def _measure(kind: str, reuse: bool, workdir: Path | None) -> dict:
    env = dict(os.environ, nnUNet_mt_reuse_memory="1" if reuse else "0")
    cmd = [sys.executable, __file__, "--child", kind] + (["--workdir", str(workdir)] if workdir else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def classifier_gemm(rows: int = 2048, repeats: int = 3) -> dict:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    voxels = 21 * 240 * 240
    h = torch.randn(rows, 250)
    w = torch.randn(2, 250)
    b = torch.randn(2)
    w_t = w.t().contiguous()
    chunks = -(-voxels // rows)
    results = {}
    for _ in range(repeats):
        for name, fn in (("addmm(b, h, W^T)", lambda: torch.addmm(b, h, w_t)), ("F.linear(h, W, b)",
                                                                                 lambda: F.linear(h, w, b))):
            fn()
            start = time.perf_counter()
            for _ in range(chunks):
                fn()
            results.setdefault(name, []).append(time.perf_counter() - start)
    return results


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", type=Path, default=None, help="benchmarks/speed/inference.py's work folder (prepared)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--tiles", type=int, nargs="+", default=[1_000_000, 400_000, 200_000],
                   help="dense_tile_voxels to compare (with --workdir)")
    p.add_argument("--only-tiles", action="store_true", help="only the tile-size comparison")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, str(args.workdir) if args.workdir else None)))
        return
    if args.only_tiles and not args.workdir:
        p.error("--only-tiles needs --workdir")
    if args.workdir:
        from nnunet_mt.dataset_conversion.synthetic_stroke_dwi import dataset_folder_name

        print("| dense forward, first case of | dense_tile_voxels | s | peak RSS |")
        print("|---|---|---|---|")
        for dataset_id, label in ((811, "skull-stripped 240 x 240 x 21"), (812, "noisy 240 x 240 x 21"),
                                  (813, "BraTS size")):
            if not (args.workdir / "results" / dataset_folder_name(dataset_id)).is_dir():
                continue  # not prepared (inference.py --no-brats)
            for _ in range(args.repeats):
                for voxels in args.tiles:
                    r = _measure(f"tile:{dataset_id}:{voxels}", True, args.workdir)
                    print(f"| {label} | {voxels} | {r['seconds']:.2f} | {r['peak_rss_gb']:.2f} GB |", flush=True)
        print()
        if args.only_tiles:
            return
    kinds = ["8", "16"] + (["forward"] if args.workdir else [])
    labels = {"8": "forward + backward, 8 segments", "16": "forward + backward, 16 segments",
              "forward": "dense forward, noisy 240 x 240 x 21 case"}
    print("| measurement | memory reuse | s | page faults | peak RSS |")
    print("|---|---|---|---|---|")
    for kind in kinds:
        for _ in range(args.repeats):
            for reuse in (True, False):
                r = _measure(kind, reuse, args.workdir)
                print(f"| {labels[kind]} | {'on' if r['applied'] else 'off'} | {r['seconds']:.2f} | "
                      f"{r['fault_gib']:.1f} GiB | {r['peak_rss_gb']:.2f} GB |", flush=True)
    print("\nclassifier 250 -> 2 over 21 x 240 x 240 voxels in chunks of 2048 rows (s, each repeat):")
    for name, times in classifier_gemm().items():
        print(f"  {name}: {', '.join(f'{t:.3f}' for t in times)}")


if __name__ == "__main__":
    main()

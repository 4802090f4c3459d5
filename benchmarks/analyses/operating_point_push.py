"""Each consistency's push at the operating point where training starts: step 0 of each mean-teacher trainer,
with student and teacher as they run in training.

``over_segmentation.py``'s step-0 push takes a consistency's gradient at ``s = t``: student and teacher equal,
no noise, no dropout. In training they are not: the student runs with DeepMedic's dropout and Eq. 5's noise
eta, the teacher with its own noise eta' (and dropout, unless ``teacher_dropout`` is off), and both normalise
over the 8 + 8 batch. This script builds each trainer in this process on a run's work folder, as
``nnUNetv2_train -pretrained_weights START`` does (start weights, teacher, pseudo-lesions, loaders), draws its
first ``--batches`` batches and, at the start weights (no optimizer step), takes the trainer's own ``Lc`` on
each and its gradient with respect to the student's logits. Every trainer sees the same batches and noise
(the annotated batches come from their own stream; the mean teachers share ``noise_seed``).

Per kind of unannotated patch (the loader's first half healthy tissue, its second half centred on
pseudo-lesions): the mean ``|s_fg - t_fg|``, the background voxels (``t_fg < 0.5``) that a descent step pushes
towards lesion, the lesion voxels (``t_fg >= 0.5``) it pushes towards background, and the push towards lesion
summed over those background voxels, times the trainer's weight ``w``. The push of a voxel is ``-(g_fg -
g_bg)``, the change of its foreground-minus-background logit per unit of descent.

usage: python benchmarks/analyses/operating_point_push.py WORKDIR --start START.pth [--n 10] [--batches 8]
       [--methods MeanTeacher MeanTeacher-deterministic-teacher ...] [--json OUT.json]

Run it as a command: nnU-Net reads its folders' variables when first imported, and this script sets them
to the work folder's before it imports nnU-Net.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

#: every consistency of the screen, and the paper's Eq. 1 with the teacher's dropout off for comparison
DEFAULT_METHODS = ("MeanTeacher", "MeanTeacher-deterministic-teacher", "MeanTeacher-released", "MeanTeacher-kl",
                   "MeanTeacher-kl-confident", "MeanTeacher-mse", "MeanTeacher-squared")


def logit_push(student_logits: torch.Tensor, teacher_logits: torch.Tensor, loss, weight: float = 1.0,
               **kwargs) -> torch.Tensor:
    """``-w (dLc/dz_fg - dLc/dz_bg)`` per voxel of a two-label output ``(B, 2, *spatial)``: positive where a
    descent step on ``w Lc = w loss(softmax(z_s), softmax(z_t))`` raises the student's foreground."""
    z = student_logits.detach().double().requires_grad_(True)
    lc = loss(torch.softmax(z, 1), torch.softmax(teacher_logits.detach().double(), 1), **kwargs)
    (grad,) = torch.autograd.grad(lc, z)
    return -weight * (grad[:, 1] - grad[:, 0])


def count(push: torch.Tensor, s_fg: torch.Tensor, t_fg: torch.Tensor) -> dict:
    """The figures of the module docstring for one group of patches (``(B, *spatial)`` each)."""
    up = (push > 0) & (t_fg < 0.5)
    return {"patches": int(push.shape[0]), "voxels": int(push.numel()), "mean_abs_gap": float((s_fg - t_fg).abs().mean()),
            "teacher_lesion": int((t_fg >= 0.5).sum()), "pushed_up": int(up.sum()),
            "pushed_down": int(((push < 0) & (t_fg >= 0.5)).sum()), "push_up_sum": float(push[up].sum())}


def step_push(trainer, batch: dict) -> dict[str, dict]:
    """One batch through ``trainer``'s own forward pieces (as its ``train_step``, without the update): the
    counts per kind of unannotated patch."""
    from nnunet_mt.trainers.semi_supervised import full_resolution
    from nnunet_mt.training.mean_teacher import CONSISTENCY_LOSSES, apply_input_noise, draw_input_noise

    t = trainer
    x_l, _, x_u = t._next_batches(batch)
    eta = draw_input_noise(x_u.shape, t.noise_additive_std, t.noise_multiplicative_std, generator=t.noise_generator)
    eta_t = draw_input_noise(x_u.shape, t.noise_additive_std, t.noise_multiplicative_std, generator=t.noise_generator)
    x_s, x_t = apply_input_noise(x_u, *eta).to(t.device), apply_input_noise(x_u, *eta_t).to(t.device)
    with torch.no_grad(), t._normalisation(t.network, len(x_l)):
        out = full_resolution(t.network(torch.cat([x_l, x_s])))
    target = full_resolution(t._consistency_target(x_l, x_t))
    out_c = out[-len(target):]
    push = logit_push(out_c, target, CONSISTENCY_LOSSES[t.consistency], t.consistency_scale, **t.consistency_kwargs)
    m = len(x_u)  # the unannotated patches are the last m of the batch, with or without the annotated half
    push, s_fg = push[-m:], torch.softmax(out_c[-m:].double(), 1)[:, 1]
    t_fg = torch.softmax(target[-m:].double(), 1)[:, 1]
    half = m // 2  # nnU-Net's loader centres the last half of the batch on the (pseudo-)lesions
    return {"healthy": count(push[:half], s_fg[:half], t_fg[:half]),
            "pseudo-lesion": count(push[half:], s_fg[half:], t_fg[half:])}


def merge(rows: list[dict]) -> dict:
    """Counts of several batches of one kind: sums, and the voxel-weighted mean gap."""
    out = {k: sum(r[k] for r in rows) for k in ("patches", "voxels", "teacher_lesion", "pushed_up", "pushed_down",
                                                 "push_up_sum")}
    out["mean_abs_gap"] = sum(r["mean_abs_gap"] * r["voxels"] for r in rows) / max(out["voxels"], 1)
    return out


def trainer_at_start(name: str, workdir: Path, n: int, start: Path):
    """Trainer ``name`` built in this process on count ``n``'s preprocessed dataset, started from ``start``
    as ``nnUNetv2_train -pretrained_weights`` starts it (results go to a temporary folder)."""
    from nnunetv2.run.run_training import maybe_load_checkpoint
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from nnunet_mt.utils.ext_trainer import trainers_dir

    preprocessed = sorted((workdir / "nnUNet_preprocessed").glob(f"Dataset*_n{n}"))
    if not preprocessed:
        raise SystemExit(f"{workdir / 'nnUNet_preprocessed'}: no dataset of count {n}")
    folder = preprocessed[0]
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    cls = recursive_find_python_class(trainers_dir(), name, "nnunet_mt.trainers")
    # nnU-Net 2.8.1's trainer pops this key, which get_trainer_from_args puts in
    trainer = cls(dict(plans, continue_training=False), "3d_fullres", 0, dataset_json, torch.device("cpu"))
    maybe_load_checkpoint(trainer, False, False, str(start))
    trainer.on_train_start()
    return trainer


def operating_point_push(workdir: Path, start: Path, methods: list[str], n: int = 10, batches: int = 8,
                         trainer_suffix: str = "") -> dict:
    """Per method: its trainer, weight and the counts over its first ``batches`` batches, by kind of patch
    (``trainer_suffix``: the runner's ``--trainer-suffix`` of the work folder's trainers)."""
    from nnunet_mt.runner.methods import METHODS
    from nnunet_mt.utils.pipeline import workdir_env

    saved = dict(os.environ)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update({**workdir_env(workdir), "nnUNet_results": tmp, "nnUNet_n_proc_DA": "0",
                           "nnUNet_compile": "false"})
        try:
            for method in methods:
                trainer = trainer_at_start(METHODS[method][0] + trainer_suffix, workdir, n, start)
                rows = [step_push(trainer, next(trainer.dataloader_train)) for _ in range(batches)]
                results[method] = {"trainer": type(trainer).__name__, "teacher_dropout": trainer.teacher_dropout,
                                   "weight": trainer.consistency_scale,
                                   **{kind: merge([r[kind] for r in rows]) for kind in ("healthy", "pseudo-lesion")}}
                trainer.on_train_end()
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return results


def markdown(results: dict) -> str:
    lines = ["| method | patches centred on | patches | mean \\|s - t\\| (foreground) | voxels the teacher calls "
             "lesion | background voxels pushed towards lesion | lesion voxels pushed towards background | push "
             "towards lesion summed over those background voxels (× w) |", "|---|---|---|---|---|---|---|---|"]
    for method, row in results.items():
        for kind in ("healthy", "pseudo-lesion"):
            o = row[kind]
            lines.append(f"| {method if kind == 'healthy' else ''} | {kind} | {o['patches']} | {o['mean_abs_gap']:.4f} | "
                         f"{o['teacher_lesion']} | {o['pushed_up']} | {o['pushed_down']} | {o['push_up_sum']:.3g} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workdir", type=Path, help="an nnunet_mt_reproduce work folder with the unannotated scans preprocessed")
    p.add_argument("--start", type=Path, required=True, help="the supervised model every method starts from")
    p.add_argument("--n", type=int, default=10, help="annotated count of the run (its derived dataset)")
    p.add_argument("--batches", type=int, default=8, help="batches per trainer")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    p.add_argument("--trainer-suffix", default="", help="the run's --trainer-suffix (e.g. _tiny)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    results = operating_point_push(args.workdir.resolve(), args.start.resolve(), args.methods, args.n, args.batches,
                                   args.trainer_suffix)
    print(markdown(results))
    if args.json is not None:
        args.json.write_text(json.dumps({"start": args.start.name, "batches": args.batches, "results": results},
                                        indent=1))


if __name__ == "__main__":
    main()

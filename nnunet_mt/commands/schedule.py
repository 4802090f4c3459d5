"""``nnunet_mt_schedule``: choose a training length from a validation curve, never from the test scans.

The runner's protocol (:mod:`nnunet_mt.commands.reproduce`) is: a supervised init model, then every method from it
with one budget. How long each stage must be to converge depends on the data and the learning rates, and
the paper does not say (12 h on a GTX 1080 Ti). This command measures it the way a user would, on the
*training* scans only:

1. The training scans of one count are drawn exactly as ``nnunet_mt_reproduce`` draws them (same
   ``--seed``, ``--shared-test``), so no scan of the runner's test set is ever used.
2. ``--holdout`` of them (a seeded draw) become a validation set; fold 0 of the schedule's own dataset
   trains on the others.
3. Stage A: the supervised init model from scratch (``--init-lr``, ``--init-epochs``); stage B: the
   supervised DeepMedic method from A's final weights at the trainers' lr 1e-4 (``--epochs``) — the
   runner's two stages, with weight snapshots every ``--snapshot-every`` epochs.
4. Every snapshot is scored on the held-out scans (whole-volume, through nnU-Net's predictor;
   :func:`nnunet_mt.evaluation.curves.snapshot_dice`). Written to ``WORKDIR/curve.json`` and
   ``WORKDIR/validation_curve.png``, and printed as a table, with the step where the curve comes within
   ``--tolerance`` of its best.

Everything goes under ``--workdir`` (its own nnU-Net folders; use another work folder than the
runner's). Interrupted? Run the same command again: finished trainings are skipped, an interrupted one
continues from its ``checkpoint_latest.pth``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from nnunet_mt.runner.arguments import positive_float, positive_int, source_of, source_parser
from nnunet_mt.runner.layout import INIT_PLANS, PLANS, WorkdirLock
from nnunet_mt.runner.methods import check_trainers
from nnunet_mt.runner.reproduction import Reproduction
from nnunet_mt.runner.source_dataset import ReproduceError
from nnunet_mt.runner.splits import check_inputs
from nnunet_mt.utils.atomic import write_json

SUPERVISED = "DeepMedic"


def holdout_split(train: list[str], holdout: int, seed: int) -> dict[str, list[str]]:
    """A seeded draw of ``holdout`` validation cases from ``train``; both lists sorted."""
    if not 1 <= holdout < len(train):
        raise ReproduceError(f"--holdout {holdout}: needs 1 <= holdout < {len(train)} (the count's training scans)")
    order = np.random.default_rng([seed, 1]).permutation(len(train))
    drawn = [sorted(train)[i] for i in order]
    return {"train": sorted(drawn[holdout:]), "val": sorted(drawn[:holdout])}


def plateau_step(steps: np.ndarray, means: np.ndarray, tolerance: float) -> int | None:
    """The first step whose mean Dice is within ``tolerance`` of the best mean (None: no finite value)."""
    finite = ~np.isnan(means)
    if not finite.any():
        return None
    best = np.nanmax(means)
    return int(steps[np.flatnonzero(finite & (means >= best - tolerance))[0]])


def write_curve_plot(curve: dict, path: Path):
    """The validation curve of every stage (mean ± std Dice against steps) to ``path``; returns the figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for stage in curve["stages"]:
        steps, means, stds = (np.array(stage[k], dtype=float) for k in ("steps", "mean_dice", "std_dice"))
        ax.errorbar(steps, means, yerr=stds, marker="o", ms=3, capsize=2,
                    label=f"{stage['name']} (lr {stage['lr']:g})")
    if curve.get("boundary_step") is not None:
        ax.axvline(curve["boundary_step"], color="grey", ls=":", lw=1)
    ax.set_xlabel("optimizer steps (batch of 8 annotated patches)")
    ax.set_ylabel(f"Dice on {len(curve['split']['val'])} held-out training scans")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Supervised DeepMedic: validation curve (training scans only)", fontsize=10)
    fig.tight_layout()
    fig.savefig(str(path))
    return fig


def build_parser() -> argparse.ArgumentParser:
    p = source_parser("nnunet_mt_schedule", __doc__)
    p.add_argument("--count", type=positive_int, required=True,
                   help="the runner's count whose training scans are used (e.g. 10)")
    p.add_argument("--seed", type=int, default=0, help="the runner's --seed (default 0)")
    p.add_argument("--shared-test", type=positive_int, default=None, metavar="N", help="the runner's --shared-test")
    p.add_argument("--holdout", type=positive_int, default=3, help="training scans held out for validation (default 3)")
    p.add_argument("--init-lr", type=positive_float, default=1e-3,
                   help="learning rate of stage A, the init model (default 1e-3, DeepMedic's)")
    p.add_argument("--init-epochs", type=positive_int, required=True, help="epochs of stage A")
    p.add_argument("--epochs", type=positive_int, required=True, help="epochs of stage B (lr 1e-4, the paper's)")
    p.add_argument("--iterations-per-epoch", type=positive_int, required=True, help="optimizer steps per epoch")
    p.add_argument("--val-iterations", type=positive_int, default=2,
                   help="nnU-Net's validation batches per epoch (its patch pseudo-Dice; default 2)")
    p.add_argument("--snapshot-every", type=positive_int, required=True, metavar="K", help="epochs between snapshots")
    p.add_argument("--tolerance", type=float, default=0.01, help="plateau: within this Dice of the best (default 0.01)")
    p.add_argument("--trainer-suffix", default="", help="appended to the trainer name (e.g. _tiny for tests)")
    p.add_argument("--device", choices=["cpu", "cuda", "mps"], default="cpu")
    p.add_argument("--num-processes", type=int, default=2, help="processes for preprocessing (default 2)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    started = time.time()
    try:
        source = source_of(args)
        check_inputs(source, [args.count], [SUPERVISED], args.shared_test)
        check_trainers([SUPERVISED], args.trainer_suffix)
        lock = WorkdirLock(args.workdir.resolve())  # held to the end of main
        runner_args = argparse.Namespace(
            workdir=args.workdir.resolve(), counts=[args.count], methods=[SUPERVISED], seed=args.seed,
            shared_test=args.shared_test, init_epochs=args.init_epochs, epochs=args.epochs,
            iterations_per_epoch=args.iterations_per_epoch, val_iterations=args.val_iterations, rampup=None,
            init_lr=args.init_lr, snapshot_every=args.snapshot_every, trainer_suffix=args.trainer_suffix,
            device=args.device, num_processes=args.num_processes, disable_tta=True)
        repro = Reproduction(runner_args, source)
        repro.final_validation = True  # fold 0 validates on the held-out scans: nnU-Net's summary is real
        n = args.count
        split = holdout_split(repro.splits[n]["train"], args.holdout, args.seed)
        record = {"count": n, "seed": args.seed, "shared_test": args.shared_test, "split": split,
                  "runner_test_set": repro.splits[n]["test"], "init_lr": args.init_lr,
                  "budget": repro.budget()}
        schedule_file = runner_args.workdir / "schedule.json"
        if schedule_file.exists():
            old = json.loads(schedule_file.read_text())
            if {k: old.get(k) for k in record} != record:
                raise ReproduceError(f"{runner_args.workdir} was used with other settings ({schedule_file}); use a "
                                     f"new --workdir")
        repro.prepare()
        write_json(schedule_file, record)
        print(f"validation curve: count {n}, training on {len(split['train'])} scans, validating on "
              f"{', '.join(split['val'])}; the runner's {len(repro.splits[n]['test'])} test scans are not used",
              flush=True)
        repro.build_raw(n)
        repro.preprocess(n)
        preprocessed = runner_args.workdir / "nnUNet_preprocessed" / repro.dataset(n)[1]
        write_json(preprocessed / "splits_final.json", [split])  # fold 0 = the schedule's split
        trainer = repro.trainer(SUPERVISED)
        repro.train(f"n{n}/train_init", n, trainer, INIT_PLANS, args.init_epochs, lr=args.init_lr)
        init_final = repro.model_dir(n, trainer, INIT_PLANS) / "fold_0" / "checkpoint_final.pth"
        repro.train(f"n{n}/train_{SUPERVISED}", n, trainer, PLANS, args.epochs, pretrained=init_final)
    except ReproduceError as e:
        sys.exit(f"nnunet_mt_schedule: error: {e}")
    except subprocess.CalledProcessError as e:
        sys.exit(f"nnunet_mt_schedule: error: {' '.join(map(str, e.cmd))} failed with exit code {e.returncode}; "
                 f"run the same command again to continue")
    curve = evaluate_curve(repro, n, trainer, split, args)
    curve["wall_time_s"] = dict(repro.timings)
    write_json(runner_args.workdir / "curve.json", curve)
    write_curve_plot(curve, runner_args.workdir / "validation_curve.png")
    print("\n" + curve_table(curve))
    print(f"curve: {runner_args.workdir / 'curve.json'}, plot: {runner_args.workdir / 'validation_curve.png'}; "
          f"total {time.time() - started:.0f} s", flush=True)
    lock.release()


def evaluate_curve(repro: Reproduction, n: int, trainer: str, split: dict, args) -> dict:
    """Score both stages' snapshots on the held-out scans (cached per stage in ``curve_<stage>.json``)."""
    from nnunet_mt.evaluation.curves import mean_by_step, snapshot_dice

    images = {c: repro.source.annotated[c] for c in split["val"]}
    stages, boundary = [], None
    for name, plans, lr in (("A: init", INIT_PLANS, args.init_lr), ("B: DeepMedic", PLANS, 1e-4)):
        fold_dir = repro.model_dir(n, trainer, plans) / "fold_0"
        cache = repro.workdir / f"curve_{plans}.json"
        if cache.exists():
            rows = json.loads(cache.read_text())
        else:
            start = time.time()
            rows = snapshot_dice(fold_dir, images, device=args.device)
            write_json(cache, rows)
            repro.timings[f"n{n}/evaluate_{plans}"] = time.time() - start
        steps, means, stds = mean_by_step(rows)
        if boundary is None:
            offset = 0
            boundary = int(steps.max())
        else:
            offset = boundary  # stage B starts from A's final weights: its step 0 is A's last step
        stages.append({"name": name, "plans": plans, "lr": lr, "steps": (steps + offset).tolist(),
                       "mean_dice": means.tolist(), "std_dice": stds.tolist(), "rows": rows})
    all_steps = np.concatenate([np.array(s["steps"]) for s in stages])
    all_means = np.concatenate([np.array(s["mean_dice"], dtype=float) for s in stages])
    return {"count": n, "split": split, "boundary_step": boundary, "stages": stages, "tolerance": args.tolerance,
            "plateau_step": plateau_step(all_steps, all_means, args.tolerance),
            "best_mean_dice": float(np.nanmax(all_means)) if np.isfinite(all_means).any() else None}


def curve_table(curve: dict) -> str:
    lines = ["| stage | lr | step | mean Dice | std |", "|---|---|---|---|---|"]
    for stage in curve["stages"]:
        for step, m, s in zip(stage["steps"], stage["mean_dice"], stage["std_dice"]):
            lines.append(f"| {stage['name']} | {stage['lr']:g} | {step} | {m:.4f} | {s:.4f} |")
    lines.append("")
    lines.append(f"best mean Dice {curve['best_mean_dice']:.4f}; first within {curve['tolerance']} of it at step "
                 f"{curve['plateau_step']} (stage A ends at step {curve['boundary_step']})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

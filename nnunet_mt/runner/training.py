"""The training stage of a run: the supervised start (an init model, optionally a converged ``--start-epochs`` stage
after it), then every method from it with the same budget, each an ``nnUNetv2_train`` whose length, rates,
snapshots and seed reach the trainer as ``nnUNet_mt_*`` variables (:mod:`nnunet_mt.training.budget`)."""
from __future__ import annotations

from pathlib import Path

from nnunet_mt.runner.base import RunBase
from nnunet_mt.runner.layout import CONFIGURATION, INIT_PLANS, PLANS, START_PLANS
from nnunet_mt.runner.source_dataset import ReproduceError
from nnunet_mt.runner.start_model import check_plans, load_start_model
from nnunet_mt.training import final_validation
from nnunet_mt.training.budget import env_for_budget
from nnunet_mt.training.seeding import SEED_VARIABLE


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


class TrainingStage(RunBase):
    def train(self, name: str, n: int, trainer: str, plans: str, epochs: int | None,
              pretrained: Path | None = None, lr: float | None = None) -> None:
        """One ``nnUNetv2_train`` of count n's dataset (skipped if finished, continued if interrupted)."""
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

    def train_starts(self, n: int) -> None:
        """The supervised start of every method of count n: the init model of each init trainer, then, with
        ``--start-epochs``, the second supervised stage from it (:meth:`start_checkpoint` is its final model).
        With ``--start-model`` none: the given checkpoint is checked against count n's plans instead."""
        start_model = getattr(self.args, "start_model", None)
        if start_model is not None:
            check_plans(start_model, load_start_model(start_model), self.preprocessed_dir(n) / f"{PLANS}.json")
            print(f"=== n{n}/start: {start_model} (--start-model)", flush=True)
            return
        for init in dict.fromkeys(self.init_trainer(m) for m in self.methods):
            self.train(f"n{n}/train_init_{init}", n, init, INIT_PLANS, self.args.init_epochs,
                       lr=getattr(self.args, "init_lr", None))
            if getattr(self.args, "start_epochs", None):
                init_final = self.model_dir(n, init, INIT_PLANS) / "fold_0" / "checkpoint_final.pth"
                self.train(f"n{n}/train_start_{init}", n, init, START_PLANS, self.args.start_epochs,
                           pretrained=init_final)

    def train_method(self, n: int, method: str) -> None:
        """``method`` from its supervised start, with the methods' budget."""
        self.train(f"n{n}/train_{method}", n, self.trainer(method), PLANS, self.args.epochs,
                   pretrained=self.start_checkpoint(n, method))

"""Weight snapshots during training, for curves of Dice against steps (schedule choice, diagnostics).

With ``snapshot_every = k`` (a trainer's class attribute, or ``nnUNet_mt_snapshot_every`` from the runner;
0 = off) :class:`~nnunet_mt.trainers.plugin_trainer.PluginTrainer` writes ``fold_X/snapshots/epoch_EEEE.pth``
at the start of a fresh run (epoch 0: the weights it starts from) and after every k-th epoch. A snapshot holds only what nnU-Net's predictor
reads (``network_weights``, ``trainer_name``, ``init_args``, ``inference_allowed_mirroring_axes``),
plus ``current_epoch`` and ``step`` (optimizer steps done) and, for a trainer whose model is not its
student (the mean teacher), the student as ``student_weights``. So
``nnUNetv2_predict ... -chk snapshots/epoch_0010.pth`` predicts with it, and
:func:`nnunet_mt.evaluation.curves.snapshot_dice` scores every snapshot in one process.

Snapshots do not change training: no RNG is drawn, nothing is read back. Written atomically (a file
renamed into place), by rank 0 only.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from nnunet_mt.training.distributed import unwrap
from nnunet_mt.utils.atomic import write_atomically

SNAPSHOT_FOLDER = "snapshots"
_SNAPSHOT_NAME = re.compile(r"epoch_(\d{4,})\.pth")


def snapshot_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}.pth"


def list_snapshots(fold_dir: str | Path) -> list[Path]:
    """The snapshots of a results fold, by epoch (finished files only)."""
    folder = Path(fold_dir) / SNAPSHOT_FOLDER
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), f) for f in folder.iterdir() if (m := _SNAPSHOT_NAME.fullmatch(f.name))]
    return [f for _, f in sorted(found)]


def snapshot_due(epochs_done: int, every: int) -> bool:
    """Whether a snapshot is written after ``epochs_done`` epochs (epoch 0: the weights a fresh run starts from)."""
    return bool(every) and epochs_done % every == 0


def snapshot_networks(trainer) -> dict[str, torch.nn.Module]:
    """Checkpoint key -> network: the model as ``network_weights`` (a semi-supervised trainer's
    ``target_network``, e.g. the teacher) and, when that is another network, its student as
    ``student_weights``. A trainer whose model is its student (pseudo-label, EN, UDA, Π) writes it
    once: a copy would be scored again by every diagnostic."""
    if hasattr(trainer, "target_network"):
        model, student = trainer.target_network(), trainer.plain_network()
        if model is not student:
            return {"network_weights": model, "student_weights": student}
        return {"network_weights": model}
    return {"network_weights": unwrap(trainer.network)}


def write_snapshot(trainer, epoch: int) -> Path | None:
    """``fold_X/snapshots/epoch_EEEE.pth`` of ``trainer`` after ``epoch`` epochs (rank 0 only); its path."""
    if trainer.local_rank != 0 or getattr(trainer, "disable_checkpointing", False):
        return None
    folder = Path(trainer.output_folder) / SNAPSHOT_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    state = {key: {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
             for key, net in snapshot_networks(trainer).items()}
    state.update(current_epoch=epoch,
                 step=int(getattr(trainer, "global_step", epoch * trainer.num_iterations_per_epoch)),
                 trainer_name=trainer.__class__.__name__, init_args=trainer.my_init_kwargs,
                 inference_allowed_mirroring_axes=trainer.inference_allowed_mirroring_axes)
    out = folder / snapshot_name(epoch)
    write_atomically(lambda tmp: torch.save(state, tmp), out)
    return out

"""Checkpoints a run is given, read with errors that name the file and say what is wrong.

nnU-Net reads ``-pretrained_weights`` and the ``--c`` checkpoint with a bare ``torch.load``: a truncated
file gives ``OSError: [Errno 22] Invalid argument`` without a path, a plain state_dict ``KeyError:
'network_weights'``, another architecture a dump of every tensor. The functions here check
both files first, where a subclass can (:class:`~nnunet_mt.trainers.plugin_trainer.PluginTrainer`):
``initialize`` (which ``nnUNetv2_train`` runs right before ``load_pretrained_weights``) and
``load_checkpoint`` (what ``--c`` calls).
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

import torch

from nnunet_mt.training.distributed import unwrap

#: the order in which ``nnUNetv2_train --c`` looks for a checkpoint (nnunetv2.run.run_training)
RESUME_ORDER = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file."""


def pretrained_weights_argument(argv: Sequence[str] | None = None) -> str | None:
    """The file given to ``nnUNetv2_train -pretrained_weights`` (None if absent). nnU-Net does not hand
    it to the trainer; DDP workers started by ``mp.spawn`` inherit the parent's ``sys.argv``."""
    argv = list(sys.argv if argv is None else argv)
    if "-pretrained_weights" in argv:
        i = argv.index("-pretrained_weights")
        return argv[i + 1] if i + 1 < len(argv) else None
    return None


def read_checkpoint(path: str, what: str, next_step: str, map_location="cpu") -> dict:
    """``torch.load(path)`` of an nnU-Net checkpoint; CheckpointError naming ``path`` (described as
    ``what``) and ending with ``next_step`` when it is missing, unreadable or has no ``network_weights``."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} {path} does not exist. {next_step}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated zip, pickle garbage, ...: torch's messages name no file
        raise CheckpointError(
            f"{what} {path} ({os.path.getsize(path)} bytes) cannot be read: it is truncated or not a PyTorch "
            f"checkpoint ({type(e).__name__}: {e}). {next_step}") from e
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        if isinstance(checkpoint, dict) and checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            kind = f"a plain state_dict ({len(checkpoint)} tensors)"
        else:
            kind = f"a {type(checkpoint).__name__}" + (f" with keys {sorted(checkpoint)[:8]}"
                                                       if isinstance(checkpoint, dict) else "")
        raise CheckpointError(
            f"{what} {path} is {kind}, not a checkpoint written by nnUNetv2_train: nnU-Net reads the weights "
            f"from its 'network_weights' entry (for your own weights: torch.save({{'network_weights': "
            f"state_dict}}, file)). {next_step}")
    return checkpoint


def incompatibility(own: dict, saved: dict, skip: Sequence[str] = (), strict: bool = True) -> str | None:
    """None if ``saved`` fits the state_dict ``own``; otherwise a short description of the mismatch.
    Keys containing a string of ``skip`` are not compared; ``strict`` also refuses keys only in ``saved``."""
    def kept(keys):
        return sorted(k for k in keys if not any(s in k for s in skip))

    missing = kept(own.keys() - saved.keys())
    unexpected = kept(saved.keys() - own.keys()) if strict else []
    shapes = [k for k in kept(own.keys() & saved.keys()) if tuple(own[k].shape) != tuple(saved[k].shape)]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} of the network's {len(own)} tensors are missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} are not in the network (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} differ in shape (e.g. {k}: file {tuple(saved[k].shape)}, network "
                     f"{tuple(own[k].shape)})")
    return "; ".join(parts)


def resume_next_step(path: str) -> str:
    """What to do when the checkpoint ``--c`` picked cannot be used: which one ``--c`` falls back to."""
    folder, name = os.path.split(path)
    later = RESUME_ORDER[RESUME_ORDER.index(name) + 1:] if name in RESUME_ORDER else ()
    fallback = next((c for c in later if os.path.isfile(os.path.join(folder, c))), None)
    then = (f"continues from {fallback} (older)" if fallback else
            "finds no other checkpoint and starts the training anew")
    return (f"Move it away (or delete it) and run the same command with --c again: nnUNetv2_train then {then}; "
            f"or run without --c to start anew.")


#: substrings of keys nnU-Net's ``load_pretrained_weights`` does not transfer
PRETRAINED_SKIP_KEYS: tuple[str, ...] = (".seg_layers.",)


def expected_start(trainer) -> str:
    """What ``trainer`` starts from, for the errors' last sentence."""
    supervised = getattr(trainer, "supervised_trainer_name", None)
    return (f"{trainer.__class__.__name__} starts from a checkpoint_final.pth of {supervised}" if supervised else
            f"Give a checkpoint_final.pth written by nnUNetv2_train with {trainer.__class__.__name__}'s network")


def check_pretrained_weights(trainer, path: str) -> None:
    """What nnU-Net's ``load_pretrained_weights`` asserts, as one error naming the file."""
    hint = f"{expected_start(trainer)} (same dataset and configuration)."
    checkpoint = read_checkpoint(path, "-pretrained_weights", hint)
    problem = incompatibility(unwrap(trainer.network).state_dict(), checkpoint["network_weights"],
                              skip=PRETRAINED_SKIP_KEYS, strict=False)
    if problem:
        written_by = checkpoint.get("trainer_name")
        raise CheckpointError(
            f"-pretrained_weights {path} does not fit {trainer.__class__.__name__}'s network"
            + (f" (it was written by {written_by})" if written_by else "") + f": {problem}. {hint}")


def check_resume_checkpoint(trainer, path: str) -> dict:
    """The checkpoint ``--c`` continues from, read and matched against ``trainer``'s network; returns it."""
    checkpoint = read_checkpoint(path, "the checkpoint to continue from (--c),", resume_next_step(path),
                                 map_location=trainer.device)
    weights = {k[7:] if k.startswith("module.") else k: v for k, v in checkpoint["network_weights"].items()}
    problem = incompatibility(unwrap(trainer.network).state_dict(), weights)
    if problem:
        written_by = checkpoint.get("trainer_name")
        raise CheckpointError(
            f"the checkpoint to continue from (--c), {path}, does not fit {trainer.__class__.__name__}'s network"
            + (f" (it was written by {written_by})" if written_by else "") + f": {problem}. "
            + resume_next_step(path))
    return checkpoint

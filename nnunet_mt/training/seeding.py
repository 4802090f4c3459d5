"""Seeded trainings: a rerun of the same command starts from the same weights and draws the same batches.

nnU-Net seeds nothing: two runs of one ``nnUNetv2_train`` command initialise the network differently and
sample and augment different patches. Every trainer of this plugin seeds Python's, NumPy's and torch's
generators from ``nnUNet_mt_seed`` (default 0) twice: before nnU-Net builds the network (same initial
weights) and, in a fresh run, before the data loaders start (same patches, augmentation and dropout).
:class:`~nnunet_mt.trainers.plugin_trainer.PluginTrainer` calls these functions, in its order.
A run resumed with ``--c`` does not reseed: it continues where the checkpoint left off.

**Paired streams.** With augmentation in the training process (``nnUNet_n_proc_DA=0``), the annotated
training batches are drawn in a stream of their own (:class:`RandomStream`, seeded from ``nnUNet_mt_seed``
alone, :func:`annotated_stream_seed`) by every DeepMedic trainer (``nnUNetTrainerDeepMedic.get_dataloaders``):
supervised DeepMedic and every semi-supervised method on it see the same annotated patches with the same
augmentation at the same step, so that two arms of a comparison differ by their method, not by sampling
noise. (The U-Net trainers keep nnU-Net's loaders, drawing from the global generators.) What only a method draws (its unannotated
patches, input noise, dropout, validation batches) stays in Python's, NumPy's and torch's global generators,
seeded per method.

What still varies: nnU-Net's background augmentation workers (``nnUNet_n_proc_DA`` > 0) are seeded by
batchgenerators from the system and deliver batches in the order they finish, so only
``nnUNet_n_proc_DA=0`` (augmentation in the training process) replays exactly on the CPU; on a GPU,
cuDNN's non-deterministic kernels add their own rounding differences.
"""
from __future__ import annotations

import os
import random
from typing import Iterator, Mapping

import numpy as np

#: environment variable holding the training seed (a non-negative integer)
SEED_VARIABLE = "nnUNet_mt_seed"


def training_seed(environ: Mapping[str, str] | None = None) -> int:
    """The seed in ``nnUNet_mt_seed`` (default 0); raises ValueError naming the variable if it is not an integer >= 0."""
    environ = os.environ if environ is None else environ
    raw = environ.get(SEED_VARIABLE, "")
    if raw == "":
        return 0
    try:
        seed = int(raw)
    except ValueError:
        seed = -1
    if seed < 0:
        raise ValueError(f"environment variable {SEED_VARIABLE}={raw!r}: expected an integer >= 0")
    return seed


def annotated_stream_seed(seed: int, rank: int = 0) -> int:
    """Seed of the annotated batches' stream of run ``seed`` on DDP rank ``rank``: the same for every trainer,
    and apart from the seeds of the global generators (``seed + 1``, ``20190801 + seed``)."""
    return 1_000_000 + seed + 1000 * rank


def global_rng_state() -> dict:
    """The states of Python's, NumPy's and torch's (CPU) global generators."""
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def seeded_rng_state(seed: int) -> dict:
    """The states :func:`seed_everything` would give the global generators, without touching them."""
    import torch

    return {"python": random.Random(seed).getstate(), "numpy": np.random.RandomState(seed % 2 ** 32).get_state(),
            "torch": torch.Generator().manual_seed(seed).get_state()}


def set_global_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


class RandomStream:
    """A random stream of its own for code that draws from the global generators (nnU-Net's loaders and
    augmentation do). Inside ``with stream:`` the global generators hold the stream's state; on exit the
    stream keeps where it got to and the global generators are back where they were, as if the block had
    drawn nothing from them. CUDA's generator is not swapped (the loaders draw on the CPU)."""

    def __init__(self, seed: int) -> None:
        self.state = seeded_rng_state(seed)
        self._outside: dict | None = None

    def __enter__(self) -> "RandomStream":
        self._outside = global_rng_state()
        set_global_rng_state(self.state)
        return self

    def __exit__(self, *exc) -> None:
        self.state = global_rng_state()
        set_global_rng_state(self._outside)
        self._outside = None


class StreamedLoader:
    """A batch iterator whose every ``next`` draws in ``stream``; ``loader`` is the wrapped iterator, for draws
    that must not advance the stream (diagnostics)."""

    def __init__(self, loader: Iterator, stream: RandomStream) -> None:
        self.loader = loader
        self.stream = stream

    def __iter__(self) -> "StreamedLoader":
        return self

    def __next__(self):
        with self.stream:
            return next(self.loader)


def unstreamed(loader):
    """The iterator below a :class:`StreamedLoader` (``loader`` itself otherwise)."""
    return loader.loader if isinstance(loader, StreamedLoader) else loader


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch's (CPU and CUDA) with ``seed``."""
    import torch  # here, so that the runner can import the variable's name without torch

    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def fresh_run_seed(seed: int, rank: int = 0) -> int:
    """What a fresh supervised run seeds the global generators with before its loaders start (validation
    batches, dropout); apart from the initial weights' ``seed`` and the annotated stream's."""
    return seed + 1 + 1000 * rank


def annotated_stream(seed: int, rank: int = 0, epochs_done: int = 0) -> RandomStream:
    """The annotated batches' stream of run ``seed`` on DDP rank ``rank``. A run resumed after ``epochs_done``
    epochs whose checkpoint holds no stream state (one written before the paired streams) continues with a
    stream of its own epoch; a checkpoint that holds it overwrites the state."""
    first = annotated_stream_seed(seed, rank)
    return RandomStream(first if epochs_done == 0 else first + 7919 * epochs_done)

"""Helper run by test_workers in a subprocess: a plugin trainer's loaders, started as in training.

usage: loader_child.py
Builds nnUNetTrainerMeanTeacher_tiny's annotated and unannotated background loaders (two workers each,
``nnUNet_n_proc_DA=2``) on a tiny in-memory loader with the trainer's own transforms, augmenter and
SIGTERM handling, prints ``workers PID PID ...`` and waits to be killed. Its workers stall before their
first sample, so they never reach the transforms: what binds them to this process is the fork itself.
"""
import time

import torch
from batchgenerators.dataloading.data_loader import DataLoader

from nnunet_mt.trainers.nnUNetTrainerMeanTeacher import nnUNetTrainerMeanTeacher_tiny
from nnunet_mt.training.workers import stop_loaders_on_sigterm


class TinyLoader(DataLoader):
    """An endless loader of one 4^3 patch through ``transforms``, as nnU-Net's loaders apply them."""

    def __init__(self, transforms, stall: bool = False):
        super().__init__(None, 1, num_threads_in_multithreaded=1, infinite=True)
        self.transforms = transforms
        self.stall = stall

    def generate_train_batch(self):
        if self.stall:  # a worker killed while still loading its first case
            time.sleep(3600)
        return self.transforms(image=torch.zeros(1, 4, 4, 4), segmentation=torch.zeros(1, 4, 4, 4))


def start_loaders(trainer, stall: bool = False):
    """The trainer's annotated and unannotated loaders with its own transforms and augmenter, started
    (with a first batch delivered unless the workers ``stall`` before their first sample)."""
    for name in ("dataloader_train", "dataloader_unlabeled"):
        setattr(trainer, name, trainer._augmenter(TinyLoader(trainer.get_validation_transforms(None), stall), 2, 2))
    for loader in (trainer.dataloader_train, trainer.dataloader_unlabeled):
        loader._start() if stall else next(loader)
    return [p.pid for loader in (trainer.dataloader_train, trainer.dataloader_unlabeled) for p in loader._processes]


def bare_trainer():
    """The trainer's methods without nnU-Net's set-up (no dataset needed)."""
    trainer = object.__new__(nnUNetTrainerMeanTeacher_tiny)
    trainer.device = torch.device("cpu")
    trainer.dataloader_train = trainer.dataloader_val = trainer.dataloader_unlabeled = None
    return trainer


if __name__ == "__main__":
    t = bare_trainer()
    pids = start_loaders(t, stall=True)
    stop_loaders_on_sigterm(t)  # what on_train_start installs
    print("workers", *pids, flush=True)
    while True:
        time.sleep(1)

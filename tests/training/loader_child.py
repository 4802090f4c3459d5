"""Helper run by test_workers in a subprocess: a plugin trainer's loaders, started as in training.

usage: loader_child.py
Builds nnUNetTrainerMeanTeacher_tiny's annotated and unannotated background loaders (two workers each,
``nnUNet_n_proc_DA=2``) on a tiny in-memory loader with the trainer's own transforms, augmenter and
SIGTERM handling, prints ``workers PID PID ...`` and waits to be killed.
"""
import time

import torch
from batchgenerators.dataloading.data_loader import DataLoader

from nnunet_mt.trainers.nnUNetTrainerMeanTeacher import nnUNetTrainerMeanTeacher_tiny


class TinyLoader(DataLoader):
    """An endless loader of one 4^3 patch through ``transforms``, as nnU-Net's loaders apply them."""

    def __init__(self, transforms):
        super().__init__(None, 1, num_threads_in_multithreaded=1, infinite=True)
        self.transforms = transforms

    def generate_train_batch(self):
        return self.transforms(image=torch.zeros(1, 4, 4, 4), segmentation=torch.zeros(1, 4, 4, 4))


def start_loaders(trainer):
    """The trainer's annotated and unannotated loaders with its own transforms and augmenter, started."""
    trainer.dataloader_train = trainer._augmenter(TinyLoader(trainer.get_validation_transforms(None)), 2, 2)
    trainer.dataloader_unlabeled = trainer._augmenter(TinyLoader(trainer.get_validation_transforms(None)), 2, 2)
    for loader in (trainer.dataloader_train, trainer.dataloader_unlabeled):
        next(loader)
    return [p.pid for loader in (trainer.dataloader_train, trainer.dataloader_unlabeled) for p in loader._processes]


def bare_trainer():
    """The trainer's methods without nnU-Net's set-up (no dataset needed)."""
    trainer = object.__new__(nnUNetTrainerMeanTeacher_tiny)
    trainer.device = torch.device("cpu")
    trainer.dataloader_train = trainer.dataloader_val = trainer.dataloader_unlabeled = None
    return trainer


if __name__ == "__main__":
    t = bare_trainer()
    pids = start_loaders(t)
    t.shut_down_loaders_on_sigterm()  # what on_train_start installs
    print("workers", *pids, flush=True)
    while True:
        time.sleep(1)

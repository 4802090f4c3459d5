"""The mean teacher on the U-Net that nnU-Net planned: "the proposed framework is not restricted to a
specific segmentation network, and can be applied to ... 3D U-Net" (Sec. 2.2).

The method is :class:`MeanTeacherMixin`'s (noise, Eq. 1 consistency, beta ramp, EMA teacher, teacher as
the model); the supervised part is nnU-Net's own recipe for its U-Net: its patch size, loss (Dice +
cross-entropy with deep supervision), SGD schedule and sampling, with lesion oversampling at 50% for
both halves of the batch. The consistency term uses the full-resolution output only; the coarser deep
supervision heads serve the supervised loss. Start from an ``nnUNetTrainer`` checkpoint
(``-pretrained_weights``).
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
from batchgenerators.utilities.file_and_folder_operations import isfile

from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_mt.trainers.nnUNetTrainerMeanTeacher import MeanTeacherMixin
from nnunet_mt.training.budget import apply_budget
from nnunet_mt.training.checkpoints import CheckpointErrorsMixin, pretrained_weights_argument
from nnunet_mt.training.distributed import unwrap
from nnunet_mt.training.progress import ProgressMixin
from nnunet_mt.training.sampling import background_augmenter
from nnunet_mt.training.seeding import SeededTrainingMixin
from nnunet_mt.training.final_validation import OptionalFinalValidationMixin
from nnunet_mt.training.workers import WorkerLifetimeMixin


class AtomicCheckpointsEveryEpoch:
    """nnU-Net's checkpoints with two changes (put it before ``nnUNetTrainer`` in the bases):
    ``checkpoint_latest.pth`` after every epoch (nnU-Net: every 50), so a killed run resumed with ``--c``
    loses at most one epoch, and every checkpoint is written to a temporary file and renamed, so a kill
    never leaves a half-written one. (DeepMedic trainers do the same through ``checkpoint_every``.)"""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.save_every = 1

    def save_checkpoint(self, filename: str) -> None:
        tmp = f"{filename}.tmp"
        super().save_checkpoint(tmp)
        if isfile(tmp):
            os.replace(tmp, filename)


class nnUNetTrainerMeanTeacherUNet(MeanTeacherMixin, SeededTrainingMixin, OptionalFinalValidationMixin,
                                   ProgressMixin, AtomicCheckpointsEveryEpoch, CheckpointErrorsMixin,
                                   WorkerLifetimeMixin, nnUNetTrainer):
    supervised_trainer_name = "nnUNetTrainer"
    sample_healthy_tissue = False
    #: None keeps nnU-Net's training length; the tiny variant sets these
    epochs: int | None = None
    iterations_per_epoch: int | None = None
    val_iterations_per_epoch: int | None = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.oversample_foreground_percent = 0.5
        shorten(self)
        self._init_mean_teacher()

    def _on_fresh_start(self) -> None:
        restore_segmentation_layers(self)  # before the teacher copies the student
        super()._on_fresh_start()

    def _crop_target(self, batch: dict) -> dict:
        return batch  # the U-Net's output has the patch's size

    def training_transforms(self):
        """nnU-Net's own training augmentation; returns (transforms, initial patch size)."""
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        transforms = self.get_training_transforms(
            self.configuration_manager.patch_size, rotation, self._get_deep_supervision_scales(), mirror_axes,
            dummy_2d, use_mask_for_norm=self.configuration_manager.use_mask_for_norm, is_cascaded=self.is_cascaded,
            foreground_labels=self.label_manager.foreground_labels,
            regions=self.label_manager.foreground_regions if self.label_manager.has_regions else None,
            ignore_label=self.label_manager.ignore_label)
        return transforms, initial_patch_size

    def _make_loader(self, dataset, initial_patch_size, transforms, batch_size: int | None = None):
        return nnUNetDataLoader(dataset, batch_size or self.batch_size, initial_patch_size,
                                self.configuration_manager.patch_size, self.label_manager,
                                oversample_foreground_percent=self.oversample_foreground_percent,
                                transforms=transforms)

    def _augmenter(self, loader, processes: int, cached: int):
        return background_augmenter(loader, processes, cached, pin_memory=self.device.type == "cuda")


def shorten(trainer) -> None:
    """Apply a variant's ``epochs`` / ``iterations_per_epoch`` / ``val_iterations_per_epoch`` if set,
    then the runner's ``nnUNet_mt_*`` budget (:mod:`nnunet_mt.training.budget`) if set."""
    for attr, target in (("epochs", "num_epochs"), ("iterations_per_epoch", "num_iterations_per_epoch"),
                         ("val_iterations_per_epoch", "num_val_iterations_per_epoch")):
        if getattr(trainer, attr, None) is not None:
            setattr(trainer, target, getattr(trainer, attr))
    trainer.budget = apply_budget(trainer)


def restore_segmentation_layers(trainer, argv: Sequence[str] | None = None) -> list[str]:
    """Load the ``.seg_layers.`` weights of the ``-pretrained_weights`` checkpoint into the network.

    nnU-Net's ``load_pretrained_weights`` deliberately skips a U-Net's segmentation layers (pretraining
    is meant for transfer to other label sets), so a model "started from" a supervised U-Net would get a
    random output layer. Continuing *the same task* (the mean teacher's start, the runner's fair
    protocol) needs the whole model: this reads the same file again and copies those layers when their
    shapes match. Returns the keys it loaded (none without ``-pretrained_weights``)."""
    fname = pretrained_weights_argument(argv)
    if fname is None:
        return []
    net = unwrap(trainer.network)
    own = net.state_dict()
    saved = torch.load(fname, map_location="cpu", weights_only=False)["network_weights"]
    keys = [k for k in own if ".seg_layers." in k and k in saved and saved[k].shape == own[k].shape]
    if keys:
        net.load_state_dict({k: saved[k] for k in keys}, strict=False)
        trainer.print_to_log_file(f"loaded the {len(keys)} segmentation-layer tensors that nnU-Net's "
                                  f"load_pretrained_weights leaves out, from {fname}: the whole supervised model")
    return keys


class nnUNetTrainerUNet(SeededTrainingMixin, OptionalFinalValidationMixin, ProgressMixin,
                        AtomicCheckpointsEveryEpoch, CheckpointErrorsMixin, WorkerLifetimeMixin, nnUNetTrainer):
    """nnU-Net's own supervised ``nnUNetTrainer``, unchanged except that it honours the ``nnUNet_mt_*``
    budget, so the reproduction runner can shorten the U-Net baseline like every other method, and that
    ``-pretrained_weights`` continues the whole model, segmentation layers included (the runner's
    protocol starts every method from the same supervised model; see :func:`restore_segmentation_layers`),
    and that checkpoints are atomic and written every epoch (:class:`AtomicCheckpointsEveryEpoch`)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        shorten(self)

    def on_train_start(self):
        if not self.was_initialized:
            self.initialize()
        restore_segmentation_layers(self)
        super().on_train_start()


class nnUNetTrainerUNet_tiny(nnUNetTrainerUNet):
    """For tests: nnU-Net's supervised U-Net, 2 epochs x 2 steps (the start of the U-Net mean teacher)."""

    epochs, iterations_per_epoch, val_iterations_per_epoch = 2, 2, 1


class nnUNetTrainerMeanTeacherUNet_tiny(nnUNetTrainerMeanTeacherUNet):
    """For tests: 2 epochs x 2 steps, 2 unannotated patches, ramp-up 2 steps."""

    batch_size_unannotated = 2
    rampup_length = 2
    dice_batches_per_epoch = 1
    supervised_trainer_name = "nnUNetTrainerUNet_tiny"
    epochs, iterations_per_epoch, val_iterations_per_epoch = 2, 2, 1

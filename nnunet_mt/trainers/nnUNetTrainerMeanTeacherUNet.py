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

import torch

from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

from nnunet_mt.trainers.nnUNetTrainerMeanTeacher import MeanTeacherMixin
from nnunet_mt.trainers.nnUNetTrainerUNet import nnUNetTrainerUNet, restore_segmentation_layers
from nnunet_mt.training.sampling import background_augmenter


class nnUNetTrainerMeanTeacherUNet(MeanTeacherMixin, nnUNetTrainerUNet):
    supervised_trainer_name = "nnUNetTrainer"
    sample_healthy_tissue = False

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.oversample_foreground_percent = 0.5
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


class nnUNetTrainerMeanTeacherUNet_tiny(nnUNetTrainerMeanTeacherUNet):
    """For tests: 2 epochs x 2 steps, 2 unannotated patches, ramp-up 2 steps."""

    batch_size_unannotated = 2
    rampup_length = 2
    dice_batches_per_epoch = 1
    supervised_trainer_name = "nnUNetTrainerUNet_tiny"
    epochs, iterations_per_epoch, val_iterations_per_epoch = 2, 2, 1

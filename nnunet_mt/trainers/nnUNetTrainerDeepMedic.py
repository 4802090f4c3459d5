"""Supervised DeepMedic in nnU-Net: the paper's "DeepMedic" baseline and the base of every method.

``nnUNetv2_train DATASET 3d_fullres FOLD -tr nnUNetTrainerDeepMedic`` (with ``nnUNet_extTrainer``
pointing at this folder; ``nnunet_mt_env`` prints the line). What differs from ``nnUNetTrainer``:

* the network is :class:`~nnunet_mt.architectures.deepmedic.DenseDeepMedic`, written into the
  configuration's ``architecture`` entry so ``nnUNetv2_predict`` builds it from the plans;
* loss: cross-entropy (Eq. 2) on the valid output only: targets are centre-cropped to the output,
  the network never pads inside;
* RMSProp (lr 1e-4, decay 0.9; DeepMedic's eps 1e-4 and momentum 0.6), constant learning rate: torch's
  update by default, DeepMedic's own with ``optimizer_name = "deepmedic-rmsprop"``;
* batches of 8 patches, half centred on lesion and half on healthy tissue
  (:mod:`nnunet_mt.training.sampling`); patches are DeepMedic's segments (normal pathway 37x37 in
  plane, low-resolution pathway 23x23; see ``output_size_for_spacing``);
* the plans' ``patch_size`` (the tile nnU-Net's predictor uses) becomes an odd window holding
  any case (``inference_window``), so inference is one whole-volume pass and exact (see ``DenseDeepMedic``);
* no test-time mirroring (DeepMedic has none).

What every trainer of the plugin adds to nnU-Net's (seeding, checks, snapshots, atomic checkpoints, ...) is
:class:`~nnunet_mt.trainers.plugin_trainer.PluginTrainer`'s.

Training length: 300 epochs x 250 steps x 8 patches = 600k segments, about what DeepMedic's
default schedule sees (35 epochs x 20 subepochs x 1000 segments = 700k). Short variants below.
"""
from __future__ import annotations

from copy import deepcopy
from typing import Sequence

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json

from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size
from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_mt.architectures.deepmedic import DeepMedic
from nnunet_mt.architectures.dense_inference import window_for
from nnunet_mt.trainers.plugin_trainer import PluginTrainer
from nnunet_mt.training.budget import apply_budget
from nnunet_mt.training.distributed import unwrap
from nnunet_mt.training.optimizers import DeepMedicRMSprop
from nnunet_mt.training.sampling import DeepMedicDataLoader, HealthyTissueLocations, background_augmenter
from nnunet_mt.training.seeding import StreamedLoader
from nnunet_mt.utils.allocator import reuse_freed_memory

DEEPMEDIC_CLASS = "nnunet_mt.architectures.dense_inference.DenseDeepMedic"
#: spacing ratio above which an axis counts as through-plane (thick slices)
ANISOTROPY_RATIO = 3.0


def center_crop_to(t: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Centre-crop the trailing spatial axes of ``t`` (B, C, *spatial) to ``size``."""
    slices = [slice(None)] * (t.ndim - len(size))
    for have, want in zip(t.shape[-len(size):], size):
        lo = (have - want) // 2
        slices.append(slice(lo, lo + want))
    return t[tuple(slices)]


def output_size_for_spacing(spacing: Sequence[float], in_plane: int = 21, through_plane: int = 6) -> tuple[int, ...]:
    """Training output size per axis: 21 in plane (37 normal / 23 low-res inputs, the paper's) and 6
    through thick slices (22 / 18 inputs; the paper's 21 / 18 rounded so the output is a multiple of 3)."""
    smallest = min(spacing)
    return tuple(through_plane if s >= ANISOTROPY_RATIO * smallest else in_plane for s in spacing)


def inference_window(fingerprint: dict, plans: dict, target_spacing: Sequence[float]) -> list[int]:
    """nnU-Net's inference tile for DeepMedic: one odd-sized window holding any case, in nnU-Net's axis order.

    Odd, so that nnU-Net's centring of a case in the window puts the case's centre voxel on the
    window's centre voxel, where DenseDeepMedic anchors its pooling grid. Sized by
    :func:`~nnunet_mt.architectures.deepmedic.window_for` from the largest training case (after
    resampling to the target spacing): sqrt(3) times it per axis keeps nnU-Net's float16 Gaussian tile
    weight far inside float16's normal range at the case's corners, with room for test cases about
    1.2 times larger. The padding costs no network work (``DenseDeepMedic.forward_window`` computes the
    case's outputs only), just nnU-Net's own handling of a larger tile, so the window is the smallest
    that keeps that margin.
    """
    order = plans["transpose_forward"]
    target = np.asarray(target_spacing, float)
    largest = np.zeros(len(order))
    for shape, spacing in zip(fingerprint["shapes_after_crop"], fingerprint["spacings"]):
        shape = np.asarray(shape, float)[order]
        spacing = np.asarray(spacing, float)[order]
        largest = np.maximum(largest, np.round(shape * spacing / target))
    return window_for(largest.astype(int))


#: nnU-Net normalisations after which the crop to non-zero leaves a non-zero voxel on every face of the
#: case (they map no non-zero raw value to exactly 0 except on a null set), so the case is the
#: non-zero bounding box of the network's input: ``DenseDeepMedic(window_region="nonzero")``
NONZERO_PRESERVING_NORMALIZATIONS = ("ZScoreNormalization", "CTNormalization", "NoNormalization",
                                     "RGBTo01Normalization")


def dense_arch_kwargs(deepmedic_kwargs: dict, normalization_schemes: Sequence[str]) -> dict:
    """The plans' ``arch_kwargs`` of DenseDeepMedic: the trainer's widths, plus nnU-Net's window semantics
    (``nnunet_window``) and which outputs the window pass computes (see ``DenseDeepMedic``)."""
    safe = all(s in NONZERO_PRESERVING_NORMALIZATIONS for s in normalization_schemes)
    return {**deepmedic_kwargs, "nnunet_window": True,
            "window_region": "nonzero" if safe else "receptive_field"}


class nnUNetTrainerDeepMedic(PluginTrainer):
    #: DeepMedic keyword arguments written into the plans (Table 1 of the paper)
    deepmedic_kwargs: dict = {}
    #: annotated patches per optimizer step (the paper's 8)
    batch_size_annotated: int = 8
    training_output_in_plane: int = 21
    training_output_through_plane: int = 6
    #: training length (see the module docstring); variants override these class attributes
    epochs: int = 300
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 20
    #: "torch-rmsprop": ``torch.optim.RMSprop`` with DeepMedic's numbers (eps outside the root, plain momentum),
    #: what every trainer here has used and the consistency screen keeps; "deepmedic-rmsprop": DeepMedic's own
    #: update (:class:`~nnunet_mt.training.optimizers.DeepMedicRMSprop`), whose steps are tens of times smaller
    optimizer_name: str = "torch-rmsprop"

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.label_manager.has_regions:
            # region targets are overlapping sigmoid masks; the cross-entropy here needs exclusive classes
            raise RuntimeError(
                f"{self.__class__.__name__} trains with softmax cross-entropy over exclusive labels, but the "
                f"dataset.json of {self.plans_manager.dataset_name} defines region-based labels "
                f"{self.label_manager.foreground_regions}. Convert the dataset as a binary lesion task instead: "
                f"nnunet_mt_convert_brats2021 / nnunet_mt_convert_msd_brain with --whole-tumour.")
        self.initial_lr = 1e-4
        self.weight_decay = 0.0
        self.oversample_foreground_percent = 0.5
        self.enable_deep_supervision = False
        self.num_epochs = self.epochs
        self.num_iterations_per_epoch = self.iterations_per_epoch
        self.num_val_iterations_per_epoch = self.val_iterations_per_epoch
        self.rmsprop_decay = 0.9
        self.budget = apply_budget(self)  # the runner's nnUNet_mt_* lengths, if set
        self._use_deepmedic_configuration(configuration)

    # ---- plans -------------------------------------------------------------------------------
    def _use_deepmedic_configuration(self, configuration: str) -> None:
        """Rewrite this configuration in the plans: DeepMedic architecture, batch 8, inference window.

        The rewritten plans are what nnU-Net copies to the results folder, so ``nnUNetv2_predict``
        builds the same network and uses the window as its (single) tile.
        """
        cfg = deepcopy(self.configuration_manager.configuration)
        cfg.pop("inherits_from", None)
        cfg["architecture"] = {"network_class_name": DEEPMEDIC_CLASS,
                               "arch_kwargs": dense_arch_kwargs(self.deepmedic_kwargs, cfg["normalization_schemes"]),
                               "_kw_requires_import": []}
        cfg["batch_size"] = self.batch_size_annotated
        cfg["patch_size"] = self._inference_window(cfg)
        plans = self.plans_manager.plans
        plans["configurations"][configuration] = cfg
        self.plans_manager = PlansManager(plans)
        self.configuration_manager = self.plans_manager.get_configuration(configuration)

        geometry = DeepMedic(1, 2, **self.deepmedic_kwargs)
        self.training_output_size = output_size_for_spacing(
            cfg["spacing"], self.training_output_in_plane, self.training_output_through_plane)
        self.training_patch_size = geometry.input_size(self.training_output_size)

    def _inference_window(self, cfg: dict) -> list[int]:
        if self.preprocessed_dataset_folder_base is None:
            return cfg["patch_size"]
        fingerprint_file = join(self.preprocessed_dataset_folder_base, "dataset_fingerprint.json")
        if not isfile(fingerprint_file):
            raise FileNotFoundError(
                f"{fingerprint_file} is missing: run nnUNetv2_plan_and_preprocess for this dataset first")
        return inference_window(load_json(fingerprint_file), self.plans_manager.plans, cfg["spacing"])

    # ---- optimisation ------------------------------------------------------------------------
    def _build_loss(self):
        ignore = self.label_manager.ignore_label
        return RobustCrossEntropyLoss(ignore_index=ignore if ignore is not None else -100)

    def configure_optimizers(self):
        if self.optimizer_name == "torch-rmsprop":
            optimizer = torch.optim.RMSprop(self.network.parameters(), lr=self.initial_lr, alpha=self.rmsprop_decay,
                                            eps=1e-4, momentum=0.6, weight_decay=self.weight_decay)
        elif self.optimizer_name == "deepmedic-rmsprop":
            optimizer = DeepMedicRMSprop(self.network.parameters(), lr=self.initial_lr, rho=self.rmsprop_decay,
                                         eps=1e-4, momentum=0.6)
        else:
            raise ValueError(f"{self.__class__.__name__}.optimizer_name = {self.optimizer_name!r}: expected "
                             f"'torch-rmsprop' or 'deepmedic-rmsprop'")
        # exponent 0: a constant learning rate through nnU-Net's own scheduler interface
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, exponent=0.0)

    def deepmedic(self) -> DeepMedic:
        """The DeepMedic module inside DDP / torch.compile wrappers."""
        return unwrap(self.network)

    def describe_setup(self) -> None:
        if reuse_freed_memory():  # a step's activations are hundreds of MiB each (nnunet_mt/utils/allocator.py)
            self.print_to_log_file("freed memory is kept for reuse (glibc mmap/trim thresholds raised; "
                                   "nnUNet_mt_reuse_memory=0 to keep the defaults)")
        if self.budget:
            self.print_to_log_file(f"training budget from the environment (nnUNet_mt_*): {self.budget}")
        self.print_to_log_file(
            f"DeepMedic segments: input {list(self.training_patch_size)}, output {list(self.training_output_size)} "
            f"voxels; the configuration's patch_size {list(self.configuration_manager.patch_size)} printed above "
            f"is the inference window (one tile per case for nnUNetv2_predict), not a training patch")

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        """DeepMedic has a single output head: nothing to switch."""

    def _crop_target(self, batch: dict) -> dict:
        batch = dict(batch)
        batch["target"] = center_crop_to(batch["target"], self.training_output_size)
        return batch

    def train_step(self, batch: dict) -> dict:
        return super().train_step(self._crop_target(batch))

    def on_validation_epoch_start(self):
        super().on_validation_epoch_start()
        self.deepmedic().dense_eval = False  # score validation patches with the valid forward

    def on_validation_epoch_end(self, val_outputs):
        self.deepmedic().dense_eval = True
        super().on_validation_epoch_end(val_outputs)

    def validation_step(self, batch: dict) -> dict:
        return super().validation_step(self._crop_target(batch))

    # ---- data --------------------------------------------------------------------------------
    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        """nnU-Net's augmentation on DeepMedic segments; in-plane only when slices are thick.

        nnU-Net decides 2D-style augmentation from the patch shape; DeepMedic's segments are near
        cubic in voxels even on 6.5 mm slices, so the decision is taken from the spacing instead.
        """
        patch = self.training_patch_size
        spacing = self.configuration_manager.spacing
        thick = max(spacing) >= ANISOTROPY_RATIO * min(spacing)
        rotation = (-np.pi, np.pi) if thick else (-np.pi / 6, np.pi / 6)
        initial = list(get_patch_size(patch, rotation, rotation, rotation, (0.85, 1.25)))
        if thick:  # as nnU-Net: 2D-style augmentation keeps the through-plane extent
            initial[0] = patch[0]
        self.inference_allowed_mirroring_axes = None  # DeepMedic uses no test-time augmentation
        return rotation, thick, tuple(int(i) for i in initial), (0, 1, 2)

    def _make_loader(self, dataset, initial_patch_size, transforms, batch_size: int | None = None):
        """DeepMedic's 50/50 loader; ``dataset`` must provide healthy-tissue locations (see sampling)."""
        return DeepMedicDataLoader(dataset, batch_size or self.batch_size, initial_patch_size,
                                   self.training_patch_size, self.label_manager,
                                   oversample_foreground_percent=self.oversample_foreground_percent,
                                   sampling_probabilities=None, pad_sides=None, transforms=transforms,
                                   probabilistic_oversampling=self.probabilistic_oversampling)

    def _augmenter(self, loader, processes: int, cached: int):
        return background_augmenter(loader, processes, cached, pin_memory=self.device.type == "cuda")

    def training_transforms(self):
        """nnU-Net's training augmentation for DeepMedic segments; returns (transforms, initial patch size)."""
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        transforms = self.get_training_transforms(
            self.training_patch_size, rotation, None, mirror_axes, dummy_2d,
            use_mask_for_norm=self.configuration_manager.use_mask_for_norm, is_cascaded=self.is_cascaded,
            foreground_labels=self.label_manager.foreground_labels,
            regions=self.label_manager.foreground_regions if self.label_manager.has_regions else None,
            ignore_label=self.label_manager.ignore_label)
        return transforms, initial_patch_size

    def get_dataloaders(self):
        tr_transforms, initial_patch_size = self.training_transforms()
        val_transforms = self.get_validation_transforms(
            None, is_cascaded=self.is_cascaded, foreground_labels=self.label_manager.foreground_labels,
            regions=self.label_manager.foreground_regions if self.label_manager.has_regions else None,
            ignore_label=self.label_manager.ignore_label)
        dataset_tr, dataset_val = self.get_tr_and_val_datasets()
        dl_tr = self._make_loader(HealthyTissueLocations(dataset_tr), initial_patch_size, tr_transforms)
        dl_val = self._make_loader(HealthyTissueLocations(dataset_val), self.training_patch_size, val_transforms)
        n = get_allowed_n_proc_DA()
        mt_tr = self._augmenter(dl_tr, n, max(6, n // 2))
        if n == 0:  # in-process augmentation replays: the annotated batches get their own stream (seeding.py)
            mt_tr = StreamedLoader(mt_tr, self.annotated_stream)
        mt_val = self._augmenter(dl_val, max(1, n // 2), max(3, n // 4))
        _ = next(mt_tr)
        _ = next(mt_val)
        return mt_tr, mt_val

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels, num_output_channels,
                                   enable_deep_supervision=True):
        """nnU-Net's network from the plans. Plans written by earlier versions name DenseDeepMedic where it used
        to live; the name is mapped (``architectures.legacy_names``), so their model folders still predict."""
        from nnunet_mt.architectures.legacy_names import current_configuration

        return nnUNetTrainer.build_network_architecture(plans_manager, current_configuration(configuration_manager),
                                                        num_input_channels, num_output_channels,
                                                        enable_deep_supervision)


class nnUNetTrainerDeepMedic_5epochs(nnUNetTrainerDeepMedic):
    epochs = 5


class nnUNetTrainerDeepMedic_50epochs(nnUNetTrainerDeepMedic):
    epochs = 50


class nnUNetTrainerDeepMedic_demo(nnUNetTrainerDeepMedic):
    """The README demo on CPU: 5 epochs x 20 steps (100 steps of 8 patches)."""

    epochs, iterations_per_epoch, val_iterations_per_epoch = 5, 20, 2


class nnUNetTrainerDeepMedic_tiny(nnUNetTrainerDeepMedic):
    """For tests: narrow DeepMedic (8 filters per layer, 16 in the 1^3 layers), 2 epochs x 2 steps, batch 2."""

    deepmedic_kwargs = {"filters": (8,) * 8, "fc_filters": (16, 16)}
    batch_size_annotated = 2
    epochs, iterations_per_epoch, val_iterations_per_epoch = 2, 2, 1

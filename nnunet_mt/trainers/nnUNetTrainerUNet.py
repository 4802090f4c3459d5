"""nnU-Net's own supervised U-Net as a plugin trainer: the start of the U-Net mean teacher and the runner's
``nnUNet`` baseline. ``nnUNetv2_train DATASET 3d_fullres FOLD -tr nnUNetTrainerUNet``.

``nnUNetTrainer`` unchanged, except that it is a :class:`~nnunet_mt.trainers.plugin_trainer.PluginTrainer`
(seeded, atomic checkpoints every epoch, progress lines, ...), that it honours the ``nnUNet_mt_*`` budget, so
the reproduction runner can shorten the U-Net baseline like every other method, and that
``-pretrained_weights`` continues the whole model, segmentation layers included (the runner's protocol
starts every method from the same supervised model; see :func:`restore_segmentation_layers`).
"""
from __future__ import annotations

from typing import Sequence

import torch

from nnunet_mt.trainers.plugin_trainer import PluginTrainer
from nnunet_mt.training.budget import apply_budget
from nnunet_mt.training.checkpoints import pretrained_weights_argument
from nnunet_mt.training.distributed import unwrap


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


class nnUNetTrainerUNet(PluginTrainer):
    """nnU-Net's supervised U-Net (see the module docstring)."""

    #: None keeps nnU-Net's training length; variants set these
    epochs: int | None = None
    iterations_per_epoch: int | None = None
    val_iterations_per_epoch: int | None = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        shorten(self)

    def prepare_fresh_run(self) -> None:
        restore_segmentation_layers(self)
        super().prepare_fresh_run()


class nnUNetTrainerUNet_tiny(nnUNetTrainerUNet):
    """For tests: nnU-Net's supervised U-Net, 2 epochs x 2 steps (the start of the U-Net mean teacher)."""

    epochs, iterations_per_epoch, val_iterations_per_epoch = 2, 2, 1

"""The pseudo-label baseline: ``nnUNetv2_train DATASET 3d_fullres FOLD -tr nnUNetTrainerDeepMedicPseudoLabel
-pretrained_weights <supervised DeepMedic checkpoint>``.

What nnU-Net's maintainers tell users who have unannotated scans (MIC-DKFZ/nnUNet #2338, #2233): train
on the annotated scans, predict the unannotated ones, train on both. Here in one command, on the same
footing as the mean teacher: the same supervised start, the same budget, the same 8 + 8 batch, the
same sampling, seeded runs and atomic checkpoints (:class:`SemiSupervisedMixin`).

The choices, all fixed (none is tuned):

* **Pseudo-labels: hard labels of the initial model, computed once.** The argmax of the
  ``-pretrained_weights`` model's dense prediction of every unannotated scan, the very prediction
  the pseudo-lesion pass of :mod:`nnunet_mt.training.pseudo_lesions` makes for the 50/50 sampler
  (cached as ``pseudo_labels_<digest>/`` next to the preprocessed unannotated scans). They never
  change during training (the maintainers' recipe: one round). Hard labels, because that is what
  "predict, then train on both" produces and what nnU-Net's pipeline carries: they become each
  unannotated case's segmentation, so nnU-Net's spatial augmentation moves them with the image
  (nearest-neighbour, as annotated labels); soft labels would not survive its label transforms.
* **No confidence threshold.** Every voxel inside the head keeps its predicted label (outside it,
  nnU-Net's -1 becomes background, as for annotated scans). A threshold would be one more parameter
  to choose, and choosing it needs data with truth; the test scans may not be used for that.
* **Loss: ``L = Ls + w * Lp``, w = 1, no ramp-up.** ``Ls`` is DeepMedic's cross-entropy on the 8
  annotated patches, ``Lp`` the same cross-entropy on the 8 unannotated patches against their
  pseudo-labels: a pseudo-labelled scan counts as much as an annotated one, as in the recipe. The
  labels are fixed from step 0, so unlike a consistency target there is nothing to ramp up for
  (``--rampup`` / ``nnUNet_mt_rampup`` does not apply).
* **One forward of the 16 patches** (BatchNorm over both halves, as the mean teacher's student), no
  input noise. The student is the model (``network_weights``).

Per epoch ``Ls``, ``Lp`` and the training Dice go to ``pseudo_label_log.json`` and
``progress_pseudo_label.png``.
"""
from __future__ import annotations

import torch
from torch import autocast

from nnunetv2.utilities.helpers import dummy_context

from nnunet_mt.trainers.nnUNetTrainerDeepMedic import nnUNetTrainerDeepMedic, nnUNetTrainerDeepMedic_tiny
from nnunet_mt.trainers.semi_supervised import SemiSupervisedMixin
from nnunet_mt.training.pseudo_lesions import PseudoLabelMaps, PseudoLesionLocations, labels_folder


def _to_device(y, device):
    return [t.to(device, non_blocking=True) for t in y] if isinstance(y, list) else y.to(device, non_blocking=True)


def _cat(a, b):
    return [torch.cat([x, y]) for x, y in zip(a, b)] if isinstance(a, list) else torch.cat([a, b])


def _split(out, n: int):
    if isinstance(out, (list, tuple)):
        return [o[:n] for o in out], [o[n:] for o in out]
    return out[:n], out[n:]


class PseudoLabelMixin(SemiSupervisedMixin):
    """Annotated + pseudo-labelled training on top of a plugin trainer (put it first in the bases)."""

    #: w in L = Ls + w * Lp
    pseudo_label_weight: float = 1.0
    history_step_keys = ("Ls", "Lp")
    log_name = "pseudo_label"

    def _unlabeled_cases(self, dataset, locations: dict):
        """The unannotated scans with the initial model's label maps as their segmentation."""
        maps = PseudoLabelMaps(labels_folder(self.unlabeled_folder(), self.pseudo_lesion_digest))
        missing = sorted(set(dataset.identifiers) - set(maps.cases()))
        if missing:
            raise RuntimeError(f"{maps.folder} has no pseudo-label map of {len(missing)} unannotated scan(s) "
                               f"({', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}); delete it and the "
                               f"matching pseudo_lesions_{self.pseudo_lesion_digest}.pkl and start the training "
                               f"afresh from the initial model, which recomputes both")
        return PseudoLesionLocations(dataset, locations, self.sample_healthy_tissue, labels=maps)

    def train_step(self, batch: dict) -> dict:
        batch = self._crop_target(batch)
        unlabeled = self._crop_target(next(self.dataloader_unlabeled))
        x_l = batch["data"].to(self.device, non_blocking=True)
        x_u = unlabeled["data"].to(self.device, non_blocking=True)
        y_l, y_u = _to_device(batch["target"], self.device), _to_device(unlabeled["target"], self.device)
        n = len(x_l)
        step = self.global_step

        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            out = self.network(torch.cat([x_l, x_u]))  # one batch of 16, as the mean teacher's student
            out_l, out_u = _split(out, n)
            ls = self.loss(out_l, y_l)
            lp = self.loss(out_u, y_u)  # the same cross-entropy against the pseudo-labels
            loss = ls + self.pseudo_label_weight * lp
        self._backward_and_step(loss)
        self.global_step += 1
        return {"loss": loss.detach().cpu().numpy(), "Ls": ls.item(), "Lp": lp.item(), "step": step}


class nnUNetTrainerDeepMedicPseudoLabel(PseudoLabelMixin, nnUNetTrainerDeepMedic):
    """Pseudo-label baseline with DeepMedic: same length as the supervised trainer (300 epochs x 250 steps)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._init_semi_supervised()


class nnUNetTrainerDeepMedicPseudoLabel_50epochs(nnUNetTrainerDeepMedicPseudoLabel):
    epochs = 50


class nnUNetTrainerDeepMedicPseudoLabel_tiny(nnUNetTrainerDeepMedicPseudoLabel, nnUNetTrainerDeepMedic_tiny):
    """For tests: narrow DeepMedic, 2 epochs x 2 steps, batch 2 + 2, checkpoint every epoch."""

    batch_size_unannotated, dice_batches_per_epoch, checkpoint_every = 2, 1, 1
    supervised_trainer_name = "nnUNetTrainerDeepMedic_tiny"

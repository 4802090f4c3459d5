"""DeepMedic-EN, the paper's first competitor (Sec. 3.3): Zhang et al., MICCAI 2017, "Deep adversarial
networks for biomedical image segmentation utilizing unannotated images", with DeepMedic as the
segmentation network. ``nnUNetv2_train DATASET 3d_fullres FOLD -tr nnUNetTrainerDeepMedicEN
-pretrained_weights <supervised DeepMedic checkpoint>``.

An evaluation network (:class:`~nnunet_mt.architectures.discriminators.EvaluationNetwork`) sees each
patch's image (cropped to DeepMedic's output voxels) with the segmenter's softmax maps and learns to tell
segmentations of annotated scans (1) from those of unannotated scans (0); the segmenter minimises
``Ls + lambda(S) * CE(EN(unannotated segmentation), annotated)``: its unannotated segmentations should
look like annotated ones. Choices and their sources:

=========================  ==================================================================
evaluation network         image + probability branches summed, 3 strided 3^3 convolutions
                           (32-64-128, strides 1x2x2, 1x2x2, 2x2x2), LeakyReLU 0.2, dropout 0.5,
                           global pool, linear -> 2 logits (SSL4MIS ``FC3DDiscriminator``,
                           shrunk for 6x21x21 outputs)
its optimizer              Adam, lr 1e-4, betas (0.9, 0.99) (SSL4MIS)
lambda(S)                  0.1 * exp(-5 (1 - S/L)^2) for S < L = 400, then 0.1 (SSL4MIS' weight
                           and sigmoid ramp; L as the mean teacher's ramp-up)
updates                    alternating, one step each per batch (Zhang et al.; SSL4MIS)
segmenter, batch, data     as the mean teacher: DeepMedic, RMSProp lr 1e-4, 8 + 8 patches, 50/50
                           lesion / healthy sampling, pseudo-lesions from the supervised start
=========================  ==================================================================
"""
from __future__ import annotations

import torch
from torch import nn

from nnunet_mt.architectures.discriminators import EvaluationNetwork
from nnunet_mt.trainers.adversarial import AdversarialMixin
from nnunet_mt.trainers.nnUNetTrainerDeepMedic import nnUNetTrainerDeepMedic, nnUNetTrainerDeepMedic_tiny
from nnunet_mt.training.adversarial import center_crop, en_segmenter_loss, en_weight


class nnUNetTrainerDeepMedicEN(AdversarialMixin, nnUNetTrainerDeepMedic):
    adversarial_max_weight: float = 0.1
    adversary_kwargs = {"features": 32, "dropout": 0.5}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._init_adversarial()

    def build_adversary(self) -> nn.Module:
        return EvaluationNetwork(self.num_input_channels, self.label_manager.num_segmentation_heads,
                                 **self.adversary_kwargs)

    def adversarial_weight(self, step: int) -> float:
        return en_weight(step, self.rampup_length, self.adversarial_max_weight)

    def adversary_inputs(self, x, logits, context):
        return torch.softmax(logits.float(), 1), center_crop(x, logits.shape[2:]).float()

    def segmenter_adversarial_loss(self, adversary_logits, labels):
        return en_segmenter_loss(adversary_logits[labels == 0])  # the unannotated patches


class nnUNetTrainerDeepMedicEN_tiny(nnUNetTrainerDeepMedicEN, nnUNetTrainerDeepMedic_tiny):
    """For tests: the tiny DeepMedic's sizes, 2 + 2 patches, ramp-up 2 steps, a narrow evaluation network."""

    batch_size_unannotated, rampup_length, dice_batches_per_epoch, checkpoint_every = 2, 2, 1, 1
    adversary_kwargs = {"features": 8}
    supervised_trainer_name = "nnUNetTrainerDeepMedic_tiny"

"""DeepMedic-UDA, the paper's second competitor (Sec. 3.3): Kamnitsas et al., IPMI 2017, "Unsupervised
domain adaptation in brain lesion segmentation with adversarial networks", with the annotated scans as
source domain and the unannotated scans as target domain. ``nnUNetv2_train DATASET 3d_fullres FOLD -tr
nnUNetTrainerDeepMedicUDA -pretrained_weights <supervised DeepMedic checkpoint>``.

A domain discriminator (:class:`~nnunet_mt.architectures.discriminators.PatchDiscriminator`) reads
DeepMedic's activations from several layers (:meth:`DeepMedic.feature_taps`: layers 4, 6, 8 of both
pathways, the subsampled ones upsampled x3, and both 1^3 layers, centre-cropped to the output grid:
760 channels for the paper's widths) and classifies the domain; the segmenter minimises
``Ls - lambda(S) * L_adv``, L_adv being the discriminator's cross-entropy on both domains, so that its
features no longer tell the domains apart. Choices and their sources:

=========================  ==================================================================
discriminator input        multi-layer activations of both pathways + 1^3 layers (Kamnitsas
                           et al. 2017; layer choice 4, 6, 8 = DeepMedic's residual outputs)
discriminator              3 strided 3^3 convolutions (64-128-256, strides 1x2x2, 1x2x2, 2x2x2),
                           LeakyReLU 0.2, global pool, linear -> 2 logits (a small 3D CNN as in
                           Kamnitsas et al.; sized for 6x21x21 outputs)
its optimizer              Adam, lr 1e-4, betas (0.9, 0.99) (as the EN's, SSL4MIS)
lambda(S)                  0 for S < L/4 (discriminator warm-up), then linear to 0.05 at S = L = 400,
                           constant after (Kamnitsas et al.: warm-up, linear ramp to 0.05)
adversarial term           -L_adv with the discriminator frozen (gradient reversal)
segmenter, batch, data     as the mean teacher: DeepMedic, RMSProp lr 1e-4, 8 + 8 patches, 50/50
                           lesion / healthy sampling, pseudo-lesions from the supervised start
=========================  ==================================================================
"""
from __future__ import annotations

import torch
from torch import nn

from nnunet_mt.architectures.deepmedic import DeepMedic
from nnunet_mt.architectures.discriminators import PatchDiscriminator
from nnunet_mt.trainers.adversarial import AdversarialMixin
from nnunet_mt.trainers.nnUNetTrainerDeepMedic import nnUNetTrainerDeepMedic, nnUNetTrainerDeepMedic_tiny
from nnunet_mt.training.adversarial import FeatureTap, uda_segmenter_loss, uda_weight


class nnUNetTrainerDeepMedicUDA(AdversarialMixin, nnUNetTrainerDeepMedic):
    adversarial_max_weight: float = 0.05
    #: the discriminator learns alone for this fraction of the ramp-up
    warmup_fraction: float = 0.25
    #: 1-based pathway layers whose activations the discriminator reads
    feature_layers: tuple[int, ...] = (4, 6, 8)
    adversary_kwargs = {"features": 64}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._init_adversarial()

    def build_adversary(self) -> nn.Module:
        channels = DeepMedic.tap_channels(self.deepmedic().feature_taps(self.feature_layers))
        return PatchDiscriminator(channels, **self.adversary_kwargs)

    def adversarial_weight(self, step: int) -> float:
        return uda_weight(step, self.rampup_length, int(self.warmup_fraction * self.rampup_length),
                          self.adversarial_max_weight)

    def _forward_context(self):
        return FeatureTap(self.deepmedic().feature_taps(self.feature_layers))

    def adversary_inputs(self, x, logits, context):
        return (context.aligned(logits.shape[2:]),)

    def segmenter_adversarial_loss(self, adversary_logits, labels):
        return uda_segmenter_loss(adversary_logits, labels)


class nnUNetTrainerDeepMedicUDA_tiny(nnUNetTrainerDeepMedicUDA, nnUNetTrainerDeepMedic_tiny):
    """For tests: the tiny DeepMedic's sizes, 2 + 2 patches, ramp-up 4 steps, a narrow discriminator."""

    batch_size_unannotated, rampup_length, dice_batches_per_epoch, checkpoint_every = 2, 4, 1, 1
    adversary_kwargs = {"features": 8}
    supervised_trainer_name = "nnUNetTrainerDeepMedic_tiny"

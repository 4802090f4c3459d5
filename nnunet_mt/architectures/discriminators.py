"""The adversaries of the paper's competing methods (Sec. 3.3): small 3D CNNs that end in 2 logits.

* :class:`EvaluationNetwork` — DeepMedic-EN (Zhang et al., MICCAI 2017): sees an image patch together
  with the segmentation probabilities of that patch and tells segmentations of annotated scans (class 1)
  from those of unannotated scans (class 0). As in Zhang et al. and SSL4MIS' 3D version
  (``FC3DDiscriminator``), image and probability maps enter through their own first convolution and
  are summed; strided convolutions, LeakyReLU(0.2), global average pooling and a linear classifier follow.
* :class:`PatchDiscriminator` — DeepMedic-UDA (Kamnitsas et al., IPMI 2017): a 3D CNN on the segmenter's
  multi-layer activations (:func:`nnunet_mt.training.adversarial.FeatureTap`) that classifies the domain:
  source = annotated (1), target = unannotated (0).

Both see DeepMedic's training output grid (6 x 21 x 21 voxels on 6.5 mm slices), far smaller than the
64^3-96^3 inputs of SSL4MIS' discriminator, so the first two downsamplings are in-plane only (stride
1 x 2 x 2) and 3^3 kernels with padding 1 replace 4^3 kernels; any input size >= 1 voxel works.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    """Strided 3D CNN -> global average pool -> 2 logits.

    in_channels: input feature maps.
    features: channels after the first convolution; doubled at each further stride.
    strides: stride of each 3^3 convolution (its count sets the depth).
    negative_slope: LeakyReLU slope (0.2 as in SSL4MIS / DCGAN discriminators).
    dropout: channel dropout after each hidden convolution but the last (SSL4MIS uses 0.5).
    """

    def __init__(self, in_channels: int, *, features: int = 32,
                 strides: Sequence[Sequence[int]] = ((1, 2, 2), (1, 2, 2), (2, 2, 2)),
                 negative_slope: float = 0.2, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_channels = in_channels
        layers: list[nn.Module] = []
        prev, width = in_channels, features
        for i, stride in enumerate(strides):
            layers.append(nn.Conv3d(prev, width, 3, stride=tuple(stride), padding=1))
            layers.append(nn.LeakyReLU(negative_slope))
            if dropout > 0 and i < len(strides) - 1:
                layers.append(nn.Dropout3d(dropout))
            prev, width = width, width * 2
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(prev, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_channels, Z, Y, X) -> logits (B, 2)."""
        return self.classifier(self.body(x).mean(dim=(2, 3, 4)))


class EvaluationNetwork(nn.Module):
    """Zhang et al.'s evaluation network: (probabilities, image) -> 2 logits (1 = annotated).

    image_channels: image channels (2 for DWI + b0).
    num_classes: probability maps (classes of the segmenter, background included).
    features: channels of the two first convolutions and of the body's first layer.
    Other keywords go to the :class:`PatchDiscriminator` body.
    """

    def __init__(self, image_channels: int, num_classes: int, *, features: int = 32,
                 negative_slope: float = 0.2, **body_kwargs) -> None:
        super().__init__()
        self.map_conv = nn.Conv3d(num_classes, features, 3, padding=1)
        self.image_conv = nn.Conv3d(image_channels, features, 3, padding=1)
        self.act = nn.LeakyReLU(negative_slope)
        self.body = PatchDiscriminator(features, features=features, negative_slope=negative_slope, **body_kwargs)

    def forward(self, probabilities: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """probabilities: (B, K, Z, Y, X) softmax maps; image: (B, C, Z, Y, X) the same voxels -> (B, 2)."""
        if probabilities.shape[2:] != image.shape[2:]:
            raise ValueError(f"probabilities {tuple(probabilities.shape)} and image {tuple(image.shape)} must "
                             f"cover the same voxels")
        return self.body(self.act(self.map_conv(probabilities) + self.image_conv(image)))

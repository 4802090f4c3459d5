"""DeepMedic (Kamnitsas et al., MedIA 2017) as used by Cui et al., IPMI 2019, Table 1.

Two pathways of valid (unpadded) 3x3x3 convolutions see the same centre:

* the normal pathway sees a window of ``O + S`` voxels at full resolution,
* the subsampled pathway sees a window of ``f * (O / f + S)`` voxels, average-pooled by ``f``
  (NiftyNet's DeepMedic does the same; the official code samples every f-th voxel),

where ``O`` is the output size, ``S`` the total shrinkage of a pathway (16 for eight 3^3 layers)
and ``f`` the subsampling factor (3). Low-resolution features are repeated ``f`` times (nearest
upsampling, as DeepMedic) so they land exactly on the normal pathway's output grid, concatenated,
and passed through two 1^3 layers of 250 filters and a 1^3 classifier.

The module takes ONE tensor: the largest context, ``I = O + 2 * margin`` voxels per axis with
``margin = f * S / 2`` (24). It cuts the normal pathway's window from the centre and pools the
whole window for the subsampled pathway, so callers (nnU-Net's data loaders and predictors) deal
with a single image tensor. Nothing is padded inside the network: every output voxel has seen its
true neighbourhood, and the output is ``2 * margin`` smaller than the input.

This module is the network only. How it segments a whole volume exactly, inside nnU-Net's predictor
(``DenseDeepMedic``, the inference window, the fast eval arithmetic), is
:mod:`nnunet_mt.architectures.dense_inference`, which builds on this module; this one does not import it
(plans that name ``DenseDeepMedic`` here, as earlier versions wrote them, are mapped by
:mod:`nnunet_mt.architectures.legacy_names`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

PAPER_FILTERS: tuple[int, ...] = (30, 30, 40, 40, 40, 40, 50, 50)
PAPER_RESIDUAL_LAYERS: tuple[int, ...] = (4, 6, 8)


def center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Centre-crop the spatial axes of ``x`` (B, C, *spatial) to ``size``."""
    slices = [slice(None), slice(None)]
    for have, want in zip(x.shape[2:], size):
        lo = (have - want) // 2
        slices.append(slice(lo, lo + want))
    return x[tuple(slices)]


class _PathwayLayer(nn.Module):
    """DeepMedic layer: BN -> PReLU -> dropout -> conv (the first layer convolves the raw input)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dropout: float,
                 pre_activation: bool, bias: bool = False) -> None:
        super().__init__()
        self.norm = nn.BatchNorm3d(in_channels) if pre_activation else None
        self.act = nn.PReLU(in_channels) if pre_activation else None
        self.drop = nn.Dropout(dropout) if dropout > 0 else None
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            x = self.act(self.norm(x))
        if self.drop is not None:
            x = self.drop(x)
        return self.conv(x)


class DeepMedicPathway(nn.Module):
    """A stack of valid convolutions with DeepMedic's residual connections.

    At each layer ``i`` listed in ``residual_layers`` (1-based), the input of layer ``i - 1`` is
    centre-cropped and added to the output of layer ``i``; extra channels of the deeper layer
    receive nothing (zero-padding of the shortcut, as in DeepMedic).
    """

    def __init__(self, in_channels: int, filters: Sequence[int], kernel_sizes: Sequence[int],
                 residual_layers: Sequence[int], dropout: Sequence[float]) -> None:
        super().__init__()
        self.residual_layers = tuple(residual_layers)
        layers = []
        prev = in_channels
        for i, (c, k, p) in enumerate(zip(filters, kernel_sizes, dropout)):
            layers.append(_PathwayLayer(prev, c, k, p, pre_activation=i > 0))
            prev = c
        self.layers = nn.ModuleList(layers)
        self.out_channels = prev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = []  # inputs[i] is the input of layer i (0-based)
        for i, layer in enumerate(self.layers):
            inputs.append(x)
            y = layer(x)
            if (i + 1) in self.residual_layers:
                shortcut = center_crop(inputs[i - 1], y.shape[2:])
                if shortcut.shape[1] < y.shape[1]:
                    y = torch.cat([y[:, :shortcut.shape[1]] + shortcut, y[:, shortcut.shape[1]:]], 1)
                else:
                    y = y + shortcut[:, :y.shape[1]]
            x = y
        return x


class DeepMedic(nn.Module):
    """Dual-pathway DeepMedic with valid convolutions.

    Keyword arguments (all may appear in an nnU-Net plans ``arch_kwargs`` entry):

    input_channels: image channels (e.g. 2 for DWI + b0).
    num_classes: output classes including background.
    filters: feature maps of the 8 pathway layers (both pathways share them, Table 1).
    kernel_sizes: cubic kernel size of each pathway layer.
    subsample_factor: down-sampling factor of the low-resolution pathway.
    residual_layers: 1-based pathway layers receiving a residual connection.
    fc_filters: filters of the 1^3 layers after concatenation.
    pathway_dropout: dropout before each pathway layer (DeepMedic default: none).
    fc_dropout: dropout before each 1^3 layer and before the classifier (DeepMedic: 0, 0.5, 0.5).
    deep_supervision: accepted for nnU-Net's builder; DeepMedic has a single output, so True
        is refused.
    """

    def __init__(self, input_channels: int, num_classes: int, *,
                 filters: Sequence[int] = PAPER_FILTERS,
                 kernel_sizes: Sequence[int] | int = 3,
                 subsample_factor: int = 3,
                 residual_layers: Sequence[int] = PAPER_RESIDUAL_LAYERS,
                 fc_filters: Sequence[int] = (250, 250),
                 pathway_dropout: Sequence[float] | float = 0.0,
                 fc_dropout: Sequence[float] = (0.0, 0.5, 0.5),
                 deep_supervision: bool = False) -> None:
        super().__init__()
        if deep_supervision:
            raise ValueError("DeepMedic has a single output head; deep_supervision=True is not supported")
        filters = tuple(int(c) for c in filters)
        if isinstance(kernel_sizes, int):
            kernel_sizes = (kernel_sizes,) * len(filters)
        if isinstance(pathway_dropout, (int, float)):
            pathway_dropout = (float(pathway_dropout),) * len(filters)
        kernel_sizes, pathway_dropout = tuple(kernel_sizes), tuple(pathway_dropout)
        if len(kernel_sizes) != len(filters) or len(pathway_dropout) != len(filters):
            raise ValueError(f"filters {filters}, kernel_sizes {kernel_sizes} and pathway_dropout "
                             f"{pathway_dropout} must have the same length")
        if any(k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd so outputs stay centred, got {kernel_sizes}")
        if len(fc_dropout) != len(fc_filters) + 1:
            raise ValueError(f"fc_dropout needs one rate per 1^3 layer plus the classifier "
                             f"({len(fc_filters) + 1}), got {fc_dropout}")
        if any(not 2 <= r <= len(filters) for r in residual_layers):
            raise ValueError(f"residual_layers must lie in 2..{len(filters)}, got {residual_layers}")
        if subsample_factor < 1:
            raise ValueError(f"subsample_factor must be >= 1, got {subsample_factor}")
        self.input_channels = input_channels
        self.num_classes = num_classes
        self.subsample_factor = int(subsample_factor)
        self.shrink = sum(k - 1 for k in kernel_sizes)
        if (self.subsample_factor * self.shrink) % 2:
            raise ValueError("subsample_factor * total kernel shrinkage must be even for a centred output")

        self.normal = DeepMedicPathway(input_channels, filters, kernel_sizes, residual_layers, pathway_dropout)
        self.subsampled = DeepMedicPathway(input_channels, filters, kernel_sizes, residual_layers, pathway_dropout)
        fc = []
        prev = 2 * filters[-1]
        for c, p in zip(fc_filters, fc_dropout[:-1]):
            fc.append(_PathwayLayer(prev, c, 1, p, pre_activation=True))
            prev = c
        self.fc = nn.Sequential(*fc)
        self.classifier = _PathwayLayer(prev, num_classes, 1, fc_dropout[-1], pre_activation=True, bias=True)

    # ---- geometry -------------------------------------------------------------------------
    @property
    def margin(self) -> int:
        """Context needed on each side of the output, in input voxels (24 for the paper's net)."""
        return self.subsample_factor * self.shrink // 2

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """Output spatial size for an input of ``input_size``; raises if that input is not valid."""
        out = []
        for s in input_size:
            if s % self.subsample_factor or s // self.subsample_factor <= self.shrink:
                raise ValueError(
                    f"DeepMedic input size {tuple(input_size)} is invalid: each axis must be a multiple "
                    f"of {self.subsample_factor} and larger than {self.subsample_factor * self.shrink}")
            out.append(s - 2 * self.margin)
        return tuple(out)

    def input_size(self, output_size: Sequence[int]) -> tuple[int, ...]:
        """Input spatial size that yields ``output_size`` (each axis a positive multiple of f)."""
        if any(o <= 0 or o % self.subsample_factor for o in output_size):
            raise ValueError(f"output size {tuple(output_size)} must be positive multiples of "
                             f"{self.subsample_factor}")
        return tuple(o + 2 * self.margin for o in output_size)

    def pathway_input_sizes(self, output_size: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(normal, subsampled) pathway input sizes, e.g. 37 and 23 for an output of 21."""
        normal = tuple(o + self.shrink for o in output_size)
        low = tuple(o // self.subsample_factor + self.shrink for o in output_size)
        return normal, low

    # ---- forward --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Valid forward, see :meth:`forward_valid`."""
        return self.forward_valid(x)

    def forward_valid(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, I1, I2, I3), every I a multiple of f larger than f*S.

        Returns logits (B, num_classes, I1 - 2m, I2 - 2m, I3 - 2m) with m = ``self.margin``.
        """
        out_size = self.output_size(x.shape[2:])
        normal_in, _ = self.pathway_input_sizes(out_size)
        normal = self.normal(center_crop(x, normal_in))
        f = self.subsample_factor
        low = self.subsampled(F.avg_pool3d(x, f, f) if f > 1 else x)
        if f > 1:
            low = low.repeat_interleave(f, 2).repeat_interleave(f, 3).repeat_interleave(f, 4)
        features = torch.cat([normal, low], 1)
        return self.classifier(self.fc(features))

    def feature_taps(self, pathway_layers: Sequence[int] = (4, 6, 8)) -> list[tuple[nn.Module, int]]:
        """(module, upsampling factor) pairs whose outputs DeepMedic-UDA's discriminator reads: the
        1-based ``pathway_layers`` of both pathways (convolution outputs, before the residual addition;
        the subsampled ones with factor f) and both 1^3 layers. See ``training.adversarial.FeatureTap``."""
        if any(not 1 <= i <= len(self.normal.layers) for i in pathway_layers):
            raise ValueError(f"pathway_layers must lie in 1..{len(self.normal.layers)}, got {tuple(pathway_layers)}")
        taps = [(self.normal.layers[i - 1], 1) for i in pathway_layers]
        taps += [(self.subsampled.layers[i - 1], self.subsample_factor) for i in pathway_layers]
        taps += [(layer, 1) for layer in self.fc]
        return taps

    @staticmethod
    def tap_channels(taps: Sequence[tuple[nn.Module, int]]) -> int:
        """Channels of the aligned features of ``taps`` (the discriminator's input channels)."""
        return sum(module.conv.out_channels for module, _ in taps)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """He (fan-in) initialisation, as DeepMedic; nnU-Net's builder applies it to every module."""
        if isinstance(module, nn.Conv3d):
            nn.init.kaiming_normal_(module.weight, a=0.25, mode="fan_in", nonlinearity="leaky_relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)

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
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PAPER_FILTERS: tuple[int, ...] = (30, 30, 40, 40, 40, 40, 50, 50)
PAPER_RESIDUAL_LAYERS: tuple[int, ...] = (4, 6, 8)


def _center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
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
                shortcut = _center_crop(inputs[i - 1], y.shape[2:])
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
        normal = self.normal(_center_crop(x, normal_in))
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


def _as_tuple(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value),) * n


#: float16's smallest normal number: nnU-Net accumulates Gaussian-weighted logits in float16
FLOAT16_NORMAL_MIN = 2.0 ** -14
#: nnU-Net's tile weight: value_scaling_factor 10 at the centre, sigma = window / 8
_GAUSSIAN_PEAK, _GAUSSIAN_SIGMA_SCALE = 10.0, 1.0 / 8
#: the window is this many times the largest case per axis: the tile weight at a case corner is then
#: 10 exp(-8 * 3 / 3) = 3.4e-3, far above FLOAT16_NORMAL_MIN, and test cases up to 1.22 times larger
#: in every axis (or 1.58 times in one) still stay in float16's normal range
WINDOW_PER_CASE = 3 ** 0.5


def gaussian_weight_at(extent: Sequence[int], window: Sequence[int]) -> float:
    """nnU-Net's tile weight at the corner of a case of ``extent`` voxels centred in ``window``."""
    exponent = 0.0
    for n, w in zip(extent, window):
        d = max(w // 2 - (w - n) // 2, (w - n) // 2 + n - 1 - w // 2)  # farthest case voxel from the centre
        exponent += (d / (w * _GAUSSIAN_SIGMA_SCALE)) ** 2 / 2
    return _GAUSSIAN_PEAK * float(np.exp(-exponent))


def window_for(extent: Sequence[int]) -> list[int]:
    """Smallest odd window holding ``extent`` with a voxel of padding on each side and nnU-Net's
    float16 tile weight well inside float16's normal range at the case's corners (``WINDOW_PER_CASE``)."""
    window = []
    for n in extent:
        w = max(int(n) + 2, int(np.ceil(WINDOW_PER_CASE * n)))
        window.append(w + 1 - w % 2)
    return window


class CaseDoesNotFitWindow(ValueError):
    """nnU-Net's predictor passed DenseDeepMedic a tile that is not a whole case padded into the window."""


class DenseDeepMedic(DeepMedic):
    """DeepMedic whose eval-mode forward segments a whole volume exactly, output the size of input.

    Training (``self.training``) uses the valid forward of :class:`DeepMedic` on patches. In eval
    mode, ``forward(x)`` treats ``x`` as an entire volume: it pads it with zeros *outside the volume
    only* (as DeepMedic pads at image borders) and computes the outputs in non-overlapping tiles of at
    most ``dense_tile_voxels`` output voxels, each fed its full ``margin`` of true context
    (:func:`~nnunet_mt.architectures.dense_inference.forward_block`). The result does not depend on the
    tile size. The low-resolution pooling grid is anchored at the volume's centre voxel ``n // 2``, so a
    case that nnU-Net centres in an odd-sized window gets exactly the grid of an unpadded pass. Outputs
    whose whole receptive field is zero take the network's constant response to zeros.

    nnunet_window: the trainer sets this when nnU-Net's predictor calls the network with the plans'
        ``patch_size`` as its only tile: each eval input is then one preprocessed case, zero-padded and
        centred by nnU-Net (``forward_window``). Only outputs inside the case are computed (nnU-Net
        discards the rest), and a tile that is not a whole case (a case larger than the window, so
        nnU-Net would blend tiles) or a case too large for nnU-Net's float16 tile weights stops with
        :class:`CaseDoesNotFitWindow`.
    window_region: in ``forward_window``, which outputs to compute. ``"nonzero"``: the non-zero
        bounding box, which *is* the case after nnU-Net's crop to non-zero whenever the normalisation
        leaves a non-zero voxel on each face of it (z-score and CT normalisation do, almost surely);
        checked by requiring the box to sit where nnU-Net centres a case of its size, otherwise the
        ``"receptive_field"`` rule is used: every output whose receptive field touches a non-zero voxel
        (exact for any case, at the cost of a ring of ``margin`` voxels around it).
    """

    def __init__(self, input_channels: int, num_classes: int, *, dense_tile_voxels: int = 400_000,
                 nnunet_window: bool = False, window_region: str = "nonzero", **kwargs) -> None:
        super().__init__(input_channels, num_classes, **kwargs)
        if window_region not in ("nonzero", "receptive_field"):
            raise ValueError(f"window_region must be 'nonzero' or 'receptive_field', got {window_region!r}")
        # Large tiles waste the least on context, smaller ones hold less memory: with freed memory reused
        # (nnunet_mt/allocator.py), 4e5 output voxels ran as fast as 1e6 and took 0.3-0.5 GB less peak RSS
        # on 240 x 240 x 21 and BraTS-size cases (benchmarks/micro.py --only-tiles); the 1^3 head runs
        # in chunks of 2048 voxels whatever the tile.
        self.dense_tile_voxels = int(dense_tile_voxels)
        self.nnunet_window = bool(nnunet_window)
        self.window_region = window_region
        # Trainers switch this off while they score validation *patches* in eval mode.
        self.dense_eval = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Train mode (or ``dense_eval`` off): (B, C, *I) -> (B, K, *(I - 2m)).

        Eval mode: (B, C, *n) -> (B, K, *n), the whole-volume segmentation (``forward_window`` when
        ``nnunet_window`` is set, else ``forward_dense``).
        """
        if self.training or not self.dense_eval:
            return self.forward_valid(x)
        if self.nnunet_window:
            return self.forward_window(x)
        return self.forward_dense(x)

    def _pad_widths(self, n: int, anchor: int) -> tuple[int, int]:
        """Zeros before/after an axis of length n so that ``anchor`` is a pooling-block centre."""
        f, m = self.subsample_factor, self.margin
        before = m + (f // 2 - anchor - m) % f
        after = m + (-(before + n + m)) % f
        return before, after

    def _default_tile(self, extent: Sequence[int]) -> list[int]:
        """The region's extent, halved along its longest axis until it holds at most
        ``dense_tile_voxels`` output voxels."""
        tile = [max(int(e), 1) for e in extent]
        while np.prod(tile) > self.dense_tile_voxels and max(tile) > 1:
            i = int(np.argmax(tile))
            tile[i] = -(-tile[i] // 2)
        return tile

    def _zero_response(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (num_classes,) of a voxel whose whole receptive field is zero: spatially constant."""
        probe = x.new_zeros((1, x.shape[1], *(2 * self.margin + self.subsample_factor,) * 3))
        return self.forward_valid(probe)[0, :, 0, 0, 0]

    @staticmethod
    def _nonzero_box(x: torch.Tensor) -> tuple[list[int], list[int]] | None:
        """[lo, hi) per spatial axis of the voxels where any batch element or channel is non-zero."""
        mask = x.detach().ne(0).any(1).any(0)
        if not bool(mask.any()):
            return None
        lo, hi = [], []
        for axis in range(mask.dim()):
            others = tuple(a for a in range(mask.dim()) if a != axis)
            hit = torch.nonzero(mask.any(others) if others else mask)[:, 0]
            lo.append(int(hit[0]))
            hi.append(int(hit[-1]) + 1)
        return lo, hi

    def _receptive_field_region(self, lo: Sequence[int], hi: Sequence[int], spatial: Sequence[int]):
        """Outputs whose receptive field (margin + f - 1 voxels: the low-resolution block of a voxel
        reaches f - 1 beyond its own margin) touches the box [lo, hi)."""
        reach = self.margin + self.subsample_factor - 1
        return ([max(l - reach, 0) for l in lo], [min(h + reach, n) for h, n in zip(hi, spatial)])

    @torch.no_grad()
    def forward_dense(self, x: torch.Tensor, anchor: Sequence[int] | None = None,
                      tile_size: Sequence[int] | int | None = None) -> torch.Tensor:
        """Exact whole-volume logits. x: (B, C, n1, n2, n3) -> (B, num_classes, n1, n2, n3).

        anchor: voxel that is the centre of a low-resolution pooling block (default ``n // 2``).
        tile_size: output voxels per tile and axis (default: the region to compute, halved along its
        longest axis until it holds at most ``dense_tile_voxels``); any value gives the same result
        up to floating-point summation order.
        """
        box = self._nonzero_box(x)
        region = None if box is None else self._receptive_field_region(*box, x.shape[2:])
        return self._segment(x, region, anchor, tile_size)

    @torch.no_grad()
    def forward_window(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of one preprocessed case as nnU-Net's predictor passes it: zero-padded, centred in
        the window (the tile ``x``). (B, C, *window) -> (B, K, *window). See :meth:`window_outputs`."""
        return self._segment(x, self.window_outputs(x))

    def window_outputs(self, x: torch.Tensor) -> tuple[list[int], list[int]] | None:
        """The outputs [lo, hi) that ``forward_window`` computes for the tile ``x`` (None: all zero).

        Raises :class:`CaseDoesNotFitWindow` when the tile cannot be a whole case padded by nnU-Net
        (its content reaches the tile's border) or when the case is so large that nnU-Net's float16
        tile weight leaves float16's normal range at its corners.
        """
        window = list(x.shape[2:])
        box = self._nonzero_box(x)
        if box is None:
            return None
        lo, hi = box
        extent = [h - l for l, h in zip(lo, hi)]
        touching = [i for i, (l, h, w) in enumerate(zip(lo, hi, window)) if l == 0 or h == w]
        weight = gaussian_weight_at(extent, window)
        if touching or weight < FLOAT16_NORMAL_MIN:
            problem = (f"it reaches the window's border along axis {touching}, so the case is at least as "
                       f"large as the window and nnU-Net is cutting it into blended tiles, which DeepMedic's "
                       f"valid convolutions cannot make exact" if touching else
                       f"nnU-Net's float16 tile weight at the case's corners would be {weight:.2g}, below "
                       f"float16's normal range ({FLOAT16_NORMAL_MIN:.2g}), and the logits there inexact")
            needed = ("an odd size of at least sqrt(3) times the case's preprocessed size in every axis "
                      "(nnunet_mt.architectures.deepmedic.window_for)" if touching else str(window_for(extent)))
            raise CaseDoesNotFitWindow(
                f"DenseDeepMedic: the case being predicted (the one named above; non-zero extent {extent} "
                f"voxels in this tile, nnU-Net's axis order) does not fit the inference window {window} (the "
                f"configuration's patch_size): {problem}. The window was sized from the training cases. Set "
                f"\"patch_size\" of this configuration in the model folder's plans.json to {needed}, or crop "
                f"the case.")
        centred = all(l == (w - e) // 2 for l, w, e in zip(lo, window, extent))
        if centred and self.window_region == "nonzero":
            return lo, hi
        return self._receptive_field_region(lo, hi, window)

    def _segment(self, x: torch.Tensor, region, anchor: Sequence[int] | None = None,
                 tile_size: Sequence[int] | int | None = None) -> torch.Tensor:
        """Zero response everywhere, then exact logits for the outputs in ``region`` = (lo, hi)."""
        from nnunet_mt.allocator import reuse_freed_memory
        from nnunet_mt.architectures.dense_inference import forward_block, fuse

        reuse_freed_memory()  # each tile's activations are hundreds of MiB: keep them off fresh pages

        spatial = tuple(x.shape[2:])
        out = x.new_empty((x.shape[0], self.num_classes, *spatial))
        for k, value in enumerate(self._zero_response(x).tolist()):  # fill_: 20x faster than repeat
            out[:, k].fill_(value)
        if region is None:
            return out
        anchor = tuple(s // 2 for s in spatial) if anchor is None else tuple(anchor)
        # zeros before each axis so that ``anchor`` is a pooling-block centre; the padded volume is never
        # built whole, each tile cuts its block out of it (``_padded_block``)
        before = [self._pad_widths(n, a)[0] for n, a in zip(spatial, anchor)]
        lo, hi = region
        tile = self._default_tile([h - l for l, h in zip(lo, hi)]) if tile_size is None else \
            list(_as_tuple(tile_size, 3))
        fused = fuse(self)
        for a1 in range(lo[0], hi[0], tile[0]):
            for a2 in range(lo[1], hi[1], tile[1]):
                for a3 in range(lo[2], hi[2], tile[2]):
                    a = (a1, a2, a3)
                    b = [min(aa + t, h) for aa, t, h in zip(a, tile, hi)]
                    block, o_lo, o_hi = self._padded_block(x, before, a, b)
                    if not torch.any(block):
                        continue
                    dst = (slice(None), slice(None), *[slice(aa, bb) for aa, bb in zip(a, b)])
                    out[dst] = forward_block(fused, block, o_lo, o_hi)
        return out

    def _padded_block(self, x: torch.Tensor, before: Sequence[int], a: Sequence[int], b: Sequence[int]):
        """The input block that volume outputs [a, b) need, cut from ``x`` zero-padded by ``before``.

        Returns (block, lo, hi): the outputs' bounds in the block's output coordinates. The block starts
        on a pooling-block boundary (a multiple of f in padded coordinates) so its low-resolution grid is
        the volume's, and covers both pathways' context (see ``dense_inference.forward_block``).
        """
        f, m = self.subsample_factor, self.margin
        o_lo = [aa + p - m for aa, p in zip(a, before)]  # padded-output coordinates
        o_hi = [bb + p - m for bb, p in zip(b, before)]
        start = [lo // f * f for lo in o_lo]
        stop = [-(-hi // f) * f + 2 * m for hi in o_hi]
        block = x.new_zeros((*x.shape[:2], *[e - s for s, e in zip(start, stop)]))
        src, dst = [], []
        for s, e, p, n in zip(start, stop, before, x.shape[2:]):
            v0, v1 = max(s - p, 0), min(e - p, n)  # volume voxels inside the block
            src.append(slice(v0, v1))
            dst.append(slice(v0 + p - s, v1 + p - s))
        if all(sl.stop > sl.start for sl in src):
            block[(slice(None), slice(None), *dst)] = x[(slice(None), slice(None), *src)]
        return block, [lo - s for lo, s in zip(o_lo, start)], [hi - s for hi, s in zip(o_hi, start)]

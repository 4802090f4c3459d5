"""DeepMedic on whole volumes: exact dense inference inside nnU-Net's predictor, and fast.

Two parts, the second built on the first:

* **The eval-mode arithmetic, rearranged for speed on the CPU** (:func:`fuse`, :func:`forward_block`,
  :func:`block_flops`): the same function as ``DeepMedic.forward_valid``, below.
* **The network nnU-Net's predictor runs** (:class:`DenseDeepMedic`: a :class:`DeepMedic` whose eval
  forward segments a whole volume, output the size of input), and the inference window it is run in
  (:func:`window_for`, :func:`gaussian_weight_at`, :class:`CaseDoesNotFitWindow`): one odd-sized tile
  per case, so nnU-Net never blends tiles in which a network of valid convolutions would see zeros.

Inference spends its time in the pathways' 3^3 convolutions and in the 1^3 layers. Three things make
those cheaper without changing what is computed (up to float rounding):

* **Folded BatchNorm.** In eval mode BatchNorm is a per-channel affine map. Where a pathway layer's
  output feeds only the next layer's BatchNorm (layers 1, 3, 5, 7, and layer 8 into the 1^3 head),
  that map is folded into the convolution's weights and bias, saving a pass over the activation. The
  outputs of layers 2, 4 and 6 stay raw, because the residual connections at 4, 6 and 8 add them.
* **Channels-last memory** (``torch.channels_last_3d``): oneDNN's 3^3 convolutions run 1.3-2x faster
  on it, and a channels-last activation *is* a (voxels, channels) matrix for the 1^3 layers.
* **The 1^3 head as matrix products over chunks of voxels** (``head_rows`` at a time): its
  250-channel activations never exist for the whole block, so memory stays small and the data stays
  in cache; the low-resolution features are gathered onto the output grid per chunk (nearest
  upsampling, as ``repeat_interleave``) instead of being repeated for the whole block.

The normal pathway is computed for exactly the outputs asked for; only the low-resolution pathway
works on whole pooling blocks (the ``f``-aligned superset), which is cheap on its ``f^3`` coarser grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnunet_mt.architectures.deepmedic import DeepMedic, DeepMedicPathway, center_crop

CL = torch.channels_last_3d


def _bn_affine(bn: nn.BatchNorm3d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of an eval-mode BatchNorm: bn(x) = x * scale + shift per channel."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


@dataclass
class _Layer:
    weight: torch.Tensor                 # conv weight (channels-last), next BN folded in if ``folded``
    bias: torch.Tensor | None
    pre_bn: tuple[torch.Tensor, torch.Tensor] | None   # this layer's own BN, when not folded upstream
    slope: torch.Tensor | None           # this layer's PReLU slope (None: first layer, raw input)
    residual: bool
    shortcut_scale: torch.Tensor | None  # next BN's scale, applied to the shortcut when folded


@dataclass
class _Pathway:
    layers: list[_Layer]
    out_channels: int


@dataclass
class FusedDeepMedic:
    """Eval-mode parameters of a :class:`DeepMedic`, rearranged by :func:`fuse`."""

    normal: _Pathway
    low: _Pathway
    head_slope: torch.Tensor                  # PReLU before the first 1^3 layer (100 channels)
    head: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]  # (W (out, in), bias, PReLU slope of next)
    subsample_factor: int
    shrink: int


def _fuse_pathway(pathway: DeepMedicPathway, next_bn: nn.BatchNorm3d, next_channels: slice) -> _Pathway:
    layers = list(pathway.layers)
    residual = set(i - 1 for i in pathway.residual_layers)  # 0-based layers that add a shortcut
    # the raw output of layer k is needed when layer k + 2 adds it as its shortcut
    keep_raw = {k for k in range(len(layers)) if (k + 2) in residual}
    fused: list[_Layer] = []
    folded_into_previous = False
    for k, layer in enumerate(layers):
        if k + 1 < len(layers):
            following_bn, channels = layers[k + 1].norm, slice(None)
        else:
            following_bn, channels = next_bn, next_channels
        weight = layer.conv.weight.detach()
        bias = layer.conv.bias.detach() if layer.conv.bias is not None else None
        shortcut_scale = None
        fold = k not in keep_raw
        if fold:
            scale, shift = _bn_affine(following_bn)
            scale, shift = scale[channels].detach(), shift[channels].detach()
            weight = weight * scale.view(-1, 1, 1, 1, 1)
            bias = shift if bias is None else bias * scale + shift
            shortcut_scale = scale if k in residual else None
        pre_bn = None
        if layer.norm is not None and not folded_into_previous:
            pre_bn = tuple(t.detach() for t in _bn_affine(layer.norm))
        fused.append(_Layer(weight.contiguous(memory_format=CL), bias, pre_bn,
                            layer.act.weight.detach() if layer.act is not None else None,
                            k in residual, shortcut_scale))
        folded_into_previous = fold
    return _Pathway(fused, pathway.out_channels)


@torch.no_grad()
def fuse(net: DeepMedic) -> FusedDeepMedic:
    """Rearrange the eval-mode parameters of ``net`` (BatchNorm running statistics, no dropout).

    Cheap (a few ms): callers rebuild it for every forward, so it always reflects the current weights.
    """
    first = net.fc[0] if len(net.fc) else net.classifier
    c_normal = net.normal.out_channels
    normal = _fuse_pathway(net.normal, first.norm, slice(0, c_normal))
    low = _fuse_pathway(net.subsampled, first.norm, slice(c_normal, None))
    head = []
    modules = list(net.fc) + [net.classifier]
    for i, layer in enumerate(modules):
        w = layer.conv.weight.detach().flatten(1)  # (out, in)
        b = layer.conv.bias.detach() if layer.conv.bias is not None else torch.zeros_like(w[:, 0])
        slope = None
        if i + 1 < len(modules):  # fold the next layer's BN into this one
            scale, shift = _bn_affine(modules[i + 1].norm)
            w, b = w * scale.detach()[:, None], b * scale.detach() + shift.detach()
            slope = modules[i + 1].act.weight.detach()
        head.append((w.contiguous(), b.contiguous(), slope))
    return FusedDeepMedic(normal, low, first.act.weight.detach(), head, net.subsample_factor, net.shrink)


def _conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Valid 3^3 (or 1^3) convolution. oneDNN directly when available: ``F.conv3d``'s dispatch picks
    the slow reference kernel for small inputs and for two input channels (3-4x slower here) and then
    returns a non-channels-last result, which costs a layout copy at the next layer."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available():
        return torch.mkldnn_convolution(x, weight, bias, [0, 0, 0], [1, 1, 1], [1, 1, 1], 1)
    return F.conv3d(x, weight, bias)


def _pathway(p: _Pathway, x: torch.Tensor) -> torch.Tensor:
    """Valid forward of one fused pathway; returns its last layer's output with the head's BN applied."""
    inputs: list[torch.Tensor] = []
    for k, layer in enumerate(p.layers):
        inputs.append(x)
        if layer.pre_bn is not None:
            scale, shift = layer.pre_bn
            x = torch.addcmul(shift.view(1, -1, 1, 1, 1), x, scale.view(1, -1, 1, 1, 1))
        if layer.slope is not None:
            x = F.prelu(x, layer.slope)
        y = _conv3d(x, layer.weight, layer.bias)
        if layer.residual:
            shortcut = center_crop(inputs[k - 1], y.shape[2:])
            c = min(shortcut.shape[1], y.shape[1])
            if layer.shortcut_scale is None:
                y[:, :c] += shortcut[:, :c]
            else:
                y[:, :c].addcmul_(shortcut[:, :c], layer.shortcut_scale[:c].view(1, -1, 1, 1, 1))
        inputs[k] = inputs[k] if (k + 1 < len(p.layers) and p.layers[k + 1].residual) else None
        x = y
    return x


@torch.no_grad()
def forward_block(fused: FusedDeepMedic, padded: torch.Tensor, lo: Sequence[int], hi: Sequence[int],
                  head_rows: int = 2048) -> torch.Tensor:
    """Logits of outputs ``[lo, hi)`` (per axis, in output coordinates of ``padded``).

    padded: (B, C, *P) input whose output coordinate ``o`` sits at input voxel ``o + margin``, and
    whose low-resolution pooling blocks start at multiples of ``f`` (as ``DenseDeepMedic`` pads it).
    Returns (B, K, *(hi - lo)), equal to ``forward_valid`` of the matching input window.
    """
    f, s = fused.subsample_factor, fused.shrink
    half = s // 2
    margin = f * s // 2
    lo, hi = list(lo), list(hi)
    x = padded  # each pathway's input is cut from it and made channels-last below
    # normal pathway: exactly the outputs asked for
    normal_in = x[(slice(None), slice(None),
                   *[slice(a + margin - half, b + margin + half) for a, b in zip(lo, hi)])]
    normal = _pathway(fused.normal, normal_in.contiguous(memory_format=CL))
    # low-resolution pathway: whole pooling blocks q in [q_lo, q_hi) cover outputs [f q, f q + f)
    q_lo = [a // f for a in lo]
    q_hi = [-(-b // f) for b in hi]
    low_in = x[(slice(None), slice(None), *[slice(f * a, f * (b + s)) for a, b in zip(q_lo, q_hi)])]
    low_in = F.avg_pool3d(low_in, f, f) if f > 1 else low_in
    low = _pathway(fused.low, low_in.contiguous(memory_format=CL))

    batch = x.shape[0]
    n_rows = normal.permute(0, 2, 3, 4, 1).reshape(-1, normal.shape[1])   # (B * voxels, C_n), a view
    l_rows = low.permute(0, 2, 3, 4, 1).reshape(-1, low.shape[1])
    size = [b - a for a, b in zip(lo, hi)]
    low_size = [b - a for a, b in zip(q_lo, q_hi)]
    # for every output voxel, the row of its low-resolution block (nearest upsampling)
    axes = [torch.div(torch.arange(a, b) , f, rounding_mode="floor") - q for a, b, q in zip(lo, hi, q_lo)]
    index = ((axes[0].view(-1, 1, 1) * low_size[1] + axes[1].view(1, -1, 1)) * low_size[2]
             + axes[2].view(1, 1, -1)).reshape(-1)
    per_case = index.numel()
    k_out = fused.head[-1][0].shape[0]
    out = normal.new_empty((batch * per_case, k_out))
    low_per_case = low_size[0] * low_size[1] * low_size[2]
    for b in range(batch):
        for r0 in range(0, per_case, head_rows):
            r1 = min(r0 + head_rows, per_case)
            h = torch.cat([n_rows[b * per_case + r0:b * per_case + r1],
                           l_rows.index_select(0, index[r0:r1] + b * low_per_case)], 1)
            h = F.prelu(h, fused.head_slope)
            for w, bias, slope in fused.head:
                # F.linear, not addmm with W^T: 3x faster for the 2-class classifier (benchmarks/speed/micro.py)
                h = F.linear(h, w, bias)
                if slope is not None:
                    h = F.prelu(h, slope)
            out[b * per_case + r0:b * per_case + r1] = h
    return out.view(batch, *size, k_out).permute(0, 4, 1, 2, 3)


def block_flops(net: DeepMedic, size: Sequence[int], low_size: Sequence[int] | None = None) -> int:
    """Floating-point operations (2 per multiply-add) of :func:`forward_block` for ``size`` outputs.

    Counts the convolutions and the 1^3 layers, the work that matters: each pathway's valid
    convolutions over its outputs plus their context (the normal pathway on ``size``, the subsampled one
    on the ``low_size`` pooling blocks covering it, default ``ceil(size / f)``), then the 1^3 layers
    on every output voxel. BatchNorm, PReLU and the additions are left out (a few per cent).
    """
    f = net.subsample_factor
    low_size = [-(-s // f) for s in size] if low_size is None else list(low_size)
    total = 0
    for pathway, out in ((net.normal, size), (net.subsampled, low_size)):
        extent = [o + net.shrink for o in out]
        for layer in pathway.layers:
            conv = layer.conv
            k = conv.kernel_size
            extent = [e - kk + 1 for e, kk in zip(extent, k)]
            total += 2 * conv.in_channels * conv.out_channels * int(np.prod(k)) * int(np.prod(extent))
    voxels = int(np.prod(size))
    for layer in list(net.fc) + [net.classifier]:
        total += 2 * layer.conv.in_channels * layer.conv.out_channels * voxels
    return total


# ---- whole volumes: the network nnU-Net's predictor runs, and its window ----------------------------
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
    (:func:`forward_block`). The result does not depend on the tile size. The low-resolution pooling
    grid is anchored at the volume's centre voxel ``n // 2``, so a case that nnU-Net centres in an
    odd-sized window gets exactly the grid of an unpadded pass. Outputs whose whole receptive field is
    zero take the network's constant response to zeros.

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
        # (nnunet_mt/utils/allocator.py), 4e5 output voxels ran as fast as 1e6 and took 0.3-0.5 GB less peak RSS
        # on 240 x 240 x 21 and BraTS-size cases (benchmarks/speed/micro.py --only-tiles); the 1^3 head runs
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
                      "(nnunet_mt.architectures.dense_inference.window_for)" if touching else str(window_for(extent)))
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
        from nnunet_mt.utils.allocator import reuse_freed_memory

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
        the volume's, and covers both pathways' context (see :func:`forward_block`).
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

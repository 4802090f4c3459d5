"""DeepMedic's eval-mode arithmetic, rearranged for speed on the CPU; the same function as ``forward_valid``.

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
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnunet_mt.architectures.deepmedic import _center_crop as center_crop

if TYPE_CHECKING:  # pragma: no cover
    from nnunet_mt.architectures.deepmedic import DeepMedic, DeepMedicPathway

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


def _fuse_pathway(pathway: "DeepMedicPathway", next_bn: nn.BatchNorm3d, next_channels: slice) -> _Pathway:
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
def fuse(net: "DeepMedic") -> FusedDeepMedic:
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
                # F.linear, not addmm with W^T: 3x faster for the 2-class classifier (benchmarks/micro.py)
                h = F.linear(h, w, bias)
                if slope is not None:
                    h = F.prelu(h, slope)
            out[b * per_case + r0:b * per_case + r1] = h
    return out.view(batch, *size, k_out).permute(0, 4, 1, 2, 3)


def block_flops(net: "DeepMedic", size: Sequence[int], low_size: Sequence[int] | None = None) -> int:
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

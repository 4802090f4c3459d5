"""Convolutions with fewer multiplications than the GEMM count: what this machine's PyTorch offers.

Below the matmul peak, DeepMedic's exact dense inference can only get faster with an algorithm that needs
fewer multiplications than the direct 3^3 convolution (``2 * C_in * C_out * 27`` FLOPs per output voxel),
i.e. Winograd or FFT convolutions. This script measures the options on one layer of the normal pathway as
the dense inference runs it (40 -> 40 channels, a 25 x 260 x 260 input: a noisy-background case's
middle layer, channels-last), each against oneDNN's direct convolution in the same process:

* **NNPACK** (``torch._nnpack_spatial_convolution``), PyTorch's only CPU Winograd/FFT convolution for AVX2
  (2-D, so a 3^3 convolution is 3 stacked 2-D ones summed over the depth taps): reports whether it runs;
* **Winograd F(2x2, 3x3) in-plane**, written in eager PyTorch (``winograd_inplane``): the 3^3 kernel as 3
  depth taps of 2-D Winograd, 2.25x fewer multiplications; its input and output transforms are
  element-wise passes over 4x and 12x the activation, so it is bounded by memory bandwidth.

Prints seconds, GFLOP/s counted as the direct convolution's FLOPs (so a faster algorithm shows more
than the peak), the fp32 matmul peak of the same process, and the largest difference from oneDNN.

usage: python benchmarks/speed/fewer_multiplies.py [--depth 25] [--size 260] [--channels 40] [--repeats 3]
"""
from __future__ import annotations

import argparse

import torch

from machine import best_time, matmul_peak  # benchmarks/speed/machine.py: this folder is the script's sys.path[0]

#: Winograd F(2, 3) matrices (Lavin & Gray 2016): y = A^T [(G g G^T) * (B^T d B)] A
B_T = torch.tensor([[1., 0., -1., 0.], [0., 1., 1., 0.], [0., -1., 1., 0.], [0., 1., 0., -1.]])
G = torch.tensor([[1., 0., 0.], [.5, .5, .5], [.5, -.5, .5], [0., 0., 1.]])


def kernel_transform(weight: torch.Tensor) -> torch.Tensor:
    """(K, C, 3, 3, 3) -> (16, 3C, K): per in-plane Winograd position, the 3 depth taps stacked along C."""
    u = torch.einsum("ia,kczab,jb->ijzck", G, weight, G)  # (4, 4, 3, C, K)
    return u.reshape(16, 3 * weight.shape[1], weight.shape[0]).contiguous()


def _transform_1d(x: torch.Tensor, dim: int, tiles: int) -> torch.Tensor:
    """B^T along ``dim``: 4 stacked outputs (new leading axis) for tiles of 4 inputs at stride 2."""
    at = (slice(None),) * dim
    s = [x[(*at, slice(j, j + 2 * tiles - 1, 2))] for j in range(4)]  # element j of every tile
    return torch.stack([s[0] - s[2], s[1] + s[2], s[2] - s[1], s[1] - s[3]])


def winograd_inplane(x: torch.Tensor, u: torch.Tensor, out_channels: int, slab: int = 4) -> torch.Tensor:
    """Valid 3^3 convolution of x (D, H, W, C) channels-last, H - 2 and W - 2 even -> (D-2, H-2, W-2, K).

    u: :func:`kernel_transform` of the weight. Works on slabs of ``slab`` output depths at a time.
    """
    d, h, w, c = x.shape
    th, tw = (h - 2) // 2, (w - 2) // 2
    k = out_channels
    out = x.new_empty((d - 2, h - 2, w - 2, k))
    for z0 in range(0, d - 2, slab):
        z = min(slab, d - 2 - z0)
        xs = x[z0:z0 + z + 2]                                     # (z+2, H, W, C)
        v = _transform_1d(_transform_1d(xs, 2, tw), 2, th)         # (4i, 4j, z+2, tH, tW, C)
        v = v.reshape(16, z + 2, th * tw, c)
        # the 3 depth taps as one contraction of 3C: rows (z, tile), columns (tap, channel)
        v3 = torch.cat([v[:, t:t + z] for t in range(3)], dim=-1).reshape(16, z * th * tw, 3 * c)
        m = torch.bmm(v3, u).view(4, 4, z, th, tw, k)
        a = torch.stack([m[0] + m[1] + m[2], m[1] - m[2] - m[3]])               # A^T along i
        y = torch.stack([a[:, 0] + a[:, 1] + a[:, 2], a[:, 1] - a[:, 2] - a[:, 3]], 1)  # along j
        for i in range(2):
            for j in range(2):
                out[z0:z0 + z, i::2, j::2] = y[i, j]
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depth", type=int, default=25)
    parser.add_argument("--size", type=int, default=260, help="in-plane input size (H = W)")
    parser.add_argument("--channels", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    d, n, c = args.depth, args.size, args.channels
    torch.manual_seed(0)
    x = torch.randn(1, c, d, n, n).contiguous(memory_format=torch.channels_last_3d)
    weight = (torch.randn(c, c, 3, 3, 3) / (27 * c) ** 0.5).contiguous(memory_format=torch.channels_last_3d)
    flops = 2 * c * c * 27 * (d - 2) * (n - 2) ** 2
    peak = matmul_peak()

    def onednn():
        return torch.mkldnn_convolution(x, weight, None, [0, 0, 0], [1, 1, 1], [1, 1, 1], 1)

    ref = onednn()
    t_ref = best_time(onednn, args.repeats)
    print(f"layer {c} -> {c} channels, input {d} x {n} x {n}: {flops / 1e9:.1f} GFLOP as a direct convolution; "
          f"matmul peak {peak:.0f} GFLOP/s")
    print(f"oneDNN direct (channels-last)      {t_ref:6.3f} s  {flops / t_ref / 1e9:5.0f} GFLOP/s")

    try:
        x2 = x[0].permute(1, 0, 2, 3).contiguous()
        w2 = torch.cat([weight[:, :, t] for t in range(3)]).contiguous()
        torch._nnpack_spatial_convolution(x2, w2, torch.zeros(3 * c), [0, 0], [1, 1])
        print("NNPACK 2-D convolution: runs")
    except RuntimeError as e:
        print(f"NNPACK 2-D convolution (available: {torch.backends.nnpack.is_available()}): fails here: {e}")

    xl = x[0].permute(1, 2, 3, 0)  # (D, H, W, C): the channels-last memory as it is
    u = kernel_transform(weight)

    def winograd():
        return winograd_inplane(xl, u, c)

    got = winograd().permute(3, 0, 1, 2)[None]
    t_w = best_time(winograd, args.repeats)
    err = (got - ref).abs().max().item()
    print(f"Winograd F(2x2,3x3) in-plane, eager {t_w:6.3f} s  {flops / t_w / 1e9:5.0f} GFLOP/s equivalent "
          f"({t_w / t_ref:.2f}x oneDNN's time); largest difference {err:.1e} (outputs up to "
          f"{ref.abs().max().item():.1f})")
    # its multiplications alone: one slab's batched product (4 depths), scaled to the layer's d - 2 depths
    tiles = ((n - 2) // 2) ** 2
    v3 = torch.randn(16, 4 * tiles, 3 * c)
    t_mm = best_time(lambda: torch.bmm(v3, u), args.repeats) * (d - 2) / 4
    print(f"  of which the products (bmm of (16, {4 * tiles}, {3 * c}) by (16, {3 * c}, {c}) per 4 depths) "
          f"{t_mm:6.3f} s, {2 * 16 * 3 * c * c * tiles * (d - 2) / t_mm / 1e9:.0f} GFLOP/s; the rest is the "
          f"transforms' memory traffic")


if __name__ == "__main__":
    main()

"""The supervised step's convolutions one at a time: how fast oneDNN's kernels run them on this machine.

A DeepMedic training step (8 segments of 54 x 69 x 69, two channels, train mode) runs every 3^3 and 1^3
convolution of both pathways and of the head once forward and once backward. This script records each
convolution's input shape from a real forward, then times, for each alone, in the same process:

* the forward (``F.conv3d``, as the trainer's modules call it);
* the backward (gradient of the weight and, except for each pathway's first layer, whose input is the
  data, of the input): ``torch.autograd.grad`` minus the forward.

It prints per layer seconds and GFLOP/s (2 per multiply-add; the backward counts 2x the forward FLOPs, 1x
for a first layer), the totals, and beside them the whole bare forward + backward of the network on the
same batch and the fp32 matmul peak of the process. The efficiency of the kernels alone bounds the step's:
the step also runs BatchNorm, PReLU, dropout, the loss and the optimiser.

usage: python benchmarks/speed/conv_kernels.py [--segments 8] [--repeats 3]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from machine import best_time, matmul_peak  # benchmarks/speed/machine.py: this folder is the script's sys.path[0]

PATCH = (54, 69, 69)


def recorded_convolutions(net: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Conv3d, tuple[int, ...]]]:
    """(name, module, input shape) of every Conv3d in the order one train-mode forward of ``net`` calls them."""
    seen: list[tuple[str, nn.Conv3d, tuple[int, ...]]] = []
    handles = [m.register_forward_hook(lambda m, inp, out, name=name: seen.append((name, m, tuple(inp[0].shape))))
               for name, m in net.named_modules() if isinstance(m, nn.Conv3d)]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def time_convolution(conv: nn.Conv3d, shape: tuple[int, ...], input_grad: bool, repeats: int) -> tuple[float, float, int]:
    """(forward s, backward s, forward FLOPs) of ``conv`` alone on a random input of ``shape``."""
    x = torch.randn(shape, requires_grad=input_grad)
    weight = conv.weight.detach().clone().requires_grad_(True)
    bias = None if conv.bias is None else conv.bias.detach().clone().requires_grad_(True)
    params = [weight] + ([bias] if bias is not None else [])
    y = F.conv3d(x, weight, bias)
    grad = torch.randn_like(y)
    forward = best_time(lambda: F.conv3d(x, weight, bias), repeats)
    wrt = ([x] if input_grad else []) + params
    both = best_time(lambda: torch.autograd.grad(F.conv3d(x, weight, bias), wrt, grad), repeats)
    k = 1
    for s in conv.kernel_size:
        k *= s
    flops = 2 * conv.in_channels * conv.out_channels * k * y[0, 0].numel() * y.shape[0]
    return forward, max(both - forward, 0.0), flops


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from nnunet_mt.architectures.deepmedic import DeepMedic

    torch.manual_seed(0)
    net = DeepMedic(2, 2).train()
    x = torch.randn(args.segments, 2, *PATCH)
    convs = recorded_convolutions(net, x)
    peak = matmul_peak()

    def step():
        net.zero_grad(set_to_none=True)
        net(x).float().mean().backward()

    step_s = best_time(step, args.repeats)
    print(f"{args.segments} segments of {' x '.join(map(str, PATCH))}; matmul peak {peak:.0f} GFLOP/s; "
          f"{torch.get_num_threads()} threads\n")
    print("| convolution | input | forward s | GFLOP/s | backward s | GFLOP/s |")
    print("|---|---|---|---|---|---|")
    total_f = total_b = flop_f = flop_b = 0.0
    firsts = {"normal.layers.0.conv", "subsampled.layers.0.conv"}
    for name, conv, shape in convs:
        first = name in firsts
        fwd, bwd, flops = time_convolution(conv, shape, input_grad=not first, repeats=args.repeats)
        bflops = flops * (1 if first else 2)
        total_f, total_b, flop_f, flop_b = total_f + fwd, total_b + bwd, flop_f + flops, flop_b + bflops
        print(f"| {name} | {'x'.join(map(str, shape[1:]))} | {fwd:.3f} | {flops / fwd / 1e9:.0f} | {bwd:.3f} | "
              f"{bflops / max(bwd, 1e-9) / 1e9:.0f} |")
    kernels = total_f + total_b
    flops = flop_f + flop_b
    print(f"\nconvolutions alone: forward {total_f:.3f} s ({flop_f / total_f / peak / 1e9:.0%} of peak), backward "
          f"{total_b:.3f} s ({flop_b / total_b / peak / 1e9:.0%}), together {kernels:.3f} s for "
          f"{flops / 1e9:.0f} GFLOP = {flops / kernels / peak / 1e9:.0%} of the matmul peak")
    print(f"whole bare forward + backward of the network: {step_s:.3f} s = {flops / step_s / peak / 1e9:.0%} of peak; "
          f"the convolutions are {kernels / step_s:.0%} of it")


if __name__ == "__main__":
    main()

"""Training-step variants that were measured and not adopted: channels-last memory and torch.compile on CPU.

A bare DeepMedic (paper widths) forward + backward on 8 random segments of 54 x 69 x 69 (cross-entropy on
the 6 x 21 x 21 output), alternating the variant with the plain eager module in one process, so both see
the same machine state. Prints seconds per step for each run and the compile time.

usage: python benchmarks/speed/training_variants.py [--runs 3] [--no-compile]
"""
from __future__ import annotations

import argparse
import copy
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (about a minute to compile)")
    args = p.parse_args()
    import torch

    from nnunet_mt.architectures.deepmedic import DeepMedic

    torch.manual_seed(0)
    net = DeepMedic(2, 2).train()
    x = torch.randn(8, 2, 54, 69, 69)
    y = torch.randint(0, 2, (8, 6, 21, 21))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(module, inputs) -> float:
        start = time.perf_counter()
        module.zero_grad()
        loss_fn(module(inputs), y).backward()
        return time.perf_counter() - start

    variants = {"channels-last": (copy.deepcopy(net).to(memory_format=torch.channels_last_3d),
                                  x.contiguous(memory_format=torch.channels_last_3d))}
    if not args.no_compile:
        compiled = torch.compile(net)
        print(f"torch.compile: first step (compilation) {step(compiled, x):.1f} s", flush=True)
        variants["torch.compile"] = (compiled, x)
    step(net, x)
    for name, (module, inputs) in variants.items():
        step(module, inputs)
        for _ in range(args.runs):
            print(f"{name}: {step(module, inputs):.2f} s/step, eager contiguous: {step(net, x):.2f} s/step",
                  flush=True)


if __name__ == "__main__":
    main()

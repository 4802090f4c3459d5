"""What the benchmarks measure the machine by: the fp32 matrix-product peak, in the benchmark's own process
(machines differ and are shared, so efficiencies are taken against the peak measured in the same run), and
the best-of-repeats timer they share."""
from __future__ import annotations

import time


def matmul_peak(repeats: int = 10, n: int = 2048) -> float:
    """fp32 GFLOP/s of an ``n`` x ``n`` matrix product (``torch.mm``), best of ``repeats``."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def best_time(fn, repeats: int) -> float:
    """Seconds of ``fn()``, best of ``repeats`` after one untimed warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best

"""Paired significance tests of one method against the reference method on the same test cases.

The paper marks results that differ from the mean teacher by a paired Student's t-test at
p < 0.05 (Cui et al., IPMI 2019, Tables 2-3); the Wilcoxon signed-rank test is reported beside it
because with a handful of test cases normality of the differences cannot be assumed.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
from scipy import stats

COMPARISON_KEYS = ("n", "mean_reference", "mean_other", "mean_difference", "t", "p_t", "w", "p_w")


def paired_comparison(reference: Sequence[float], other: Sequence[float]) -> dict:
    """Paired t-test and Wilcoxon signed-rank test of ``reference`` vs ``other`` (same cases, same order).

    Returns ``n`` (pairs used), ``mean_reference``, ``mean_other``, ``mean_difference`` (reference - other),
    ``t``, ``p_t`` (``scipy.stats.ttest_rel(reference, other)``, two-sided) and ``w``, ``p_w``
    (``scipy.stats.wilcoxon(reference, other)``, two-sided, scipy's defaults: zero differences dropped).

    Conventions:

    - pairs where either value is NaN (e.g. Dice of a case where both masks are empty) are dropped;
    - with fewer than 2 pairs the test statistics and p-values are NaN (means are NaN when n = 0);
    - when every difference is zero both tests are undefined (scipy returns NaN or divides 0 by 0):
      ``t`` and ``w`` are NaN and ``p_t`` = ``p_w`` = 1.0, i.e. no evidence of a difference;
    - when every difference is the same non-zero value scipy's t-test gives t = ±inf and p_t = 0
      (zero variance), kept as scipy returns it.

    Raises ValueError when the sequences differ in length.
    """
    ref = np.asarray(reference, dtype=float).ravel()
    oth = np.asarray(other, dtype=float).ravel()
    if ref.shape != oth.shape:
        raise ValueError(f"paired comparison needs equal lengths, got {ref.size} reference values "
                         f"and {oth.size} other values")
    keep = ~(np.isnan(ref) | np.isnan(oth))
    ref, oth = ref[keep], oth[keep]
    n = int(ref.size)
    nan = float("nan")
    out = {"n": n, "mean_reference": float(ref.mean()) if n else nan, "mean_other": float(oth.mean()) if n else nan,
           "mean_difference": float((ref - oth).mean()) if n else nan, "t": nan, "p_t": nan, "w": nan, "p_w": nan}
    if n < 2:
        return out
    if np.all(ref == oth):
        out.update(p_t=1.0, p_w=1.0)
        return out
    # scipy warns when the differences are nearly constant ("precision loss") or too few for its
    # normal approximation; the returned values are still the test's answer, so keep the log clean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        t_res = stats.ttest_rel(ref, oth)
        w_res = stats.wilcoxon(ref, oth)
    out.update(t=float(t_res.statistic), p_t=float(t_res.pvalue), w=float(w_res.statistic), p_w=float(w_res.pvalue))
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation with ddof=1, n) over the non-NaN values; std is NaN for n < 2."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan, int(v.size)

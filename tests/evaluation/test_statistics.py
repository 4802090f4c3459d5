import math
import warnings

import numpy as np
import pytest
from scipy import stats

from nnunet_mt.evaluation.statistics import COMPARISON_KEYS, mean_std, paired_comparison

REFERENCE = [0.61, 0.72, 0.55, 0.80, 0.67, 0.59]
OTHER = [0.58, 0.70, 0.50, 0.79, 0.60, 0.57]


def test_against_scipy_and_by_hand():
    r = paired_comparison(REFERENCE, OTHER)
    assert set(r) == set(COMPARISON_KEYS)
    # differences 0.03, 0.02, 0.05, 0.01, 0.07, 0.02: mean 0.2/6, sample sd by hand
    d = [0.03, 0.02, 0.05, 0.01, 0.07, 0.02]
    mean = sum(d) / 6
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 5)
    assert r["n"] == 6
    assert r["mean_difference"] == pytest.approx(0.2 / 6)
    assert r["mean_reference"] == pytest.approx(3.94 / 6) and r["mean_other"] == pytest.approx(3.74 / 6)
    assert r["t"] == pytest.approx(mean / (sd / math.sqrt(6)))
    assert r["t"] == pytest.approx(3.6273812505500582)
    t_ref = stats.ttest_rel(REFERENCE, OTHER)
    assert (r["t"], r["p_t"]) == pytest.approx((t_ref.statistic, t_ref.pvalue))
    assert r["p_t"] == pytest.approx(0.0151020067)
    w_ref = stats.wilcoxon(REFERENCE, OTHER)
    assert (r["w"], r["p_w"]) == pytest.approx((w_ref.statistic, w_ref.pvalue))
    # all 6 differences positive: W = 0 and the exact two-sided p = 2 / 2**6
    assert (r["w"], r["p_w"]) == (0.0, pytest.approx(2 / 64))


def test_direction_is_reference_minus_other():
    r = paired_comparison(OTHER, REFERENCE)
    assert r["mean_difference"] == pytest.approx(-0.2 / 6)
    assert r["t"] == pytest.approx(-3.6273812505500582)
    assert r["p_t"] == pytest.approx(0.0151020067)


def test_pairs_with_a_nan_are_dropped():
    nan = float("nan")
    r = paired_comparison([*REFERENCE, nan, 0.9], [*OTHER, 0.4, nan])
    assert r == pytest.approx(paired_comparison(REFERENCE, OTHER))
    assert r["n"] == 6


def test_fewer_than_two_pairs_gives_nan_statistics():
    r = paired_comparison([0.5, float("nan")], [0.4, 0.3])
    assert r["n"] == 1 and r["mean_difference"] == pytest.approx(0.1)
    assert all(math.isnan(r[k]) for k in ("t", "p_t", "w", "p_w"))
    empty = paired_comparison([], [])
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in COMPARISON_KEYS if k != "n")


def test_all_zero_differences_mean_no_evidence_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = paired_comparison([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert r["n"] == 3 and r["mean_difference"] == 0.0
    assert math.isnan(r["t"]) and math.isnan(r["w"])
    assert r["p_t"] == 1.0 and r["p_w"] == 1.0


def test_length_mismatch_names_the_lengths():
    with pytest.raises(ValueError, match="6 reference values and 5 other values"):
        paired_comparison(REFERENCE, OTHER[:5])


def test_mean_std_is_the_sample_std_over_non_nan_values():
    mean, std, n = mean_std([0.5, 0.7, float("nan"), 0.9])
    assert (mean, n) == (pytest.approx(0.7), 3)
    assert std == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1)) and std == pytest.approx(0.2)

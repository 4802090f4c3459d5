"""An empty prediction of a lesion scores Dice 0, is counted as a miss beside HD95 (which
it has none of), and every method's mean runs over the same cases. Hand-computed on three cases:

==========  =====================  ===================================  ==========================
case        reference              A (the reference method)             B
==========  =====================  ===================================  ==========================
c1          lesion                 Dice 0.8, HD95 2 mm                  Dice 0.6, HD95 4 mm
c2          lesion                 Dice 0.5, HD95 6 mm                  empty: Dice 0, HD95 -, missed
c3          no lesion              empty: Dice -, HD95 -                false positive: Dice 0, HD95 -
==========  =====================  ===================================  ==========================

Dice is defined for both methods on c1, c2: A 0.65, B 0.3 (n = 2 each; before, B's mean was 0.2 over 3
cases beside A's 0.65 over 2). HD95 is defined for both on c1 only: A 2, B 4 (n = 1; before, A's was 4
over c1, c2 and B's missed lesion simply vanished), with B's miss reported beside it.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from nnunet_mt.evaluation.metrics import case_metrics
from nnunet_mt.evaluation.report import CountResult, dice_summary, metric_summary, statistics_rows, write_report

NAN = math.nan


def _m(dice, hd95, missed):
    return {"dice": dice, "hd95_mm": hd95, "avd_ml": 0.0, "lesion_f1": NAN, "missed": missed}


METRICS = {"A": {"c1": _m(0.8, 2.0, 0), "c2": _m(0.5, 6.0, 0), "c3": _m(NAN, NAN, 0)},
           "B": {"c1": _m(0.6, 4.0, 0), "c2": _m(0.0, NAN, 1), "c3": _m(0.0, NAN, 0)}}
RESULT = CountResult(count=5, images={}, references={}, predictions={}, metrics=METRICS)


def test_an_empty_prediction_of_a_lesion_is_dice_0_and_a_miss():
    lesion = np.zeros((4, 6, 6), np.uint8)
    lesion[1:3, 1:3, 1:3] = 1
    empty = np.zeros_like(lesion)
    missed = case_metrics(empty, lesion, (1.0, 1.0, 1.0))
    assert missed["dice"] == 0.0 and math.isnan(missed["hd95_mm"]) and missed["missed"] == 1
    assert case_metrics(lesion, lesion, (1.0, 1.0, 1.0))["missed"] == 0
    assert case_metrics(empty, empty, (1.0, 1.0, 1.0))["missed"] == 0  # nothing to miss
    assert case_metrics(lesion, empty, (1.0, 1.0, 1.0))["missed"] == 0  # a false positive, not a miss


def test_dice_means_use_the_same_cases_in_every_row():
    rows = {r["method"]: r for r in dice_summary([RESULT], ["A", "B"], "A")}
    assert rows["A"]["n_cases"] == rows["B"]["n_cases"] == 2
    assert rows["A"]["dice_mean"] == pytest.approx(0.65)
    assert rows["B"]["dice_mean"] == pytest.approx(0.3)
    assert rows["B"]["dice_std"] == pytest.approx(math.sqrt(0.18))  # (0.6 - 0.3)^2 + (0 - 0.3)^2, ddof 1


def test_hd95_means_use_the_cases_both_masks_have_for_every_method_and_count_the_misses():
    rows = {r["method"]: r for r in metric_summary(RESULT, ["A", "B"], "A", "hd95_mm")}
    assert rows["A"]["n"] == rows["B"]["n"] == 1
    assert rows["A"]["mean"] == 2.0 and rows["B"]["mean"] == 4.0
    assert rows["A"]["missed"] == 0 and rows["B"]["missed"] == 1


def test_paired_tests_use_the_cases_of_the_table():
    stats = {r["metric"]: r for r in statistics_rows([RESULT], ["A", "B"], "A")}
    assert stats["dice"]["n"] == 2 and stats["dice"]["mean_difference"] == pytest.approx(0.35)
    assert stats["hd95_mm"]["n"] == 1 and stats["hd95_mm"]["mean_difference"] == pytest.approx(-2.0)


def test_report_states_the_rule_and_shows_the_misses(tmp_path):
    write_report(tmp_path, [RESULT], ["A", "B"], reference_method="A")
    text = (tmp_path / "report.md").read_text()
    assert "4.0000 ± n/a (n = 1; 1 missed)" in text  # B's HD95 cell
    assert "every method is averaged over the same cases" in text
    assert "Dice 0" in (tmp_path / "table_dice.md").read_text()

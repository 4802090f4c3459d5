"""The screen's choice rule on hand-made screening rows."""
import math

import pytest

from nnunet_mt.evaluation.choice import choose, main, method_scores, read_screening
from nnunet_mt.evaluation.diagnostics import screening_rows, write_screening


def _rows(method, dice_by_step, network="model", volume=1.0):
    return [{"method": method, "network": network, "step": s, "dice_mean": d, "volume_ratio": volume}
            for s, d in dice_by_step.items()]


ROWS = (_rows("DeepMedic", {0: 0.4, 600: 0.50, 800: 0.52, 1000: 0.51})  # score 0.51
        + _rows("MeanTeacher", {600: 0.45, 800: 0.46, 1000: 0.44})  # 0.45
        + _rows("MeanTeacher-kl", {600: 0.52, 800: 0.53, 1000: 0.54})  # 0.53
        + _rows("MeanTeacher-kl", {600: 0.9, 800: 0.9, 1000: 0.9}, network="student")  # students do not count
        + _rows("MeanTeacher-beta0", {600: 0.7, 800: 0.7, 1000: 0.7}))  # a control, never chosen


def test_scores_are_the_model_mean_over_the_rule_steps():
    scores = method_scores(ROWS)
    assert scores["DeepMedic"] == pytest.approx(0.51)
    assert scores["MeanTeacher-kl"] == pytest.approx(0.53)
    assert math.isnan(method_scores(ROWS, steps=(600, 1200))["DeepMedic"])  # a missing snapshot: no score


def test_best_candidate_chosen_only_with_the_margin():
    chosen, scores = choose(ROWS)
    assert chosen == "MeanTeacher-kl"  # 0.53 >= 0.51 + 0.01; the control's 0.7 is not a candidate
    assert choose(ROWS, margin=0.03)[0] is None  # 0.53 < 0.51 + 0.03
    with pytest.raises(ValueError, match="no score for the baseline DeepMedic"):
        choose(ROWS, steps=(1200,))


def test_the_runners_csv_round_trips_into_the_rule(tmp_path, capsys):
    per_method = {"DeepMedic": {"dice": [{"model": "network_weights", "step": s, "case": c, "dice": d}
                                         for s, d in ((600, 0.5), (800, 0.5), (1000, 0.5)) for c in ("a", "b")],
                                "distance": []},
                  "MeanTeacher-squared": {"dice": [{"model": "network_weights", "step": s, "case": c, "dice": d}
                                                   for s, d in ((600, 0.6), (800, 0.6), (1000, 0.57))
                                                   for c in ("a", "b")], "distance": []}}
    path = tmp_path / "screening_n10.csv"
    write_screening(screening_rows(10, per_method, {}), path)
    rows = read_screening(path)
    assert choose(rows) == ("MeanTeacher-squared", pytest.approx({"DeepMedic": 0.5, "MeanTeacher-squared": 0.59}))
    main([str(path)])
    assert "chosen: MeanTeacher-squared" in capsys.readouterr().out

"""The screen's choice rule on hand-made screening rows."""
import math

import pytest

from nnunet_mt.evaluation.choice import (CONTROLS, choose, is_candidate, main, method_scores, read_screening,
                                         scores_table)
from nnunet_mt.evaluation.diagnostics import screening_rows, write_screening


def _rows(method, dice_by_step, network="model", volume=1.0):
    return [{"method": method, "network": network, "step": s, "dice_mean": d, "volume_ratio": volume}
            for s, d in dice_by_step.items()]


ROWS = (_rows("DeepMedic", {0: 0.4, 600: 0.50, 800: 0.52, 1000: 0.51})  # score 0.51
        + _rows("MeanTeacher", {600: 0.45, 800: 0.46, 1000: 0.44})  # 0.45
        + _rows("MeanTeacher-kl", {600: 0.52, 800: 0.53, 1000: 0.54})  # 0.53
        + _rows("MeanTeacher-kl", {600: 0.9, 800: 0.9, 1000: 0.9}, network="student")  # students do not count
        + _rows("MeanTeacher-no-consistency", {600: 0.7, 800: 0.7, 1000: 0.7})  # a control, never chosen
        + _rows("MeanTeacher-beta0-annotated-bn", {600: 0.8, 800: 0.8, 1000: 0.8}))  # a control, named as before


def test_scores_are_the_model_mean_over_the_rule_steps():
    scores = method_scores(ROWS)
    assert scores["DeepMedic"] == pytest.approx(0.51)
    assert scores["MeanTeacher-kl"] == pytest.approx(0.53)
    assert math.isnan(method_scores(ROWS, steps=(600, 1200))["DeepMedic"])  # a missing snapshot: no score


def test_best_candidate_chosen_only_with_the_margin():
    chosen, scores = choose(ROWS)
    assert chosen == "MeanTeacher-kl"  # 0.53 >= 0.51 + 0.01; the controls' 0.7 and 0.8 are not candidates
    assert scores["MeanTeacher-beta0-annotated-bn"] == pytest.approx(0.8)  # scored under the name the file has
    assert choose(ROWS, margin=0.03)[0] is None  # 0.53 < 0.51 + 0.03
    with pytest.raises(ValueError, match="no score for the baseline DeepMedic"):
        choose(ROWS, steps=(1200,))


def test_controls_are_no_candidates_under_their_old_or_new_name():
    assert [is_candidate(m) for m in ("MeanTeacher", "MeanTeacher-kl", "DeepMedic", "PseudoLabel")] == \
        [True, True, False, False]
    assert not any(is_candidate(m) for m in (*CONTROLS, "MeanTeacher-beta0", "MeanTeacher-beta0-annotated-bn"))


def test_the_scores_table_ranks_and_marks_what_the_rule_does_not_choose_from():
    rows = ROWS + _rows("PseudoLabel", {0: 0.4, 600: 0.49, 800: 0.48, 1000: 0.50}, volume=1.2)  # 0.49
    lines = scores_table(rows).splitlines()[2:]
    assert [line.split(" | ")[0] for line in lines] == [
        "| MeanTeacher-beta0-annotated-bn (control)", "| MeanTeacher-no-consistency (control)", "| MeanTeacher-kl",
        "| DeepMedic", "| PseudoLabel (not a candidate)", "| MeanTeacher"]
    assert lines[4] == "| PseudoLabel (not a candidate) | 0.4900 | 1.20–1.20 |"


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


def _dice(by_step):
    return {"dice": [{"model": "network_weights", "step": s, "case": c, "dice": d}
                     for s, d in by_step for c in ("a", "b")], "distance": []}


def test_a_screen_still_running_is_scored_from_its_cached_diagnostics(tmp_path, capsys):
    """The diagnostics folder of a screen with two of its three methods done: their rows are what the runner's
    CSV would hold, volume included; the rule waits for the missing candidate, then chooses."""
    import json

    folder = tmp_path / "diagnostics"
    folder.mkdir()
    deepmedic = _dice(((600, 0.5), (800, 0.5), (1000, 0.5)))
    squared = _dice(((600, 0.6), (800, 0.6), (1000, 0.57)))
    volume = {"summary": [{"model": "network_weights", "step": 1000, "pooled_volume_ratio": 1.25,
                           "pooled_precision": 0.5, "pooled_recall": 0.75}]}
    (folder / "snapshots_DeepMedic.json").write_text(json.dumps(deepmedic))
    (folder / "snapshots_MeanTeacher-squared.json").write_text(json.dumps(squared))
    (folder / "volume_MeanTeacher-squared.json").write_text(json.dumps(volume))
    written = tmp_path / "screening_n10.csv"
    main([str(folder), "--count", "10", "--methods", "DeepMedic", "MeanTeacher-squared", "MeanTeacher-kl",
          "--write", str(written)])
    out = capsys.readouterr().out
    assert "chosen: not yet; 1 candidate(s) not scored: MeanTeacher-kl" in out
    assert "| MeanTeacher-squared | 0.5900 | 1.25–1.25 |" in out
    expected = tmp_path / "expected.csv"
    write_screening(screening_rows(10, {"DeepMedic": deepmedic, "MeanTeacher-squared": squared},
                                   {"MeanTeacher-squared": volume}), expected)
    assert written.read_text() == expected.read_text()
    row = next(r for r in read_screening(written) if r["method"] == "MeanTeacher-squared" and r["step"] == 1000)
    assert (row["volume_ratio"], row["precision"], row["recall"]) == (1.25, 0.5, 0.75)
    # every candidate in (the default: every cached method): the rule chooses
    main([str(folder), "--count", "10"])
    assert "chosen: MeanTeacher-squared" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(folder)])  # a folder needs its count
    assert "give its --count" in capsys.readouterr().err

"""What the report says when it no longer covers an earlier run's methods or counts."""
from __future__ import annotations

import json

from nnunet_mt.runner.results import announce_replaced_report


def test_report_rewritten_for_fewer_methods_says_what_it_drops(tmp_path, capsys):
    report = tmp_path / "report"
    announce_replaced_report(report, ["DeepMedic", "MeanTeacher"], [10, 20])
    announce_replaced_report(report, ["DeepMedic", "MeanTeacher"], [10, 20])
    assert "note:" not in capsys.readouterr().out
    announce_replaced_report(report, ["DeepMedic"], [10])
    out = capsys.readouterr().out
    assert "previous report also had methods MeanTeacher; counts 20." in out and "stay in the work folder" in out
    assert json.loads((report / "contents.json").read_text()) == {"methods": ["DeepMedic"], "counts": [10]}


def test_a_method_renamed_since_the_earlier_report_is_not_dropped(tmp_path, capsys):
    report = tmp_path / "report"
    (report).mkdir()
    (report / "contents.json").write_text(json.dumps({"methods": ["DeepMedic", "MeanTeacher-beta0"], "counts": [10]}))
    announce_replaced_report(report, ["DeepMedic", "MeanTeacher-no-consistency"], [10])
    assert "note:" not in capsys.readouterr().out
    announce_replaced_report(report, ["DeepMedic"], [10])
    assert "previous report also had methods MeanTeacher-no-consistency." in capsys.readouterr().out

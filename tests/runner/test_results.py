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

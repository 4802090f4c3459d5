"""How many processes nnUNetv2_predict gets for the test scans."""
from __future__ import annotations

import os
from types import SimpleNamespace

from nnunet_mt.runner.reproduction import Reproduction

def test_prediction_processes(monkeypatch):
    repro = object.__new__(Reproduction)
    repro.args = SimpleNamespace(num_processes=6, predict_processes=None)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert repro.predict_processes() == 0  # sequential on small machines
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert repro.predict_processes() == 6
    repro.args.predict_processes = 3
    assert repro.predict_processes() == 3

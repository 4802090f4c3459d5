"""What a test subprocess sees of the environment (conftest's ``subprocess_env``): built afresh per
command, none of the caller's nnUNet_* variables, the fixed settings, the folders, then the overrides."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TEST_SETTINGS, NNUNetEnv, subprocess_env


def test_the_callers_nnunet_variables_do_not_leak_in(monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_mt_epochs", "99")
    monkeypatch.setenv("nnUNet_n_proc_DA", "8")
    monkeypatch.setenv("nnUNet_results", "/somewhere/else")
    monkeypatch.setenv("SOME_OTHER_VARIABLE", "kept")
    env = subprocess_env({"nnUNet_results": tmp_path})
    assert "nnUNet_mt_epochs" not in env and "nnUNet_n_proc_DA" not in env
    assert env["nnUNet_results"] == str(tmp_path) and env["SOME_OTHER_VARIABLE"] == "kept"
    assert {k: env[k] for k in TEST_SETTINGS} == TEST_SETTINGS and env["nnUNet_extTrainer"]


def test_overrides_set_and_unset_and_nothing_is_shared(tmp_path):
    nnunet = NNUNetEnv(tmp_path)
    first = nnunet.environment({"nnUNet_n_proc_DA": "0", "nnUNet_mt_final_validation": None})
    assert first["nnUNet_n_proc_DA"] == "0" and "nnUNet_mt_final_validation" not in first
    first["nnUNet_raw"] = "changed by a test"
    again = nnunet.env
    assert again is not first and again["nnUNet_raw"] == str(Path(tmp_path) / "raw")
    assert again["nnUNet_mt_final_validation"] == "0" and "nnUNet_n_proc_DA" not in again
    with pytest.raises(TypeError, match="nnUNet_mt_epochs"):
        nnunet.environment({"nnUNet_mt_epochs": 3})

"""What a test subprocess sees of the environment (conftest's ``subprocess_env``): built afresh per
command, none of the caller's nnUNet_* variables, the fixed settings, the folders, then the overrides; and the
groups in which pytest-xdist sends the tests to its workers."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TEST_SETTINGS, NNUNetEnv, pytest_collection_modifyitems, subprocess_env


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


class _Item:
    """What the grouping hook reads and writes of a collected test."""

    def __init__(self, nodeid: str, *fixturenames: str, group: str | None = None) -> None:
        self.nodeid, self.fixturenames = nodeid, list(fixturenames)
        self.marks = {"xdist_group": pytest.mark.xdist_group(group).mark} if group else {}

    def get_closest_marker(self, name):
        return self.marks.get(name)

    def add_marker(self, mark) -> None:
        self.marks[mark.mark.name] = mark.mark


def test_a_file_is_one_group_and_the_screens_readers_another():
    items = [_Item("tests/commands/test_reproduce.py::test_resume", "reproduction", "tmp_path"),
             _Item("tests/commands/test_reproduce.py::test_screen_rows", "screen"),
             _Item("tests/commands/test_score_models.py::test_scores", "screen", "tmp_path"),
             _Item("tests/commands/test_score_models.py::test_refusal[a-b]", "tmp_path"),
             _Item("tests/x/test_y.py::test_z", "screen", group="mine")]  # a test's own group is kept
    pytest_collection_modifyitems(None, items)
    assert [item.marks["xdist_group"].args[0] for item in items] == [
        "tests/commands/test_reproduce.py", "screen", "screen", "tests/commands/test_score_models.py", "mine"]


def test_this_session_grouped_this_test_by_its_file(request):
    assert request.node.get_closest_marker("xdist_group").args == ("tests/test_conftest_env.py",)

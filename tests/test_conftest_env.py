"""What a test subprocess sees of the environment (conftest's ``subprocess_env``): built afresh per
command, none of the caller's nnUNet_* variables, the fixed settings, the folders, then the overrides; and the
groups in which pytest-xdist sends the tests to its workers."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TEST_SETTINGS, NNUNetEnv, subprocess_env, worker_group


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


def test_a_file_is_one_group_and_the_screens_readers_join_its_file():
    assert worker_group("tests/commands/test_reproduce.py::test_resume") == "tests/commands/test_reproduce.py"
    assert worker_group("tests/commands/test_score_models.py::test_refusal[a::b]") == "tests/commands/test_reproduce.py"
    assert worker_group("tests/utils/test_atomic.py::test_x[1]") == "tests/utils/test_atomic.py"


def _files_whose_tests_take(fixture: str) -> set[str]:
    """The test files (relative to the repository) with a test function that takes ``fixture`` as an argument."""
    root = Path(__file__).resolve().parents[1]
    files = set()
    for path in sorted((root / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test")
                    and fixture in [arg.arg for arg in node.args.args]):
                files.add(path.relative_to(root).as_posix())
    return files


def test_every_reader_of_the_screen_is_in_the_group_that_builds_it():
    """The session's ``screen`` fixture takes minutes to build: a reader outside its group would build it a
    second time in the other worker."""
    readers = _files_whose_tests_take("screen")
    assert {"tests/commands/test_reproduce.py", "tests/commands/test_score_models.py"} <= readers, readers
    assert {worker_group(f"{f}::test") for f in readers} == {"tests/commands/test_reproduce.py"}, readers
    assert _files_whose_tests_take("no_such_fixture_anywhere") == set()


def test_xdist_runs_a_files_tests_in_one_worker():
    """Under ``-n 2``, as the README runs the suite, this file's light tests all run in one worker."""
    here = Path(__file__).resolve()
    run = subprocess.run([sys.executable, "-m", "pytest", "-v", "-n", "2", "-p", "no:cacheprovider", str(here),
                          "-k", "not xdist"], cwd=here.parents[1], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    workers = [line.split("]")[0] for line in run.stdout.splitlines() if " PASSED " in line]
    light = [name for name in globals() if name.startswith("test_") and "xdist" not in name]
    assert len(workers) == len(light) >= 4 and len(set(workers)) == 1, run.stdout[-3000:]

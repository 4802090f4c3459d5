"""The screen's driver script (``results/screen-n10/run.sh``): what it refuses before it creates or trains
anything. Its trainings themselves are the runner's, tested end to end in tests/commands/test_reproduce.py."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "results" / "screen-n10" / "run.sh"


def _run(tmp_path: Path, *methods: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("CODE", "SEED")}
    # no package on PATH: a refusal that regressed fails at once instead of generating the cohort
    environ.update(PATH="/usr/bin:/bin", WORK=str(tmp_path / "work"), OUT=str(tmp_path / "out"), **env)
    return subprocess.run(["bash", str(SCRIPT), *methods], cwd=tmp_path, env=environ, capture_output=True, text=True)


def _order(stderr: str) -> list[str]:
    return stderr.split("(the order of README.md: ", 1)[1].rstrip().rstrip(")").split()


def test_without_a_method_it_prints_the_screens_order_with_the_controls_name_in_the_code_that_runs(tmp_path):
    run = _run(tmp_path)
    assert run.returncode == 2 and _order(run.stderr)[0] == "DeepMedic", run.stderr
    assert _order(run.stderr)[-2:] == ["MeanTeacher", "MeanTeacher-no-consistency"]
    frozen = tmp_path / "export" / "nnunet_mt"  # the code before issue 30 still had nnunet_mt/reproduce.py
    frozen.mkdir(parents=True)
    (frozen / "reproduce.py").write_text("")
    run = _run(tmp_path, CODE=str(tmp_path / "export"))
    assert run.returncode == 2 and _order(run.stderr)[-1] == "MeanTeacher-beta0", run.stderr
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()


def test_a_bad_seed_or_an_unknown_method_is_refused_before_anything_is_created(tmp_path):
    run = _run(tmp_path, "DeepMedic", SEED="1x")
    assert run.returncode == 2 and "SEED must be a non-negative integer, not '1x'" in run.stderr
    run = _run(tmp_path, "DeepMedic", "MeanTeacher-relased", SEED="2")
    assert run.returncode == 2 and run.stderr.startswith("MeanTeacher-relased: not a method of this screen"), run.stderr
    run = _run(tmp_path, "MeanTeacher-no-consistency", "MeanTeacher-beta0")  # the frozen name, with today's code
    assert run.returncode == 2 and run.stderr.startswith("MeanTeacher-beta0: not a method"), run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []

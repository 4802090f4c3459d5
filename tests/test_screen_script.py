"""The screen's driver script (``results/screen-n10/run.sh``): what it refuses before it creates or trains
anything, and how it exports a trained method's model and merges its rows (``merge_rows.py``). Its trainings
themselves are the runner's, tested end to end in tests/commands/test_reproduce.py."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "results" / "screen-n10" / "run.sh"


def _run(tmp_path: Path, *methods: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("CODE", "SEED")}
    # no package on PATH: a refusal that regressed fails at once instead of generating the cohort
    environ.update(PATH="/usr/bin:/bin", WORK=str(tmp_path / "work"), OUT=str(tmp_path / "out"), **env)
    return subprocess.run(["bash", str(SCRIPT), *methods], cwd=tmp_path, env=environ, capture_output=True, text=True)


def _order(stderr: str) -> list[str]:
    return stderr.split("(the order of README.md: ", 1)[1].split(";")[0].split()


def _second_round(stderr: str) -> str:
    return stderr.split("; second round: ", 1)[1].rstrip().rstrip(")")


def test_without_a_method_it_prints_the_screens_order_with_the_controls_name_in_the_code_that_runs(tmp_path):
    run = _run(tmp_path)
    assert run.returncode == 2 and _order(run.stderr)[0] == "DeepMedic", run.stderr
    assert _order(run.stderr)[-2:] == ["MeanTeacher", "MeanTeacher-no-consistency"]
    assert _second_round(run.stderr) == "MeanTeacher-released-short-schedule"
    frozen = tmp_path / "export" / "nnunet_mt"  # the code before issue 30 still had nnunet_mt/reproduce.py
    frozen.mkdir(parents=True)
    (frozen / "reproduce.py").write_text("")
    run = _run(tmp_path, CODE=str(tmp_path / "export"))
    assert run.returncode == 2 and _order(run.stderr)[-1] == "MeanTeacher-beta0", run.stderr
    assert _second_round(run.stderr) == "none in this code"
    run = _run(tmp_path, "MeanTeacher-released-short-schedule", CODE=str(tmp_path / "export"))
    assert run.returncode == 2 and run.stderr.startswith("MeanTeacher-released-short-schedule: not a method"), \
        run.stderr
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()


def test_a_bad_seed_or_an_unknown_method_is_refused_before_anything_is_created(tmp_path):
    run = _run(tmp_path, "DeepMedic", SEED="1x")
    assert run.returncode == 2 and "SEED must be a non-negative integer, not '1x'" in run.stderr
    run = _run(tmp_path, "DeepMedic", "MeanTeacher-relased", SEED="2")
    assert run.returncode == 2 and run.stderr.startswith("MeanTeacher-relased: not a method of this screen"), run.stderr
    run = _run(tmp_path, "MeanTeacher-no-consistency", "MeanTeacher-beta0")  # the frozen name, with today's code
    assert run.returncode == 2 and run.stderr.startswith("MeanTeacher-beta0: not a method"), run.stderr
    run = _run(tmp_path, "MeanTeacher-released-short-schedule", "DeepMedic")  # two rounds never share a file
    assert run.returncode == 2 and "run in a call of their own: their rows go to next/" in run.stderr, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- what it does after a method's training, with the trainings stubbed -------------------------------------
# The stubs stand in for the cohort generator, the sha256 checks and the package's modules that train, write the
# rows and export the model; merge_rows.py and `python -c` run with the real interpreter.

_PYTHON_STUB = r"""#!/bin/bash
echo "python $*" >> "$STUB_LOG"
if [ "$1" = -m ]; then
  case "$2" in
    nnunet_mt.commands.reproduce|nnunet_mt.reproduce)
      while [ $# -gt 0 ]; do [ "$1" = --workdir ] && mkdir -p "$2/n10/diagnostics"; shift; done; exit 0;;
    nnunet_mt.evaluation.choice)
      out=""; while [ $# -gt 0 ]; do [ "$1" = --write ] && out="$2"; shift; done
      [ -z "$out" ] && { echo "chosen: from the merged file"; exit 0; }
      [ -n "$STUB_ROWS" ] && cp "$STUB_ROWS" "$out"
      echo "ValueError: no score for the baseline DeepMedic" >&2; exit 1;;
    nnunet_mt.runner.start_model)
      mkdir -p "$(dirname "$5")"; echo "$4" > "$5"; exit 0;;
  esac
fi
exec "REAL_PYTHON" "$@"
"""

HEADER = "count,method,network,step,cases,dice_mean\n"
OLD = (HEADER + "10,DeepMedic,model,0,10,0.565378\n10,DeepMedic,model,600,10,0.6\n"
       "10,MeanTeacher-released,teacher,600,10,0.5\n10,PseudoLabel,model,600,10,0.58\n")


def _stubbed(tmp_path: Path, method: str, rows: str | None, out_csv: str | None = OLD, script: Path = SCRIPT,
             **env: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(_PYTHON_STUB.replace("REAL_PYTHON", sys.executable))
    (bin_dir / "nnunet_mt_synthetic").write_text(
        '#!/bin/bash\necho "synthetic $*" >> "$STUB_LOG"; mkdir -p nnUNet_raw/Dataset990_SyntheticStrokeDWI\n')
    (bin_dir / "sha256sum").write_text('#!/bin/bash\necho "sha256sum $*" >> "$STUB_LOG"\n')
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    if rows is not None:
        (tmp_path / "rows.csv").write_text(rows)
    if out_csv is not None:
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "screening_n10.csv").write_text(out_csv)
    environ = {k: v for k, v in os.environ.items() if k not in ("CODE", "SEED", "PYTHONPATH")}
    environ.update({"PATH": f"{bin_dir}:/usr/bin:/bin", "WORK": str(tmp_path / "work"), "OUT": str(tmp_path / "out"),
                    "STUB_LOG": str(tmp_path / "log"),
                    "STUB_ROWS": str(tmp_path / "rows.csv") if rows is not None else "", **env})
    return subprocess.run(["bash", str(script), method], cwd=tmp_path, env=environ, capture_output=True, text=True)


def test_a_methods_new_rows_replace_its_own_only_and_its_model_is_exported_though_the_choice_stops(tmp_path):
    # the work folder's rows: the method's new ones, and a PseudoLabel row of another start that must not get in
    rows = HEADER + "10,MeanTeacher-released,teacher,600,10,0.61\n10,MeanTeacher-released,teacher,800,10,0.62\n" \
                    "10,PseudoLabel,model,600,10,0.99\n"
    run = _stubbed(tmp_path, "MeanTeacher-released", rows, SEED="1")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "screening_n10.csv").read_text() == (
        HEADER + "10,DeepMedic,model,0,10,0.565378\n10,DeepMedic,model,600,10,0.6\n"
        "10,MeanTeacher-released,teacher,600,10,0.61\n10,MeanTeacher-released,teacher,800,10,0.62\n"
        "10,PseudoLabel,model,600,10,0.58\n")
    # exported from the seed's own work folder and the method's trainer, before the choice ran
    exported = (tmp_path / "out" / "models" / "MeanTeacher-released.pth").read_text().strip()
    assert exported == ("screen-seed1/nnUNet_results/Dataset500_SyntheticStrokeDWI_n10/"
                        "nnUNetTrainerMeanTeacherReleased__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth")
    assert "2 row(s) of MeanTeacher-released put in" in run.stdout and "chosen: from the merged file" in run.stdout
    log = (tmp_path / "log").read_text()
    assert "--training-seed 1" in log and "synthetic -d 990" in log
    assert log.index("nnunet_mt.runner.start_model export") < log.index("nnunet_mt.evaluation.choice")


def test_the_second_rounds_method_trains_in_its_own_work_folder_and_writes_to_next(tmp_path):
    # a copy of the script, so that its default OUT (beside it) is not the checkout's results folder
    copy = tmp_path / "screen-n10"
    (copy / "start").mkdir(parents=True)
    for name in ("run.sh", "merge_rows.py"):
        shutil.copy(SCRIPT.parent / name, copy / name)
    rows = HEADER + "10,MeanTeacher-released-short-schedule,teacher,600,10,0.63\n"
    run = _stubbed(tmp_path, "MeanTeacher-released-short-schedule", rows, out_csv=None, script=copy / "run.sh",
                   OUT="", SEED="2")
    assert run.returncode == 0, run.stderr
    assert (copy / "next" / "seed2" / "screening_n10.csv").read_text() == rows
    model = (copy / "next" / "seed2" / "models" / "MeanTeacher-released-short-schedule.pth").read_text()
    assert model.startswith("screen-next-seed2/nnUNet_results/Dataset500_SyntheticStrokeDWI_n10/"
                            "nnUNetTrainerMeanTeacherReleasedShortSchedule__"), model
    log = (tmp_path / "log").read_text()
    assert "--workdir screen-next-seed2" in log and "MeanTeacher-released-short-schedule --write" in log


def test_into_a_missing_csv_the_rows_go_under_the_header(tmp_path):
    rows = HEADER + "10,DeepMedic,model,600,10,0.6\n10,MeanTeacher-released,teacher,600,10,0.61\n"
    run = _stubbed(tmp_path, "DeepMedic", rows, out_csv=None)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "screening_n10.csv").read_text() == HEADER + "10,DeepMedic,model,600,10,0.6\n"


def test_without_rows_of_the_method_it_fails_and_leaves_the_committed_rows_as_they_were(tmp_path):
    run = _stubbed(tmp_path, "MeanTeacher-released", HEADER + "10,DeepMedic,model,600,10,0.7\n")
    assert run.returncode == 1
    assert "no row of MeanTeacher-released (its rows are of: DeepMedic)" in run.stderr, run.stderr
    assert (tmp_path / "out" / "screening_n10.csv").read_text() == OLD


def test_with_no_rows_written_or_other_columns_it_fails_and_says_why(tmp_path):
    run = _stubbed(tmp_path, "PseudoLabel", None)
    assert run.returncode == 1
    assert "no score for the baseline DeepMedic" in run.stderr and "PseudoLabel: no screening rows were written" \
        in run.stderr, run.stderr
    assert (tmp_path / "out" / "screening_n10.csv").read_text() == OLD
    other = tmp_path / "other"
    other.mkdir()
    run = _stubbed(other, "PseudoLabel", "count,method,step\n10,PseudoLabel,600\n")
    assert run.returncode == 1 and "differ from" in run.stderr, run.stderr
    assert (other / "out" / "screening_n10.csv").read_text() == OLD

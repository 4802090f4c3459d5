"""The seed spread on hand-made score folders: per-seed means, the range rule, and what is refused."""
import csv
import json

import pytest

from nnunet_mt.evaluation.seed_spread import SpreadError, main, read_run, read_spread, spread_rows
from nnunet_mt.evaluation.tables import render

TEST_FILES = {"case_a": {"case_a_0000.nii.gz": "11", "case_a.nii.gz": "22"}}


def _score_folder(path, dice, test_files=TEST_FILES, count=10):
    path.mkdir(parents=True)
    with open(path / "table_dice.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["count", "method", "n_cases", "dice_mean", "dice_std"])
        w.writeheader()
        w.writerows({"count": count, "method": m, "n_cases": 20, "dice_mean": d, "dice_std": 0.2}
                    for m, d in dice.items())
        w.writerow({"count": 20, "method": "DeepMedic", "n_cases": 20, "dice_mean": 0.99, "dice_std": 0.1})  # not read
    (path / "manifest.json").write_text(json.dumps({"test_files": test_files}))
    return path


RUNS = {"0": {"DeepMedic": 0.60, "MT": 0.65, "PL": 0.61},
        "1": {"DeepMedic": 0.62, "MT": 0.63, "PL": 0.66},
        "2": {"DeepMedic": 0.61, "MT": 0.64, "PL": 0.55}}


def test_a_method_is_outside_the_spread_only_if_its_lowest_seed_beats_the_references_highest():
    rows = {r["method"]: r for r in spread_rows(RUNS, ["MT", "PL"], "DeepMedic")}
    assert list(rows) == ["DeepMedic", "MT", "PL"]
    mt = rows["MT"]
    assert [mt["seed:0"], mt["seed:1"], mt["seed:2"]] == [0.65, 0.63, 0.64]
    assert mt["mean"] == pytest.approx(0.64) and mt["std"] == pytest.approx(0.01)
    assert mt["difference_from_reference"] == pytest.approx(0.03)  # 0.64 - 0.61
    assert mt["outside_reference_spread"]  # 0.63 > 0.62
    assert rows["PL"]["difference_from_reference"] == pytest.approx(-0.01 / 3)  # 0.6067 - 0.61
    assert not rows["PL"]["outside_reference_spread"]
    assert (rows["PL"]["lowest"], rows["PL"]["highest"]) == (0.55, 0.66)
    assert not rows["DeepMedic"]["outside_reference_spread"]
    tie = dict(RUNS, **{"1": {"DeepMedic": 0.63, "MT": 0.63, "PL": 0.66}})  # MT's lowest equals DM's highest
    assert not {r["method"]: r for r in spread_rows(tie, ["MT"], "DeepMedic")}["MT"]["outside_reference_spread"]
    with pytest.raises(SpreadError, match="seed 2: no test Dice for MT"):
        spread_rows(dict(RUNS, **{"2": {"DeepMedic": 0.6}}), ["MT"], "DeepMedic")


def test_the_command_reads_score_folders_and_writes_the_table(tmp_path, capsys):
    runs = [f"{s}={_score_folder(tmp_path / f'test-seed{s}', d)}" for s, d in RUNS.items()]
    out = tmp_path / "spread" / "test-n10-seeds.md"
    main(["--runs", *runs, "--methods", "MT", "PL", "--out", str(out)])
    table = capsys.readouterr().out
    assert "| MT | 0.6500 | 0.6300 | 0.6400 | 0.6400 ± 0.0100 | 0.6300–0.6500 | +0.0300 | yes |" in table
    assert "| DeepMedic | 0.6000 | 0.6200 | 0.6100 | 0.6100 ± 0.0100 | 0.6000–0.6200 | +0.0000 | — |" in table
    assert table.strip() in out.read_text()
    with open(out.with_suffix(".csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["DeepMedic", "MT", "PL"] and rows[1]["outside_reference_spread"] == "True"
    assert read_run(tmp_path / "test-seed0", 20)[0] == {"DeepMedic": 0.99}


def test_runs_on_other_test_scans_or_malformed_runs_are_refused(tmp_path, capsys):
    a = _score_folder(tmp_path / "a", RUNS["0"])
    b = _score_folder(tmp_path / "b", RUNS["1"], test_files={"case_b": {"case_b.nii.gz": "33"}})
    for runs, message in [([f"0={a}", f"1={b}"], f"{b} scored other test scans than {a}"),
                          ([f"0={a}", f"0={a}"], "--runs names a seed twice"),
                          ([f"{a}"], f"--runs wants SEED=FOLDER, got {a}"),
                          ([f"0={a}", f"1={tmp_path / 'c'}"], f"{tmp_path / 'c' / 'table_dice.csv'}: missing")]:
        with pytest.raises(SystemExit, match="error: " + message.replace("[", r"\[")):
            main(["--runs", *runs, "--methods", "MT"])
    with pytest.raises(SystemExit, match="table_dice.csv: no row at count 30"):
        main(["--runs", f"0={a}", "--methods", "MT", "--count", "30"])


def test_the_written_csv_reads_back_and_renders_as_the_printed_table(tmp_path, capsys):
    runs = [f"{s}={_score_folder(tmp_path / f'test-seed{s}', d)}" for s, d in RUNS.items()]
    out = tmp_path / "test-n10-seeds.md"
    main(["--runs", *runs, "--methods", "MT", "PL", "--out", str(out)])
    printed = capsys.readouterr().out.strip()
    rows = read_spread(out.with_suffix(".csv"))
    assert rows == spread_rows(RUNS, ["MT", "PL"], "DeepMedic")  # floats and booleans typed back exactly
    assert render(out.with_suffix(".csv")) == printed  # the README's marked table, rendered from the file
    assert "| PL | 0.6100 | 0.6600 | 0.5500 | 0.6067 ± 0.0551 | 0.5500–0.6600 | -0.0033 | no |" in printed


def test_a_csv_that_is_not_a_seed_spread_is_refused_naming_the_missing_columns(tmp_path):
    table_dice = _score_folder(tmp_path / "run", RUNS["0"]) / "table_dice.csv"
    renamed = tmp_path / "table-seeds.csv"
    renamed.write_text(table_dice.read_text())
    with pytest.raises(SpreadError, match=r"table-seeds\.csv: not a seed spread: no column mean, std, lowest, "
                                          r"highest, difference_from_reference, outside_reference_spread, seed:<label>"):
        read_spread(renamed)
    with pytest.raises(ValueError, match="table-seeds.csv: not a seed spread"):
        render(renamed)
    (tmp_path / "empty-seeds.csv").write_text("")
    with pytest.raises(ValueError, match="empty-seeds.csv: no rows"):
        render(tmp_path / "empty-seeds.csv")

"""The README's and docs' tables rendered from results files (``nnunet_mt.evaluation.tables``): exact Markdown
from hand-made files, the report's own ``table_dice.md`` from its csv, and ``--check`` / ``--update`` on
marked Markdown."""
from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest

from nnunet_mt.evaluation.choice import scores_table
from nnunet_mt.evaluation.report import CountResult, write_report
from nnunet_mt.evaluation.tables import main, marked_tables, render

REPO = Path(__file__).resolve().parents[2]
DICE_HEADER = ["count", "method", "n_cases", "dice_mean", "dice_std", "p_ttest_vs_reference",
               "p_wilcoxon_vs_reference", "best"]
NAN = float("nan")


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _run_files(folder: Path) -> Path:
    """A run's table_dice.csv (counts 10 and 20) and per_case_metrics.csv: three methods, three test cases."""
    _write_csv(folder / "per_case_metrics.csv", ["count", "method", "case", "dice", "hd95_mm", "missed", "avd_ml",
                                                 "lesion_f1"], [
        # HD95: DeepMedic missed case c (no HD95), so every method's HD95 is averaged over cases a and b
        [10, "DeepMedic", "a", 0.9, 10, 0, 10, 0.1], [10, "DeepMedic", "b", 0.5, 20, 0, 12, 0.2],
        [10, "DeepMedic", "c", 0.0, NAN, 1, 14, 0.3],
        [10, "MeanTeacher", "a", 0.8, 30, 0, 20, 0.05], [10, "MeanTeacher", "b", 0.4, 40, 0, 24, 0.05],
        [10, "MeanTeacher", "c", 0.2, 50, 0, 28, 0.05],
        [10, "PseudoLabel", "a", 0.7, 1, 0, 1, 0.1], [10, "PseudoLabel", "b", 0.6, 2, 0, 1, 0.15],
        [10, "PseudoLabel", "c", 0.4, 3, 0, 4, 0.2],
        *[[20, m, "a", 0.1, 999, 0, 999, 0.9] for m in ("DeepMedic", "MeanTeacher", "PseudoLabel")]])
    return _write_csv(folder / "table_dice.csv", DICE_HEADER, [
        [10, "DeepMedic", 3, 0.65361, 0.23229, 2.2e-06, 1.3e-05, True],
        [10, "MeanTeacher", 3, 0.47031, 0.26344, NAN, NAN, False],
        [10, "PseudoLabel", 3, 0.5675, 0.2189, 0.0013, 0.0023, False],
        [20, "DeepMedic", 1, 0.1, NAN, NAN, NAN, True], [20, "MeanTeacher", 1, 0.1, NAN, NAN, NAN, True],
        [20, "PseudoLabel", 1, 0.1, NAN, NAN, NAN, True]])


COUNT_TABLE = """\
| method | Dice, mean ± std | t-test p | Wilcoxon p | HD95 (mm) | lesion-wise F1 | abs. volume difference (mL) |
|---|---|---|---|---|---|---|
| DeepMedic | **0.6536 ± 0.2323** | 2.2e-06 | 1.3e-05 | 15.0 ± 7.1 | 0.200 ± 0.100 | 12.0 ± 2.0 |
| MeanTeacher | 0.4703 ± 0.2634 | — | — | 35.0 ± 7.1 | 0.050 ± 0.000 | 24.0 ± 4.0 |
| PseudoLabel | 0.5675 ± 0.2189 | 0.0013 | 0.0023 | 1.5 ± 0.7 | 0.150 ± 0.050 | 2.0 ± 1.7 |"""


def test_tables_2_3_from_a_hand_made_csv(tmp_path):
    source = _write_csv(tmp_path / "table_dice.csv", DICE_HEADER, [
        [3, "DeepMedic", 7, 0.321, 0.37444, 0.2, 0.3, False], [3, "MeanTeacher", 7, 0.35, 0.4, NAN, NAN, True],
        [6, "DeepMedic", 4, 0.5, 0.1, 0.01, 0.02, True], [6, "MeanTeacher", 4, 0.25, 0.2, NAN, NAN, False]])
    assert render(source) == ("| Method | 3 annotated | 6 annotated |\n"
                              "|---|---|---|\n"
                              "| DeepMedic | 0.3210 ± 0.3744 | **0.5000 ± 0.1000**\\* |\n"
                              "| MeanTeacher | **0.3500 ± 0.4000** | 0.2500 ± 0.2000 |")


def test_the_test_table_of_one_count_from_hand_made_files(tmp_path):
    """Dice and p from table_dice.csv (the reference's p: —); HD95 (one decimal) over the cases every method
    has one, F1 (three) and volume difference (one) over all cases, sample std; the other count left out."""
    assert render(_run_files(tmp_path), count=10) == COUNT_TABLE
    with pytest.raises(ValueError, match="no rows of count 30"):
        render(tmp_path / "table_dice.csv", count=30)


def test_the_reports_table_dice_csv_renders_as_its_table_dice_md(tmp_path):
    metrics = {m: {c: {"dice": d, "missed": 0} for c, d in zip("abcd", dice)}
               for m, dice in (("DeepMedic", (0.5, 0.6, 0.1, 0.9)), ("PiModel", (0.7, 0.3, 0.2, 0.8)),
                               ("MeanTeacher", (0.55, 0.65, 0.15, 0.95)))}
    results = [CountResult(count=c, images={}, references={}, predictions={}, metrics=metrics) for c in (5, 10)]
    files = write_report(tmp_path, results, ["DeepMedic", "PiModel", "MeanTeacher"], "MeanTeacher")
    written = files["table_dice.md"].read_text().split("\n\n")[0]
    assert "\\*" in written and "**" in written  # the marks are there to be compared
    assert render(files["table_dice.csv"]) == written


def test_the_screening_csv_renders_as_the_choice_rules_table(tmp_path):
    source = _write_csv(tmp_path / "screening_n10.csv", ["count", "method", "network", "step", "cases", "dice_mean",
                                                         "dice_std", "distance_from_start", "volume_ratio",
                                                         "precision", "recall"],
                        [[10, m, "model", s, 2, d + s / 1e4, 0.1, 0.0, v, 0.5, 0.5]
                         for m, d, v in (("DeepMedic", 0.5, 1.1), ("MeanTeacher-beta0", 0.6, 1.5))
                         for s in (600, 800, 1000)])
    from nnunet_mt.evaluation.choice import read_screening

    table = render(source)
    assert table == scores_table(read_screening(source))
    assert table.splitlines()[2] == "| MeanTeacher-beta0 (control) | 0.6800 | 1.50–1.50 |"


def test_check_passes_on_the_committed_readme_and_docs(capsys):
    assert main(["--check", str(REPO / "README.md"), str(REPO / "docs" / "experiments.md"), "--root", str(REPO)]) == 0
    out = capsys.readouterr().out
    assert "README.md: " in out and "experiments.md: " in out


#: a cell that is a measured value: 0.6536, **0.6536 ± 0.2323**, 2.2e-06, 54.4 ± 27.2
MEASURED = re.compile(r"\**-?\d+(\.\d+)?(e-?\d+)?( ± \d+(\.\d+)?)?\**")


def unmarked_results_tables(text: str) -> list[int]:
    """First lines of the tables that show a measured value outside '<!-- table: ... -->' markers, i.e. typed
    in rather than rendered from a results file (the trainer tables, words only, are not results)."""
    inside = {n for t in marked_tables(text) for n in range(t.start, t.end + 1)}
    found, first = [], None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.startswith("|"):
            first = None
            continue
        first = first or number
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if number not in inside and any(MEASURED.fullmatch(c) for c in cells) and first not in found:
            found.append(first)
    return found


def test_unmarked_results_tables_are_found_and_marked_ones_and_word_tables_pass(tmp_path):
    words = "| trainer | what it trains |\n|---|---|\n| `T` | Eq. 1 (weight 100, >= 0.95) |\n"
    assert unmarked_results_tables(_marked(tmp_path).read_text() + "\n" + words) == []
    assert unmarked_results_tables(f"# R\n\n{words}\n{COUNT_TABLE}\n") == [7]
    assert unmarked_results_tables("| method | Dice |\n|---|---|\n| X | **0.65 ± 0.23** |\n") == [1]


def test_every_results_table_of_the_readme_is_rendered_from_a_committed_file():
    """Every table of measured values in the README is between markers (and --check, above, compares each with
    its file). docs/experiments.md also records runs whose files were not kept, each saying so."""
    readme = (REPO / "README.md").read_text()
    assert unmarked_results_tables(readme) == [], "README.md: a table of results outside '<!-- table: -->' markers"


def _marked(tmp_path: Path) -> Path:
    _run_files(tmp_path / "results" / "run")
    doc = tmp_path / "doc.md"
    doc.write_text("# Results\n\nText.\n\n<!-- table: results/run/table_dice.csv count=10 -->\n"
                   f"{COUNT_TABLE}\n<!-- end table -->\n\nMore text.\n")
    return doc


def test_check_fails_on_an_edited_copy_naming_the_table_and_row(tmp_path, capsys):
    doc = _marked(tmp_path)
    assert main(["--check", str(doc), "--root", str(tmp_path)]) == 0
    assert "1 marked table(s)" in capsys.readouterr().out
    doc.write_text(doc.read_text().replace("| 0.5675 ± 0.2189 | 0.0013 |", "| 0.5676 ± 0.2189 | 0.0013 |"))
    assert main(["--check", str(doc), "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{doc}:5: table 'results/run/table_dice.csv count=10' differs from its results file at row 5 " \
           "(PseudoLabel):" in err
    assert f"  {doc}: | PseudoLabel | 0.5676 ± 0.2189 |" in err
    assert "  results: | PseudoLabel | 0.5675 ± 0.2189 |" in err
    assert "DeepMedic" not in err  # only the row that differs
    # --update writes what the files give; the rest of the file stays
    assert main(["--update", str(doc), "--root", str(tmp_path)]) == 0
    assert main(["--check", str(doc), "--root", str(tmp_path)]) == 0
    assert doc.read_text() == _marked(tmp_path / "again").read_text()


def test_check_names_a_missing_row_a_missing_file_and_an_unclosed_marker(tmp_path, capsys):
    doc = _marked(tmp_path)
    text = doc.read_text()
    doc.write_text(text.replace(COUNT_TABLE.splitlines()[-1] + "\n", ""))
    assert main(["--check", str(doc), "--root", str(tmp_path)]) == 1
    assert "at row 5 (PseudoLabel):\n" f"  {doc}: (no row)\n" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "results")
    assert main(["--check", str(doc), "--root", str(tmp_path)]) == 1
    assert f"{tmp_path / 'results' / 'run' / 'table_dice.csv'}: no such results file" in capsys.readouterr().err
    doc.write_text(text.replace("<!-- end table -->\n", ""))
    assert main(["--check", str(doc), "--root", str(tmp_path)]) == 1
    assert "doc.md:5: table marker 'results/run/table_dice.csv count=10' has no '<!-- end table -->'" \
        in capsys.readouterr().err


def test_the_screening_csv_by_step_gives_dice_and_volume_per_snapshot(tmp_path):
    """Per method, the chosen network's validation Dice (three decimals) and volume ratio (two) at each step;
    a step a method lacks is —; an unknown network or marker option is refused by name."""
    header = ["count", "method", "network", "step", "cases", "dice_mean", "dice_std", "distance_from_start",
              "volume_ratio", "precision", "recall"]
    source = _write_csv(tmp_path / "screening_n10.csv", header, [
        [10, "DeepMedic", "model", 0, 2, 0.5839, 0.1, 0.0, 1.1034, 0.7, 0.8],
        [10, "DeepMedic", "model", 200, 2, 0.5815, 0.1, 0.0, 1.1392, 0.7, 0.8],
        [10, "MeanTeacher-beta0", "model", 0, 2, 0.5839, 0.1, 0.0, 1.1034, 0.7, 0.8],
        [10, "MeanTeacher-beta0", "student", 0, 2, 0.4, 0.1, 0.0, 1.5, 0.7, 0.8],
        [10, "MeanTeacher-beta0", "student", 200, 2, 0.3, 0.1, 0.0, NAN, NAN, NAN]])
    assert render(source, by_step="model") == ("| method | step 0 | step 200 |\n|---|---|---|\n"
                                               "| DeepMedic | 0.584 (1.10) | 0.582 (1.14) |\n"
                                               "| MeanTeacher-beta0 | 0.584 (1.10) | — |")
    assert render(source, by_step="student").splitlines()[2] == "| MeanTeacher-beta0 | 0.400 (1.50) | 0.300 (n/a) |"
    doc = tmp_path / "doc.md"
    doc.write_text(f"<!-- table: screening_n10.csv by_step=model -->\n{render(source, by_step='model')}\n"
                   "<!-- end table -->\n<!-- table: screening_n10.csv by_step=teacher -->\n<!-- end table -->\n")
    assert main(["--check", str(doc), "--root", str(tmp_path)]) == 1  # only the second marker is wrong
    with pytest.raises(ValueError, match="unknown option 'by_step=teacher'"):
        from nnunet_mt.evaluation.tables import render_spec
        render_spec("screening_n10.csv by_step=teacher", tmp_path)

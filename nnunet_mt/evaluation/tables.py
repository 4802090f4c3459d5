"""The README's and docs' tables of results, rendered from the committed results files, never retyped.

A table quoted from a run's results files (``results/<run>/``, the files ``nnunet_mt_reproduce --results``
copies) sits between two markers; the first names its source, relative to the repository root::

    <!-- table: results/<run>/table_dice.csv count=10 -->
    | method | Dice, mean ± std | t-test p | Wilcoxon p | HD95 (mm) | lesion-wise F1 | abs. volume difference (mL) |
    |---|---|---|---|---|---|---|
    ...
    <!-- end table -->

What a source gives, by its file name:

- ``table_dice.csv``: the paper's Tables 2-3 as the report's ``table_dice.md`` has them (a column per count,
  the best mean in bold, ``\\*`` where the paired t-test against the reference method gives p < 0.05);
- ``table_dice.csv count=N``: the test table of one count: Dice mean ± std (the best in bold), the paired
  t-test and Wilcoxon p against the reference method (— on its own row), and HD95, lesion-wise F1 and the
  absolute volume difference from ``per_case_metrics.csv`` in the same folder (mean ± sample std over the
  cases where each is defined for every method, as in the report's "Other metrics");
- ``screening_n<count>.csv``: the screen's choice-rule scores (``python -m nnunet_mt.evaluation.choice``);
- ``screening_n<count>.csv by_step=model`` (or ``student``): per method and snapshot step, that network's mean
  validation Dice and, in brackets, its predicted / true volume on the unannotated scans;
- ``<name>-seeds.csv``: the seed spread (``python -m nnunet_mt.evaluation.seed_spread --out <name>-seeds.md``
  writes it): per training seed the mean test Dice, the range, and whether a method lies outside the reference's.

usage::

    python -m nnunet_mt.evaluation.tables results/RUN/table_dice.csv [--count N]    # print the table
    python -m nnunet_mt.evaluation.tables results/RUN/screening_n10.csv [--by-step model]
    python -m nnunet_mt.evaluation.tables results/test-n10-seeds.csv
    python -m nnunet_mt.evaluation.tables --check README.md docs/experiments.md     # compare the marked tables
    python -m nnunet_mt.evaluation.tables --update README.md docs/experiments.md    # rewrite them from the files

``--check`` exits with status 1 and names the file, line, source and row of every marked table that differs
from what its results file gives (or whose file is missing); ``--update`` writes what the files give.
"""
from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from nnunet_mt.evaluation.report import (CountResult, _fmt, _md_table, dice_table_markdown, metric_summary,
                                         validate_results)

START = re.compile(r"^<!--\s*table:\s*(?P<spec>.*?)\s*-->\s*$")
END = re.compile(r"^<!--\s*end table\s*-->\s*$")
#: the test table's columns beside Dice: per_case_metrics.csv column, header, number format
OTHER_METRICS = (("hd95_mm", "HD95 (mm)", ".1f"), ("lesion_f1", "lesion-wise F1", ".3f"),
                 ("avd_ml", "abs. volume difference (mL)", ".1f"))


def _float(value: str) -> float:
    return float(value) if value not in ("", None) else math.nan


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise ValueError(f"{path}: no such results file")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_dice_summary(path: Path) -> list[dict]:
    """The rows of a ``table_dice.csv`` (:func:`nnunet_mt.evaluation.report.dice_summary`), typed back."""
    rows = []
    for r in _read_csv(path):
        rows.append({**r, "count": int(r["count"]), "n_cases": int(r["n_cases"]),
                     **{k: _float(r[k]) for k in ("dice_mean", "dice_std", "p_ttest_vs_reference",
                                                  "p_wilcoxon_vs_reference")},
                     "best": r["best"] == "True"})
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def dice_table(path: Path) -> str:
    """Tables 2-3 from ``table_dice.csv``: methods and counts in the file's order, as ``table_dice.md``."""
    summary = read_dice_summary(path)
    methods = list(dict.fromkeys(r["method"] for r in summary))
    counts = sorted({r["count"] for r in summary})
    missing = [(c, m) for c in counts for m in methods if not any(r["count"] == c and r["method"] == m
                                                                   for r in summary)]
    if missing:
        raise ValueError(f"{path}: no row of count {missing[0][0]}, method {missing[0][1]}")
    return dice_table_markdown(summary, methods, counts)


def count_table(path: Path, count: int) -> str:
    """The test table of one count: Dice and its paired tests from ``table_dice.csv``, the other metrics from
    the ``per_case_metrics.csv`` beside it."""
    summary = [r for r in read_dice_summary(path) if r["count"] == count]
    if not summary:
        raise ValueError(f"{path}: no rows of count {count}")
    methods = [r["method"] for r in summary]
    metrics: dict[str, dict[str, dict[str, float]]] = {m: {} for m in methods}
    per_case_file = path.with_name("per_case_metrics.csv")
    per_case = _read_csv(per_case_file)
    keys = (*(k for k, _, _ in OTHER_METRICS), "missed")
    if per_case and (absent := [k for k in ("count", "method", "case", *keys) if k not in per_case[0]]):
        raise ValueError(f"{per_case_file}: no column {', '.join(absent)}")
    for r in per_case:
        if int(r["count"]) == count and r["method"] in metrics:
            metrics[r["method"]][r["case"]] = {k: _float(r[k]) for k in keys}
    result = CountResult(count=count, images={}, references={}, predictions={}, metrics=metrics)
    try:
        validate_results([result], methods, methods[0])
    except ValueError as e:
        raise ValueError(f"{per_case_file}: {e}") from None
    others = {k: {s["method"]: s for s in metric_summary(result, methods, methods[0], k)} for k, _, _ in OTHER_METRICS}
    rows = []
    for s in summary:
        cell = f"{_fmt(s['dice_mean'])} ± {_fmt(s['dice_std'])}"
        row = [s["method"], f"**{cell}**" if s["best"] else cell]
        row += ["—" if math.isnan(s[k]) else format(s[k], ".2g")
                for k in ("p_ttest_vs_reference", "p_wilcoxon_vs_reference")]
        row += [f"{_fmt(others[k][s['method']]['mean'], spec)} ± {_fmt(others[k][s['method']]['std'], spec)}"
                for k, _, spec in OTHER_METRICS]
        rows.append(row)
    return _md_table(["method", "Dice, mean ± std", "t-test p", "Wilcoxon p", *[h for _, h, _ in OTHER_METRICS]],
                     rows)


def screening_table(path: Path, by_step: str | None = None) -> str:
    """The choice rule's scores of a ``screening_n<count>.csv``, or (``by_step``: ``model`` or ``student``)
    that network's validation Dice and volume ratio at every snapshot step."""
    from nnunet_mt.evaluation.choice import read_screening, scores_table

    if not path.is_file():
        raise ValueError(f"{path}: no such results file")
    rows = read_screening(path)
    if by_step is None:
        return scores_table(rows)
    rows = [r for r in rows if r["network"] == by_step]
    if not rows:
        raise ValueError(f"{path}: no rows of network {by_step!r} (known: model, student)")
    steps = sorted({r["step"] for r in rows})
    cells = {(r["method"], r["step"]): f"{_fmt(r['dice_mean'], '.3f')} ({_fmt(r['volume_ratio'], '.2f')})"
             for r in rows}
    return _md_table(["method", *[f"step {s}" for s in steps]],
                     [[m, *[cells.get((m, s), "—") for s in steps]]
                      for m in dict.fromkeys(r["method"] for r in rows)])


def seeds_table(path: Path) -> str:
    """The seed spread of a ``seed_spread --out`` run, from its CSV; the reference is the first row's method.
    A file that is not one raises ``SpreadError``, a ``ValueError`` as every other layout's refusal."""
    from nnunet_mt.evaluation.seed_spread import read_spread, spread_markdown

    rows = read_spread(path)
    return spread_markdown(rows, rows[0]["method"])


def render(path: Path, count: int | None = None, by_step: str | None = None) -> str:
    """The Markdown table a results file gives (see the module docstring for the layouts)."""
    path = Path(path)
    if path.name == "table_dice.csv" and by_step is None:
        return dice_table(path) if count is None else count_table(path, count)
    if re.fullmatch(r"screening_n\d+\.csv", path.name) and count is None:
        return screening_table(path, by_step)
    if path.name.endswith("-seeds.csv") and count is None and by_step is None:
        return seeds_table(path)
    options = (f" with count={count}" if count is not None else "") + (f" by_step={by_step}" if by_step else "")
    raise ValueError(f"{path}: no table layout for this file{options}"
                     " (known: table_dice.csv [count=N], screening_n<count>.csv [by_step=model|student], "
                     "<name>-seeds.csv)")


@dataclass
class MarkedTable:
    spec: str  # what the start marker says: the source, then options
    start: int  # line number of the start marker (1-based)
    end: int  # line number of the end marker
    body: list[str]  # the lines between the markers


def marked_tables(text: str, name: str = "file") -> list[MarkedTable]:
    """The marked tables of a Markdown text; ValueError for a marker without its pair."""
    tables, open_ = [], None
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if (m := START.match(line)) is not None:
            if open_ is not None:
                raise ValueError(f"{name}:{number}: a table marker inside the table opened at line {open_.start}")
            open_ = MarkedTable(m.group("spec"), number, 0, [])
        elif END.match(line):
            if open_ is None:
                raise ValueError(f"{name}:{number}: '<!-- end table -->' without a table marker before it")
            open_.end = number
            tables.append(open_)
            open_ = None
        elif open_ is not None:
            open_.body.append(line)
    if open_ is not None:
        raise ValueError(f"{name}:{open_.start}: table marker '{open_.spec}' has no '<!-- end table -->'")
    return tables


def render_spec(spec: str, root: Path) -> str:
    """The table a start marker's ``spec`` names: ``PATH [count=N] [by_step=NETWORK]``, PATH relative to
    ``root``."""
    source, *options = spec.split()
    count = by_step = None
    for option in options:
        key, _, value = option.partition("=")
        if key == "count" and value.isdigit():
            count = int(value)
        elif key == "by_step" and value in ("model", "student"):
            by_step = value
        else:
            raise ValueError(f"table marker '{spec}': unknown option {option!r} "
                             "(known: count=N, by_step=model|student)")
    return render(root / source, count, by_step)


def _strip_blank(lines: list[str]) -> list[str]:
    lo, hi = 0, len(lines)
    while lo < hi and not lines[lo].strip():
        lo += 1
    while hi > lo and not lines[hi - 1].strip():
        hi -= 1
    return [line.rstrip() for line in lines[lo:hi]]


def check_file(markdown: Path, root: Path) -> tuple[int, list[str]]:
    """(marked tables, problems): every marked table of ``markdown`` against what its results file gives."""
    name = str(markdown)
    try:
        tables = marked_tables(Path(markdown).read_text(), name)
    except ValueError as e:
        return 0, [str(e)]
    problems = []
    for t in tables:
        where = f"{name}:{t.start}: table '{t.spec}'"
        try:
            want = render_spec(t.spec, root).splitlines()
        except ValueError as e:
            problems.append(f"{where}: {e}")
            continue
        have = _strip_blank(t.body)
        if have == want:
            continue
        for i in range(max(len(have), len(want))):
            h = have[i] if i < len(have) else None
            w = want[i] if i < len(want) else None
            if h != w:
                row = (w or h).split("|")[1].strip() if (w or h).startswith("|") else ""
                problems.append(f"{where} differs from its results file at row {i + 1}"
                                + (f" ({row})" if row else "") + ":\n"
                                + f"  {name}: {h if h is not None else '(no row)'}\n"
                                + f"  results: {w if w is not None else '(no row)'}")
    return len(tables), problems


def update_file(markdown: Path, root: Path) -> int:
    """Rewrite every marked table of ``markdown`` with what its results file gives; returns how many changed."""
    text = Path(markdown).read_text()
    lines = text.splitlines()
    changed = 0
    for t in reversed(marked_tables(text, str(markdown))):
        want = render_spec(t.spec, root).splitlines()
        if _strip_blank(t.body) != want:
            lines[t.start:t.end - 1] = want
            changed += 1
    if changed:
        Path(markdown).write_text("\n".join(lines) + ("\n" if text.endswith("\n") else ""))
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nnunet_mt.evaluation.tables", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="*", type=Path, help="results files to print the tables of")
    p.add_argument("--count", type=int, help="with table_dice.csv: the test table of this count")
    p.add_argument("--by-step", choices=("model", "student"),
                   help="with screening_n<count>.csv: that network's figures at every snapshot step")
    p.add_argument("--check", nargs="+", type=Path, metavar="FILE",
                   help="Markdown files whose marked tables must be what their results files give")
    p.add_argument("--update", nargs="+", type=Path, metavar="FILE",
                   help="Markdown files whose marked tables are rewritten from their results files")
    p.add_argument("--root", type=Path, default=Path("."),
                   help="the folder the markers' paths are relative to (default: the current folder)")
    a = p.parse_args(argv)
    if sum(map(bool, (a.sources, a.check, a.update))) != 1:
        p.error("give results files to print, or --check FILE..., or --update FILE...")
    if a.sources:
        for source in a.sources:
            try:
                print(render(source, a.count, a.by_step))
            except ValueError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
        return 0
    if a.update:
        for markdown in a.update:
            try:
                print(f"{markdown}: {update_file(markdown, a.root)} table(s) rewritten from their results files")
            except ValueError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
        return 0
    failed = False
    for markdown in a.check:
        n, problems = check_file(markdown, a.root)
        for problem in problems:
            print(problem, file=sys.stderr)
        failed |= bool(problems)
        if not problems:
            print(f"{markdown}: {n} marked table(s), as their results files give them")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

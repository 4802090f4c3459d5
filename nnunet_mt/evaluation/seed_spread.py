"""The seed spread of the test comparison: is a method's gain over the reference larger than what another
training seed alone moves the reference by?

Each run is one training seed's ``nnunet_mt_score_models --out`` folder: its ``table_dice.csv`` gives every
method's mean test Dice, its ``manifest.json`` the test files' sha256, so that runs scored on different test
scans are refused rather than compared. The rule, fixed before any test scan is predicted
(``results/screen-n10/README.md``, the choice rule's step 7):

- a method's *spread* is the range (lowest, highest) of its mean test Dice over the seeds;
- a method is *outside the reference's spread* when its lowest seed beats the reference's highest seed, so
  that no pairing of seeds reverses the order.

    python -m nnunet_mt.evaluation.seed_spread --runs 0=results/test-n10 1=results/test-n10-seed1 \\
        2=results/test-n10-seed2 --methods DeepMedic MeanTeacher-released --reference DeepMedic \\
        --out results/test-n10-seeds.md
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Mapping, Sequence

from nnunet_mt.utils.atomic import write_atomically, write_csv


class SpreadError(ValueError):
    """Runs that cannot be compared: a missing file or method, or different test scans."""


def read_run(folder: Path, count: int) -> tuple[dict[str, float], dict]:
    """(method -> mean test Dice at ``count``, the test files' sha256) of one ``nnunet_mt_score_models`` folder."""
    folder = Path(folder)
    for name in ("table_dice.csv", "manifest.json"):
        if not (folder / name).is_file():
            raise SpreadError(f"{folder / name}: missing (is {folder} an nnunet_mt_score_models --out folder?)")
    with open(folder / "table_dice.csv", newline="") as f:
        dice = {r["method"]: float(r["dice_mean"]) for r in csv.DictReader(f) if int(r["count"]) == count}
    if not dice:
        raise SpreadError(f"{folder / 'table_dice.csv'}: no row at count {count}")
    return dice, json.loads((folder / "manifest.json").read_text())["test_files"]


def spread_rows(runs: Mapping[str, Mapping[str, float]], methods: Sequence[str],
                reference: str) -> list[dict]:
    """Per method: its mean test Dice per seed (``seed:<label>``), the mean, standard deviation (ddof 1) and
    range over the seeds, the difference of means from ``reference`` and whether the method lies outside the
    reference's spread (lowest seed > reference's highest; always False for the reference itself).

    ``runs`` maps a seed's label to method -> mean test Dice; every method must be in every run."""
    for label, dice in runs.items():
        missing = [m for m in [reference, *methods] if m not in dice]
        if missing:
            raise SpreadError(f"seed {label}: no test Dice for {', '.join(missing)} (it has {', '.join(dice)})")
    ref_values = [runs[s][reference] for s in runs]
    rows = []
    for m in dict.fromkeys([reference, *methods]):
        values = [runs[s][m] for s in runs]
        rows.append({"method": m, **{f"seed:{s}": runs[s][m] for s in runs},
                     "mean": statistics.fmean(values),
                     "std": statistics.stdev(values) if len(values) > 1 else math.nan,
                     "lowest": min(values), "highest": max(values),
                     "difference_from_reference": statistics.fmean(values) - statistics.fmean(ref_values),
                     "outside_reference_spread": m != reference and min(values) > max(ref_values)})
    return rows


def read_spread(path: Path) -> list[dict]:
    """The rows :func:`main` writes to ``--out``'s ``.csv``, typed back (the reference's row first)."""
    path = Path(path)
    if not path.is_file():
        raise SpreadError(f"{path}: no such file")
    with open(path, newline="") as f:
        raw = list(csv.DictReader(f))
    if not raw:
        raise SpreadError(f"{path}: no rows")
    absent = [c for c in ("method", "mean", "std", "lowest", "highest", "difference_from_reference",
                          "outside_reference_spread") if c not in raw[0]]
    absent += [] if any(k.startswith("seed:") for k in raw[0]) else ["seed:<label>"]
    if absent:
        raise SpreadError(f"{path}: not a seed spread: no column {', '.join(absent)}")
    return [{k: (v if k == "method" else v == "True" if k == "outside_reference_spread" else float(v))
             for k, v in r.items()} for r in raw]


def spread_markdown(rows: Sequence[dict], reference: str) -> str:
    """The rows as Markdown: per-seed mean test Dice, mean ± std, range, difference from ``reference``."""
    seeds = [k[len("seed:"):] for k in rows[0] if k.startswith("seed:")]
    lines = [f"| method | {' | '.join(f'seed {s}' for s in seeds)} | mean ± std | range | mean − {reference} "
             f"| outside {reference}'s spread |", "|---" * (len(seeds) + 5) + "|"]
    for r in rows:
        outside = "—" if r["method"] == reference else ("yes" if r["outside_reference_spread"] else "no")
        per_seed = " | ".join(f"{r['seed:' + s]:.4f}" for s in seeds)
        lines.append(f"| {r['method']} | {per_seed} | "
                     f"{r['mean']:.4f} ± {r['std']:.4f} | {r['lowest']:.4f}–{r['highest']:.4f} | "
                     f"{r['difference_from_reference']:+.4f} | {outside} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, metavar="SEED=FOLDER",
                   help="one nnunet_mt_score_models --out folder per training seed, labelled by the seed")
    p.add_argument("--methods", nargs="+", required=True, help="the methods to compare, in the table's order")
    p.add_argument("--reference", default="DeepMedic", help="the method whose spread is the yardstick")
    p.add_argument("--count", type=int, default=10, help="annotated training scans (default 10)")
    p.add_argument("--out", type=Path, default=None, help="write the table to this Markdown file (and a .csv)")
    a = p.parse_args(argv)
    try:
        labelled = [r.split("=", 1) for r in a.runs]
        bad = [r for r, parts in zip(a.runs, labelled) if len(parts) != 2 or not all(parts)]
        if bad:
            raise SpreadError(f"--runs wants SEED=FOLDER, got {', '.join(bad)}")
        if len({s for s, _ in labelled}) != len(labelled):
            raise SpreadError(f"--runs names a seed twice: {' '.join(a.runs)}")
        runs, first = {}, None
        for seed, folder in labelled:
            runs[seed], test_files = read_run(Path(folder), a.count)
            if first is None:
                first = (folder, test_files)
            elif test_files != first[1]:
                raise SpreadError(f"{folder} scored other test scans than {first[0]} (manifest.json's test_files "
                                  f"differ): seeds are only compared on the same scans")
        rows = spread_rows(runs, a.methods, a.reference)
    except SpreadError as e:
        sys.exit(f"error: {e}")
    table = spread_markdown(rows, a.reference)
    print(table)
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        text = (f"Mean test Dice at count {a.count} per training seed (`python -m nnunet_mt.evaluation.seed_spread`; "
                f"runs: {', '.join(a.runs)}).\n\n{table}\n")
        write_atomically(lambda tmp: Path(tmp).write_text(text), a.out)
        write_csv(a.out.with_suffix(".csv"), rows)


if __name__ == "__main__":
    main()

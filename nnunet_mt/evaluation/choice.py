"""The screen's choice rule, applied to ``screening_n<count>.csv`` (:func:`nnunet_mt.evaluation.diagnostics.screening_rows`).

The rule, fixed before the screen ran (``results/screen-n10/README.md``), reads validation scores only:

1. A method's score is the mean, over the snapshots at ``steps``, of its model's mean validation Dice (the
   teacher, for a mean teacher).
2. Candidates are the consistency variants: ``MeanTeacher`` (the paper's Eq. 1) and ``MeanTeacher-<variant>``,
   except the controls (``MeanTeacher-no-consistency``...).
3. The best candidate is chosen if its score beats the baseline's (``DeepMedic``) by at least ``margin``;
   otherwise none is.

``python -m nnunet_mt.evaluation.choice screening_n10.csv`` prints the scores and the choice. Given a count's
diagnostics folder instead (``WORKDIR/n10/diagnostics``, ``--count 10``), it scores the methods whose snapshot
diagnostics are cached there, so a screen still running shows where it stands; ``--write CSV`` keeps those
rows as a screening CSV. The choice is only made once every candidate of the screen is in.
"""
from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Sequence

from nnunet_mt.trainers.variant_names import current_method_name

#: variants that are controls (no consistency term), not candidates; files written before their rename call them
#: MeanTeacher-beta0 and MeanTeacher-beta0-annotated-bn (``variant_names.RENAMED_METHODS``)
CONTROLS = ("MeanTeacher-no-consistency", "MeanTeacher-no-consistency-annotated-bn")


def read_screening(path: Path) -> list[dict]:
    """The rows of a screening CSV, numbers as floats (step as int)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("dice_mean", "dice_std", "distance_from_start", "volume_ratio", "precision", "recall"):
            r[k] = float(r[k])
        r["step"] = int(r["step"])
    return rows


def method_scores(rows: Sequence[dict], steps: Sequence[int] = (600, 800, 1000)) -> dict[str, float]:
    """Method -> mean over ``steps`` of the model's mean validation Dice; NaN if a step is missing."""
    scores = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        by_step = {r["step"]: r["dice_mean"] for r in rows if r["method"] == method and r["network"] == "model"}
        values = [by_step.get(s, math.nan) for s in steps]
        scores[method] = sum(values) / len(values)
    return scores


def is_candidate(method: str) -> bool:
    method = current_method_name(method)
    return (method == "MeanTeacher" or method.startswith("MeanTeacher-")) and method not in CONTROLS


def choose(rows: Sequence[dict], baseline: str = "DeepMedic", steps: Sequence[int] = (600, 800, 1000),
           margin: float = 0.01) -> tuple[str | None, dict[str, float]]:
    """(the chosen variant or None, every method's score). Raises ValueError if the baseline has no score."""
    scores = method_scores(rows, steps)
    if math.isnan(scores.get(baseline, math.nan)):
        raise ValueError(f"no score for the baseline {baseline} at steps {list(steps)}: has it finished?")
    candidates = {m: s for m, s in scores.items() if is_candidate(m) and not math.isnan(s)}
    if not candidates:
        return None, scores
    best = max(candidates, key=candidates.get)
    return (best if candidates[best] >= scores[baseline] + margin else None), scores


def scores_table(rows: Sequence[dict], baseline: str = "DeepMedic",
                 steps: Sequence[int] = (600, 800, 1000)) -> str:
    """The scores as a Markdown table, best first: per method its score and the range of its model's volume
    ratio over the snapshots. The controls are marked, and so is any other method the rule does not choose
    from (``PseudoLabel``: a competitor, not a consistency variant)."""
    scores = method_scores(rows, steps)
    volumes = {}
    for r in rows:
        if r["network"] == "model" and not math.isnan(r["volume_ratio"]):
            lo, hi = volumes.get(r["method"], (math.inf, -math.inf))
            volumes[r["method"]] = (min(lo, r["volume_ratio"]), max(hi, r["volume_ratio"]))
    lines = [f"| method | score: mean validation Dice at steps {', '.join(map(str, steps))} | volume ratio range |",
             "|---|---|---|"]
    for m, s in sorted(scores.items(), key=lambda kv: -kv[1] if not math.isnan(kv[1]) else math.inf):
        lo, hi = volumes.get(m, (math.nan, math.nan))
        name = m if is_candidate(m) or m == baseline else \
            f"{m} (control)" if current_method_name(m) in CONTROLS else f"{m} (not a candidate)"
        lines.append(f"| {name} | {s:.4f} | {lo:.2f}–{hi:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m nnunet_mt.evaluation.choice", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("screening", type=Path,
                   help="screening_n<count>.csv of a --screen run, or a count's diagnostics folder (with --count)")
    p.add_argument("--count", type=int, help="with a diagnostics folder: its count of annotated scans")
    p.add_argument("--methods", nargs="+", help="with a diagnostics folder: the screen's methods, in its order "
                                                "(default: every method with cached diagnostics)")
    p.add_argument("--write", type=Path, metavar="CSV", help="with a diagnostics folder: write its rows here")
    p.add_argument("--baseline", default="DeepMedic")
    p.add_argument("--steps", type=int, nargs="+", default=[600, 800, 1000])
    p.add_argument("--margin", type=float, default=0.01)
    a = p.parse_args(argv)
    if a.screening.is_dir():
        from nnunet_mt.evaluation.diagnostics import cached_screening_rows, write_screening

        if a.count is None:
            p.error(f"{a.screening} is a diagnostics folder: give its --count")
        rows = cached_screening_rows(a.screening, a.count, a.methods)
        if not rows:
            p.error(f"{a.screening}: no cached snapshot diagnostics (snapshots_<method>.json)")
        if a.write is not None:
            write_screening(rows, a.write)
    elif a.count is not None or a.methods or a.write is not None:
        p.error("--count, --methods and --write go with a diagnostics folder, not a screening CSV")
    else:
        rows = read_screening(a.screening)
    chosen, scores = choose(rows, a.baseline, a.steps, a.margin)
    print(scores_table(rows, a.baseline, a.steps))
    waiting = [m for m in (a.methods or []) if is_candidate(m) and math.isnan(scores.get(m, math.nan))]
    if waiting:
        print(f"\nchosen: not yet; {len(waiting)} candidate(s) not scored: {', '.join(waiting)}")
    elif not any(is_candidate(m) and not math.isnan(s) for m, s in scores.items()):
        print("\nchosen: not yet; no candidate is scored")
    else:
        print(f"\nchosen: {chosen or f'none (no candidate beats {a.baseline} by {a.margin})'}")


if __name__ == "__main__":
    main()

"""The screen's choice rule, applied to ``screening_n<count>.csv`` (:func:`nnunet_mt.evaluation.diagnostics.screening_rows`).

The rule, fixed before the screen ran (``results/screen-n10/README.md``), reads validation scores only:

1. A method's score is the mean, over the snapshots at ``steps``, of its model's mean validation Dice (the
   teacher, for a mean teacher).
2. Candidates are the consistency variants: ``MeanTeacher`` (the paper's Eq. 1) and ``MeanTeacher-<variant>``,
   except the controls (``beta0``...).
3. The best candidate is chosen if its score beats the baseline's (``DeepMedic``) by at least ``margin``;
   otherwise none is.

``python -m nnunet_mt.evaluation.choice screening_n10.csv`` prints the scores and the choice.
"""
from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Sequence

#: variants that are controls, not candidates
CONTROLS = ("MeanTeacher-beta0", "MeanTeacher-beta0-annotated-bn")


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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m nnunet_mt.evaluation.choice", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("screening", type=Path, help="screening_n<count>.csv of a --screen run")
    p.add_argument("--baseline", default="DeepMedic")
    p.add_argument("--steps", type=int, nargs="+", default=[600, 800, 1000])
    p.add_argument("--margin", type=float, default=0.01)
    a = p.parse_args(argv)
    rows = read_screening(a.screening)
    chosen, scores = choose(rows, a.baseline, a.steps, a.margin)
    volumes = {}
    for r in rows:
        if r["network"] == "model" and not math.isnan(r["volume_ratio"]):
            lo, hi = volumes.get(r["method"], (math.inf, -math.inf))
            volumes[r["method"]] = (min(lo, r["volume_ratio"]), max(hi, r["volume_ratio"]))
    print(f"| method | score: mean validation Dice at steps {', '.join(map(str, a.steps))} | volume ratio range |")
    print("|---|---|---|")
    for m, s in sorted(scores.items(), key=lambda kv: -kv[1] if not math.isnan(kv[1]) else math.inf):
        lo, hi = volumes.get(m, (math.nan, math.nan))
        print(f"| {m}{'' if is_candidate(m) or m == a.baseline else ' (control)'} | {s:.4f} | {lo:.2f}–{hi:.2f} |")
    print(f"\nchosen: {chosen or f'none (no candidate beats {a.baseline} by {a.margin})'}")


if __name__ == "__main__":
    main()

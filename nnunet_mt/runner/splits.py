"""Who trains, who tests, who validates: the checks of the counts against the pool, the seeded split draw,
the manifest a rerun must match, and the unannotated scans' true masks (diagnostics only)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nnunet_mt.runner.methods import SUPERVISED_METHODS
from nnunet_mt.runner.source_dataset import UNLABELED_FOLDER, ReproduceError, SourceDataset

#: manifest entries a rerun must match (results depend on them)
MANIFEST_SETTINGS = ("source", "pool", "unlabeled", "seed", "counts", "shared_test", "validation", "budget",
                     "disable_tta", "start_model")
#: what a manifest written before a setting existed means by its absence
MANIFEST_DEFAULTS = {"shared_test": None, "validation": None, "start_model": None}


def check_inputs(source: SourceDataset, counts: list[int], methods: list[str],
                 shared_test: int | None = None, validation: int | None = None) -> None:
    """Counts fit the pool (each leaves at least one test case; with a shared test set, they fit beside it;
    a validation set comes off the pool first); semi-supervised methods have scans."""
    pool = len(source.annotated)
    if validation is not None:
        if validation < 1 or validation > pool - 2:
            raise ReproduceError(f"--validation {validation}: needs 1 <= N <= pool size - 2 (a training and a test "
                                 f"scan must remain); the pool of {source.folder} has {pool} annotated case(s)")
        pool -= validation
    if shared_test is not None:
        if shared_test < 1 or shared_test >= pool:
            raise ReproduceError(f"--shared-test {shared_test}: needs 1 <= N < pool size; the pool of {source.folder} "
                                 f"has {pool} annotated case(s) (labelsTr + labelsTs"
                                 f"{', less the validation set' if validation else ''})")
        for n in counts:
            if n < 1 or n > pool - shared_test:
                raise ReproduceError(
                    f"count {n}: with --shared-test {shared_test} the training scans come from the other "
                    f"{pool - shared_test} of the {pool} annotated case(s) of {source.folder}"
                    f"{' outside the validation set' if validation else ''}; needs 1 <= count <= {pool - shared_test}")
    for n in counts if shared_test is None else ():
        if n < 1 or n >= pool:
            raise ReproduceError(
                f"count {n}: needs 1 <= count < pool size (the rest are the test set); the pool of {source.folder} "
                f"has {pool} annotated case(s) (labelsTr + labelsTs{', less the validation set' if validation else ''})")
    semi = [m for m in methods if m not in SUPERVISED_METHODS]
    if semi and not source.unlabeled:
        raise ReproduceError(f"{', '.join(semi)} need(s) unannotated scans in {source.folder / UNLABELED_FOLDER}/ "
                             f"(missing or empty); add them there or run only {', '.join(sorted(SUPERVISED_METHODS))}")


def draw_splits(pool: list[str], counts: list[int], seed: int, shared_test: int | None = None,
                validation: int | None = None) -> dict[int, dict[str, list[str]]]:
    """Per count n, from one seeded permutation of the sorted pool; every list sorted.

    Default (the paper's): ``train`` = the first n cases of the permutation (nested across counts),
    ``test`` = all the others, so each count has its own test set. ``shared_test`` = N: the first N
    cases of the permutation are the test set of *every* count, and ``train`` = the n cases after
    them (nested across counts, never among the N), so the counts' results compare on the same scans.
    ``validation`` = V: the *last* V cases of the permutation are every count's ``validation`` set,
    neither training nor test, for choices (a variant, a training length); taking them from the end
    leaves the training scans of a shared-test draw as they are without it."""
    pool = sorted(pool)
    order = np.random.default_rng(seed).permutation(len(pool))
    drawn = [pool[i] for i in order]
    val: list[str] = []
    if validation:
        drawn, val = drawn[:-validation], sorted(drawn[-validation:])
    if shared_test is None:
        splits = {n: {"train": sorted(drawn[:n]), "test": sorted(drawn[n:])} for n in counts}
    else:
        test, rest = sorted(drawn[:shared_test]), drawn[shared_test:]
        splits = {n: {"train": sorted(rest[:n]), "test": list(test)} for n in counts}
    if validation:
        for split in splits.values():
            split["validation"] = list(val)
    return splits


def check_manifest(path: Path, manifest: dict) -> None:
    """Stop if ``path`` records other settings than ``manifest`` (for the keys in MANIFEST_SETTINGS)."""
    if not path.exists():
        return
    old = json.loads(path.read_text())
    old = {**{k: v for k, v in MANIFEST_DEFAULTS.items() if k not in old}, **old}
    differ = [k for k in MANIFEST_SETTINGS if k in old and old[k] != manifest.get(k)]
    if differ:
        def show(v):
            text = json.dumps(v)
            return text if len(text) < 120 else text[:117] + "..."
        lines = [f"  {k}: recorded {show(old[k])}, now {show(manifest.get(k))}" for k in differ]
        raise ReproduceError(
            f"{path.parent} was used with other settings:\n" + "\n".join(lines) + "\n"
            "Its finished trainings and predictions were made with the recorded settings. Use a new --workdir "
            "for the new settings (or rerun with the recorded ones to continue).")


def check_truth(source: SourceDataset, truth: Path | None) -> None:
    """``--unlabeled-truth``: a mask for every unannotated scan, checked before hours of training, not after."""
    if truth is None:
        return
    if not Path(truth).is_dir():
        raise ReproduceError(f"--unlabeled-truth {truth}: not a folder")
    missing = [c for c in sorted(source.unlabeled) if not (Path(truth) / f"{c}{source.file_ending}").is_file()]
    if missing:
        raise ReproduceError(f"--unlabeled-truth {truth}: no true mask for {len(missing)} of the "
                             f"{len(source.unlabeled)} unannotated scans, e.g. {missing[0]}{source.file_ending}")

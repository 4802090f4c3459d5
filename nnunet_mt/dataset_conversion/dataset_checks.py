"""Checking what a conversion is asked to write before it reads a file: the label definition (nnU-Net's rules), the
dataset's name, and its place (creatable, not clobbering anything unasked, never inside the sources nor holding
them, its id not used by another dataset). Shared by ``nnunet_mt_convert`` and the public releases' converters, so
that they say the same about the same mistake.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

_DATASET_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def is_plain_int(value: object) -> bool:
    """True for ints (and numpy ints) but not bools, which json/nnU-Net would mangle."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_label_definitions(*, labels: dict[str, int], problems: list[str]) -> None:
    """nnU-Net needs unique non-negative integer labels with background 0; uint16 is our widest label type."""
    bad = {name: value for name, value in labels.items() if not is_plain_int(value)}
    if bad:
        problems.append(f"label values must be integers, got {bad}")
    values = [int(v) for v in labels.values() if is_plain_int(v)]
    if 0 not in values:
        problems.append(f"labels {labels} have no background value 0")
    out_of_range = sorted(v for v in values if not 0 <= v <= np.iinfo(np.uint16).max)
    if out_of_range:
        problems.append(f"label values {out_of_range} in {labels} are outside 0..65535")
    duplicated = sorted({v for v in values if values.count(v) > 1})
    if duplicated:
        problems.append(f"label values {duplicated} are used by more than one name in {labels}")
    if bad or duplicated or out_of_range:
        return
    # nnU-Net's own rules (LabelManager, verify_dataset_integrity), which it checks only when planning
    named = {int(v): name for name, v in labels.items()}
    if 0 in named and named[0] != "background":
        problems.append(f"label 0 is named {named[0]!r}: nnU-Net requires the name 'background' for it; pass "
                        f"background=0 instead of {named[0]}=0")
    if 0 in named and sorted(named) != list(range(len(named))):
        renumbered = " ".join(f"{'background' if v == 0 else named[v]}={i}" for i, v in enumerate(sorted(named)))
        problems.append(f"label values {sorted(named)} are not consecutive, which nnU-Net refuses ('Labels must be "
                        f"in consecutive order (0, 1, 2, ...)'): pass --labels {renumbered} instead, with label "
                        f"files that hold those values")


def dataset_dir_for(*, output_raw_root: Path, dataset_id: int, dataset_name: str,
                    problems: list[str]) -> Path | None:
    """``<root>/Dataset{ID:03d}_{Name}``, or None (and a problem) when id or name cannot form nnU-Net's name."""
    ok = True
    if not is_plain_int(dataset_id) or not 0 <= dataset_id <= 999:
        problems.append(f"dataset id {dataset_id!r} must be an integer in 0..999 (nnU-Net uses 3 digits)")
        ok = False
    if not isinstance(dataset_name, str) or not _DATASET_NAME_PATTERN.match(dataset_name):
        problems.append(f"dataset name {dataset_name!r} must be non-empty letters, digits, '_', '-' or '.'")
        ok = False
    return output_raw_root / f"Dataset{int(dataset_id):03d}_{dataset_name}" if ok else None


def check_output_location(*, dataset_dir: Path, dataset_id: int, source_dirs: list[Path], overwrite: bool,
                           problems: list[str]) -> None:
    """The dataset folder must be creatable, not clobber anything unasked, and never contain the sources."""
    raw_root = dataset_dir.parent
    if raw_root.exists() and not raw_root.is_dir():
        problems.append(f"output raw root {raw_root} exists but is not a directory")
        return
    if dataset_dir.exists() and not dataset_dir.is_dir():
        problems.append(f"output dataset path {dataset_dir} exists and is not a folder; remove it first")
    elif dataset_dir.exists() and not overwrite:
        problems.append(f"output dataset folder {dataset_dir} already exists (use overwrite / --overwrite "
                        f"to replace it)")
    _check_sources_outside(dataset_dir=dataset_dir, source_dirs=source_dirs, problems=problems)
    _check_id_unique(dataset_dir=dataset_dir, dataset_id=dataset_id, problems=problems)


def _check_sources_outside(*, dataset_dir: Path, source_dirs: list[Path], problems: list[str]) -> None:
    """Source and output must not nest, symlinks resolved: replacing the dataset folder deletes it, so it must not
    hold the sources, and the sources are only read, so the dataset must not be written into them."""
    target = dataset_dir.resolve()
    for source in source_dirs:
        resolved = source.resolve()
        if resolved.is_relative_to(target):
            problems.append(f"source folder {source} lies inside the output dataset folder {dataset_dir}; "
                            f"the conversion would overwrite its own input")
        elif target.is_relative_to(resolved):
            shown = f" ({target} once symlinks are resolved)" if target != dataset_dir.absolute() else ""
            problems.append(f"output dataset folder {dataset_dir} lies inside the source folder {source}{shown}; "
                            f"the source is only read: choose a --raw-root outside it")


def lies_inside(path: Path, folders: Sequence[Path]) -> bool:
    """Whether ``path`` is one of ``folders`` or below one, symlinks resolved."""
    resolved = path.resolve()
    return any(resolved.is_relative_to(folder.resolve()) for folder in folders)


def _check_id_unique(*, dataset_dir: Path, dataset_id: int, problems: list[str]) -> None:
    """nnU-Net refuses to resolve an id used by two dataset names, so catch that now, not at training time."""
    raw_root = dataset_dir.parent
    if not raw_root.is_dir():
        return
    prefix = f"Dataset{dataset_id:03d}_"
    clashes = sorted(p.name for p in raw_root.iterdir()
                     if p.is_dir() and p.name.startswith(prefix) and p.name != dataset_dir.name)
    if clashes:
        problems.append(f"dataset id {dataset_id:03d} is already used by {raw_root / clashes[0]}"
                        + (f" (and {clashes[1:]})" if clashes[1:] else "")
                        + "; nnU-Net needs each id to belong to one dataset name")

"""What a public-dataset converter's discovery produces (cases, problems) and what a conversion is asked for.

Each release module (``isles2022``, ``atlas2``, ``brats``) scans its release's layout into a :class:`Discovery` of
:class:`SourceCase` objects, with the helpers below, and describes its nnU-Net dataset with a
:class:`DatasetSpec`; the user's choices are :class:`Options`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from nnunet_mt.dataset_conversion.convert_folder import nifti_stem


@dataclass(frozen=True)
class ChannelSource:
    """One input channel of a case.

    ``volume`` indexes the 4th axis of a 4-D file (MSD stores all four MR sequences in one file); None for a
    3-D file. ``resample`` marks a channel that is *not* on the case's grid (ISLES' FLAIR) and is resampled
    onto the first channel's grid instead of being required to match it.
    """

    path: Path
    volume: int | None = None
    resample: bool = False


@dataclass(frozen=True)
class SourceCase:
    """One case as found in a release: its channels (the first defines the grid), label, and why none."""

    case_id: str
    channels: tuple[ChannelSource, ...]
    label: Path | None = None
    #: why the case has no label (shown in the summary), e.g. "no mask in derivatives/"
    unlabeled_reason: str = "no label"


@dataclass
class Discovery:
    """Result of scanning a release: cases, problems (per case: skippable; global: always fatal), files ignored."""

    cases: list[SourceCase] = field(default_factory=list)
    case_problems: dict[str, list[str]] = field(default_factory=dict)
    global_problems: list[str] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)
    #: the folders given as input (only read; nothing may be written into them)
    source_roots: list[Path] = field(default_factory=list)
    #: which of the release's layouts was found, for the summary (None: the release has one)
    layout: str | None = None
    #: what to pass instead when no case is annotated (nnU-Net cannot train on such a dataset)
    without_annotations_hint: str = ""

    def problem(self, case_id: str, message: str) -> None:
        self.case_problems.setdefault(case_id, []).append(message)

    def problem_of(self, case_id: str | None, message: str) -> None:
        """A problem of that case, or of the whole conversion where no case is known (``case_id`` None)."""
        if case_id is None:
            self.global_problems.append(message)
        else:
            self.problem(case_id, message)

    def add_case(self, case: SourceCase, *, where: Path) -> None:
        """Add a case; a second case with the same id is a problem naming both places (ids must be unique)."""
        for existing in self.cases:
            if existing.case_id == case.case_id:
                self.problem(case.case_id, f"duplicate case id '{case.case_id}': found in {_case_place(existing)} "
                                           f"and in {where}")
                return
        self.cases.append(case)


def _case_place(case: SourceCase) -> Path:
    return case.channels[0].path.parent if case.channels else Path("?")


@dataclass(frozen=True)
class DatasetSpec:
    """The nnU-Net side of a conversion: channel names, labels and how source label values map onto them.

    ``labels`` is written to dataset.json as is (tuples make it region-based, as nnU-Net's BraTS conversion);
    ``label_map`` maps every *allowed source value* to the value written (BraTS 0/1/2/4 -> 0/2/1/3, or -> 0/1/1/1
    for a whole-tumour task). A source value not in ``label_map`` is an error naming the file.
    """

    converter: str
    channel_names: tuple[str, ...]
    labels: Mapping[str, int | tuple[int, ...]]
    label_map: Mapping[int, int]
    regions_class_order: tuple[int, ...] | None = None
    description: str = ""
    reference: str = ""
    licence: str = ""


@dataclass(frozen=True)
class Options:
    """User choices common to every converter."""

    raw_root: Path
    dataset_id: int
    dataset_name: str
    overwrite: bool = False
    skip_invalid: bool = False
    annotated: int | None = None
    seed: int = 0
    hidden_labels_file: Path | None = None
    #: converter-specific options that change the output (e.g. {'flair': True}); part of the rerun record
    extra: Mapping[str, object] = field(default_factory=dict)


def files_by_case(paths: Sequence[Path], case_of: Callable[[str], str | None], discovery: Discovery,
                  kind: str) -> dict[str, Path]:
    """case id -> file, over the NIfTI files among ``paths`` (in order) whose stem ``case_of`` names a case.

    NIfTI files it does not name are recorded as ignored; a second file for one case is a problem of that
    case (``"case 'x' has two <kind>: A and B"``) and the first one is kept.
    """
    found: dict[str, Path] = {}
    for path in paths:
        stem = nifti_stem(path.name, any_case=True)
        case_id = case_of(stem) if stem is not None else None
        if case_id is None:
            if stem is not None:
                discovery.ignored.append(path)
            continue
        if case_id in found:
            discovery.problem(case_id, f"case '{case_id}' has two {kind}: {found[case_id]} and {path}")
            continue
        found[case_id] = path
    return found


def is_hidden(path: Path) -> bool:
    """macOS resource forks (``._BRATS_001.nii.gz``, shipped in the MSD tarballs) and dot files."""
    return path.name.startswith((".", "_"))


def require_dir(path: Path, role: str, discovery: Discovery) -> bool:
    if not path.is_dir():
        discovery.global_problems.append(f"{role} {path} does not exist or is not a directory")
        return False
    return True


def source_folder(path: str | os.PathLike) -> Path:
    """An input folder as the converters record it: resolved, so that a rerun from another working directory, or
    through another spelling of the path, is recognised as the same conversion and recorded paths stay valid."""
    return Path(path).expanduser().resolve()

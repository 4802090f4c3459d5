"""What every public-dataset converter shares: the case model, validation, atomic writing, the summary.

Each dataset module (``isles2022``, ``atlas2``, ``brats``) only *discovers* cases in its release's
layout and says which file is which channel; everything else happens here, on top of
:mod:`nnunet_mt.dataset_conversion.convert_folder`'s checks (same messages, same atomic rename), so the
converters cannot drift apart in what they accept:

1. discovery gives :class:`SourceCase` objects plus problems, per case or global;
2. :func:`convert` validates every file (readable, finite, 3-D or 4-D as expected, label values in
   the release's set, one voxel grid per case), optionally hides labels (``--annotated N``), and either
   raises one :class:`DatasetConversionError` listing every problem with its file, or skips the bad
   cases (``--skip-invalid``) and says why in the summary;
3. the dataset is written into a hidden staging folder beside the target and renamed into place (a later
   run removes the staging folders of killed runs, see ``convert_folder.remove_stale_temporaries``);
   a record of the sources (size and mtime of every file read) and options is kept in
   ``nnunet_mt_conversion.json`` so that a rerun of the same command is a no-op ("up to date"),
   and a rerun after the sources or options changed refuses, saying what differs, unless ``--overwrite`` is
   given. Paths are recorded resolved (absolute), so the same folder given another way is the same source.

The source folders are only read. Labels hidden by ``--annotated`` are listed in a JSON file *outside*
the dataset folder (default ``<raw root>/Dataset###_Name.hidden_labels.json``), so nnU-Net never sees
them but the user can still evaluate on them.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import zlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunet_mt.dataset_conversion.convert_folder import (
    NIFTI_ENDINGS,
    OUTPUT_FILE_ENDING,
    UNLABELED_IMAGES_FOLDER,
    DatasetConversionError,
    Geometry,
    check_finite,
    check_label_definitions,
    check_label_values,
    check_output_location,
    dataset_dir_for,
    geometry_differences,
    lies_inside,
    move_into_place,
    read_geometry,
    read_voxels,
    write_image,
)
from nnunet_mt.dataset_conversion.staging import remove_stale_temporaries, sigterm_as_exit, temporary_sibling

RECORD_FILE = "nnunet_mt_conversion.json"
RECORD_VERSION = 1
IMAGES_TR, LABELS_TR = "imagesTr", "labelsTr"


# --------------------------------------------------------------------------------------------------------------
# What discovery produces
# --------------------------------------------------------------------------------------------------------------
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


@dataclass
class Summary:
    """What went where; :meth:`format` is what the commands print."""

    dataset_dir: Path
    annotated: list[str] = field(default_factory=list)
    unannotated: dict[str, str] = field(default_factory=dict)  # case -> reason
    skipped: dict[str, list[str]] = field(default_factory=dict)  # case -> problems
    ignored: list[Path] = field(default_factory=list)
    hidden_labels_file: Path | None = None
    up_to_date: bool = False
    layout: str | None = None
    #: resampled channel -> case -> [voxels outside that channel's field of view (written as 0), voxels]
    outside_field_of_view: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    grid_channel: str = ""  # the channel whose grid the others are written on

    def format(self) -> str:
        lines = [f"{'up to date, nothing written' if self.up_to_date else 'wrote'}: {self.dataset_dir}"]
        if self.layout:
            lines.append(f"  layout: {self.layout}")
        lines.append(f"  annotated   (imagesTr + labelsTr): {len(self.annotated)}")
        if self.annotated:
            lines.append(f"    {_short_list(self.annotated)}")
        lines.append(f"  unannotated ({UNLABELED_IMAGES_FOLDER}): {len(self.unannotated)}")
        reasons: dict[str, list[str]] = {}
        for case_id, reason in self.unannotated.items():
            reasons.setdefault(reason, []).append(case_id)
        for reason, cases in reasons.items():
            lines.append(f"    {len(cases)} {reason}: {_short_list(cases)}")
        if self.hidden_labels_file is not None:
            lines.append(f"    hidden labels listed in {self.hidden_labels_file}")
        lines.append(f"  skipped: {len(self.skipped)}")
        for case_id, problems in self.skipped.items():
            lines.append(f"    {case_id}: " + "; ".join(problems))
        if self.ignored:
            lines.append(f"  ignored NIfTI files that are not part of the layout: {len(self.ignored)}, e.g. "
                         + ", ".join(str(p) for p in self.ignored[:3]))
        for channel, cases in self.outside_field_of_view.items():
            lines.append(_field_of_view_line(channel, self.grid_channel, cases))
        return "\n".join(lines)


def _field_of_view_line(channel: str, grid: str, cases: Mapping[str, Sequence[int]]) -> str:
    """How much of the resampled channel is 0 only because its field of view does not cover the grid."""
    outside, total = sum(o for o, _ in cases.values()), sum(t for _, t in cases.values())
    affected = sorted((-o / t, case) for case, (o, t) in cases.items() if o)
    line = (f"  {channel} resampled onto the {grid} grid: {100 * outside / max(total, 1):.1f} % of all voxels lie "
            f"outside the {channel} field of view and are 0")
    if not affected:
        return line + "; no case has such voxels"
    shown = [f"{case} {-100 * fraction:.1f} %" for fraction, case in affected]
    return line + f"; {len(affected)} of {len(cases)} cases: {_short_list(shown)}"


def _short_list(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


# --------------------------------------------------------------------------------------------------------------
# Small discovery helpers
# --------------------------------------------------------------------------------------------------------------
def nifti_stem(name: str) -> str | None:
    """``'x_T1w.nii.gz'`` -> ``'x_T1w'`` (case-insensitive ending); None when not a NIfTI file name."""
    lower = name.lower()
    for ending in NIFTI_ENDINGS:
        if lower.endswith(ending) and len(name) > len(ending):
            return name[: -len(ending)]
    return None


def files_by_case(paths: Sequence[Path], case_of: Callable[[str], str | None], discovery: "Discovery",
                  kind: str) -> dict[str, Path]:
    """case id -> file, over the NIfTI files among ``paths`` (in order) whose stem ``case_of`` names a case.

    NIfTI files it does not name are recorded as ignored; a second file for one case is a problem of that
    case (``"case 'x' has two <kind>: A and B"``) and the first one is kept.
    """
    found: dict[str, Path] = {}
    for path in paths:
        stem = nifti_stem(path.name)
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


def child_dir(parent: Path, name: str) -> Path | None:
    """The sub-folder of ``parent`` called ``name`` in any letter case, or None."""
    if not parent.is_dir():
        return None
    for entry in sorted(parent.iterdir()):
        if entry.is_dir() and entry.name.lower() == name.lower():
            return entry
    return None


def require_dir(path: Path, role: str, discovery: Discovery) -> bool:
    if not path.is_dir():
        discovery.global_problems.append(f"{role} {path} does not exist or is not a directory")
        return False
    return True


# --------------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------------
def _spatial(geometry: Geometry) -> Geometry:
    """The first three axes of a 4-D geometry (as nnU-Net's own MSD conversion splits it)."""
    n = len(geometry.size)
    direction = np.asarray(geometry.direction).reshape(n, n)[:3, :3].reshape(-1)
    return Geometry(size=geometry.size[:3], spacing=geometry.spacing[:3], origin=geometry.origin[:3],
                    direction=tuple(float(v) for v in direction))


def _read_complete_voxels(path: Path, problems: list[str]) -> np.ndarray | None:
    """The voxels (``read_voxels``), and for a ``.gz`` file its compressed stream read to the end.

    nibabel stops reading once it has the voxels, and SimpleITK does not check the end either, so a download cut
    off inside the gzip trailer (its CRC and size) reads without complaint; reading to the end checks both.
    """
    voxels = read_voxels(path=path, problems=problems)
    if voxels is None or not path.name.lower().endswith(".gz"):
        return voxels
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 24):
                pass
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile (a CRC or size mismatch) is an OSError
        problems.append(f"{path}: truncated or corrupt gzip file ({error}); download it again")
        return None
    return voxels


def validate_case(case: SourceCase, allowed_label_values: set[int]) -> list[str]:
    """Every problem of one case, each naming its file: unreadable, non-finite, wrong dimension or number of
    volumes, a channel or the label off the first channel's grid, label values outside the release's set."""
    problems: list[str] = []
    geometries: dict[Path, Geometry] = {}
    volumes_used: dict[Path, list[int]] = {}
    for channel in case.channels:
        if channel.volume is not None:
            volumes_used.setdefault(channel.path, []).append(channel.volume)
    for path in dict.fromkeys(channel.path for channel in case.channels):
        geometry = read_geometry(path=path, problems=problems)
        if geometry is None:
            continue
        voxels = _read_complete_voxels(path, problems)
        if voxels is None:
            continue
        check_finite(voxels=voxels, path=path, problems=problems)
        expected_dim = 4 if path in volumes_used else 3
        if len(geometry.size) != expected_dim:
            problems.append(f"{path}: expected a {expected_dim}-D image, found {len(geometry.size)}-D of size "
                            f"{geometry.size}")
            continue
        if expected_dim == 4:
            if geometry.size[3] != len(volumes_used[path]):
                problems.append(f"{path}: expected {len(volumes_used[path])} volumes (channels) along the 4th "
                                f"axis, found {geometry.size[3]}")
                continue
            geometry = _spatial(geometry)
        geometries[path] = geometry
    reference_path = case.channels[0].path if case.channels else None
    reference = geometries.get(reference_path) if reference_path is not None else None
    if reference is not None:
        for channel in case.channels[1:]:
            other = geometries.get(channel.path)
            if other is None or channel.resample or channel.path == reference_path:
                continue
            differences = geometry_differences(reference, other)
            if differences:
                problems.append(f"geometry mismatch between {reference_path} and {channel.path}: "
                                + "; ".join(differences))
    if case.label is not None:
        problems.extend(_validate_label(case.label, reference, reference_path, allowed_label_values))
    return problems


def _validate_label(path: Path, reference: Geometry | None, reference_path: Path | None,
                    allowed: set[int]) -> list[str]:
    problems: list[str] = []
    geometry = read_geometry(path=path, problems=problems)
    if geometry is None:
        return problems
    if len(geometry.size) != 3:
        return [f"{path}: expected a 3-D label map, found {len(geometry.size)}-D of size {geometry.size}"]
    voxels = _read_complete_voxels(path, problems)
    if voxels is not None and check_finite(voxels=voxels, path=path, problems=problems):
        check_label_values(voxels=voxels, path=path, allowed=allowed, problems=problems)
    if reference is not None:
        differences = geometry_differences(reference, geometry)
        if differences:
            problems.append(f"geometry mismatch between {reference_path} and {path}: " + "; ".join(differences))
    return problems


# --------------------------------------------------------------------------------------------------------------
# Choosing which labels nnU-Net sees
# --------------------------------------------------------------------------------------------------------------
def choose_annotated(labelled: Sequence[str], annotated: int | None, seed: int) -> tuple[list[str], list[str]]:
    """(kept, hidden) case ids: ``annotated`` labelled cases drawn at random with ``seed``, the rest hidden.

    Drawn from the sorted ids so the choice depends only on the set of cases and the seed, never on file
    system order; the draw is nested (the 10 kept with seed s are among the 20 kept with seed s), as the
    runner's counts are, so datasets with different --annotated share their small sets.
    """
    ordered = sorted(labelled)
    if annotated is None:
        return ordered, []
    permutation = np.random.default_rng(seed).permutation(len(ordered))
    kept = sorted(ordered[i] for i in permutation[:annotated])
    hidden = sorted(ordered[i] for i in permutation[annotated:])
    return kept, hidden


# --------------------------------------------------------------------------------------------------------------
# The conversion
# --------------------------------------------------------------------------------------------------------------
def convert(spec: DatasetSpec, discovery: Discovery, options: Options, *, context: str) -> Summary:
    """Validate, split, write atomically (or find the dataset up to date); return what went where.

    Raises :class:`DatasetConversionError` listing every problem (with its file) before anything is written.
    ``discovery`` holds resolved paths (see :func:`source_folder`); the output paths are resolved here, so the
    record does not depend on the working directory.
    """
    options = replace(options, raw_root=Path(options.raw_root).resolve(),
                      hidden_labels_file=Path(options.hidden_labels_file).resolve()
                      if options.hidden_labels_file is not None else None)
    problems = list(discovery.global_problems)
    dataset_dir = dataset_dir_for(output_raw_root=options.raw_root, dataset_id=options.dataset_id,
                                  dataset_name=options.dataset_name, problems=problems)
    if not lies_inside(options.raw_root, discovery.source_roots):  # the sources are only read
        remove_stale_temporaries(options.raw_root)  # left by killed runs (their writer process is gone)
    if options.annotated is not None and options.annotated < 1:
        problems.append(f"--annotated {options.annotated}: must be at least 1")
    if not discovery.cases and not discovery.case_problems and not discovery.global_problems:
        problems.append(f"{context}: no cases found (is this the right folder?)")
    elif discovery.cases and not discovery.case_problems and all(case.label is None for case in discovery.cases):
        problems.append(_without_annotations(context, discovery, skipped=0))  # before reading every file
    if not spec.regions_class_order:  # region-based label dicts hold tuples, which this check does not cover
        check_label_definitions(labels=dict(spec.labels), problems=problems)  # type: ignore[arg-type]
    if problems or dataset_dir is None:
        raise DatasetConversionError(problems, context=f"cannot convert {context}")

    hidden_file = options.hidden_labels_file or dataset_dir.parent / f"{dataset_dir.name}.hidden_labels.json"
    record = _record(spec, discovery, options)
    existing = _existing_record(dataset_dir) if dataset_dir.is_dir() else None
    differences = _differences(existing, record) if isinstance(existing, dict) else None
    if not options.overwrite and differences == []:
        return _up_to_date_summary(spec, discovery, dataset_dir, existing)

    sources = [d.resolve() for d in discovery.source_roots]
    # an existing dataset folder is explained below, with what differs, instead of a bare "already exists"
    check_output_location(dataset_dir=dataset_dir, dataset_id=options.dataset_id, source_dirs=sources,
                          overwrite=options.overwrite or existing is not None, problems=problems)
    if existing is not None and not options.overwrite:
        problems.append(_refusal(dataset_dir, spec.converter, existing, differences))
    if options.annotated is not None:  # only then is a hidden-labels file written
        if hidden_file.is_relative_to(dataset_dir):
            problems.append(f"--hidden-labels-file {hidden_file} lies inside the dataset folder {dataset_dir}: "
                            f"nnU-Net must not see the hidden labels; put it elsewhere")
        if options.hidden_labels_file is not None:  # the default lies beside the dataset, checked with it above
            problems.extend(f"hidden labels file {hidden_file} lies inside the source folder {source}; the source is "
                            f"only read: choose a --hidden-labels-file outside it"
                            for source in sources if hidden_file.is_relative_to(source))

    case_problems = {k: list(v) for k, v in discovery.case_problems.items()}
    allowed = set(int(v) for v in spec.label_map)
    for case in discovery.cases:
        found = validate_case(case, allowed)
        if found:
            case_problems.setdefault(case.case_id, []).extend(found)
    if case_problems and not options.skip_invalid:
        problems.extend(p for case_id in sorted(case_problems) for p in case_problems[case_id])
    valid = [case for case in discovery.cases if case.case_id not in case_problems]
    labelled = [case.case_id for case in valid if case.label is not None]
    if options.annotated is not None and options.annotated > len(labelled):
        problems.append(f"--annotated {options.annotated}: only {len(labelled)} valid annotated case(s) found")
    if not problems and not valid:
        problems.append(f"{context}: every case has a problem, nothing to convert")
    elif not problems and not labelled:
        problems.append(_without_annotations(context, discovery, skipped=len(case_problems)))
        problems.extend(p for case_id in sorted(case_problems) for p in case_problems[case_id])
    if problems:
        raise DatasetConversionError(problems, context=f"cannot convert {context} into {dataset_dir}")

    kept, hidden = choose_annotated(labelled, options.annotated, options.seed)
    kept_set = set(kept)
    summary = Summary(dataset_dir=dataset_dir, annotated=kept, ignored=list(discovery.ignored),
                      skipped={k: case_problems[k] for k in sorted(case_problems)}, layout=discovery.layout,
                      grid_channel=spec.channel_names[0])
    for case in sorted(valid, key=lambda c: c.case_id):
        if case.label is None:
            summary.unannotated[case.case_id] = case.unlabeled_reason
        elif case.case_id not in kept_set:
            summary.unannotated[case.case_id] = f"with the label hidden (--annotated {options.annotated} " \
                                                f"--seed {options.seed})"
    hidden_entries = {case.case_id: str(case.label) for case in valid if case.case_id in set(hidden)}
    if hidden:
        summary.hidden_labels_file = hidden_file
    record["hidden"] = hidden_entries
    record["summary"] = {"annotated": summary.annotated, "unannotated": summary.unannotated,
                         "skipped": summary.skipped,
                         "hidden_labels_file": str(hidden_file) if hidden else None}

    summary.outside_field_of_view = _write(spec, valid, kept_set, dataset_dir, record)
    if hidden:
        _write_hidden_labels(hidden_file, hidden_entries, dataset_dir)
    return summary


def _without_annotations(context: str, discovery: Discovery, *, skipped: int) -> str:
    """nnU-Net plans and trains on imagesTr only: a dataset without annotated case fails there, so stop here."""
    if skipped:  # the input is right, its files are not: the problems follow this one
        found, hint = f"no annotated case is left after skipping the {skipped} case(s) with the problems below", ""
    else:
        found = f"no annotated case among the {len(discovery.cases)} found"
        hint = f"; {discovery.without_annotations_hint}" if discovery.without_annotations_hint else ""
    return (f"{context}: {found}; nnU-Net needs annotated training cases (nnUNetv2_plan_and_preprocess stops on a "
            f"dataset with numTraining 0){hint}")


def source_folder(path: str | os.PathLike) -> Path:
    """An input folder as the converters record it: resolved, so that a rerun from another working directory, or
    through another spelling of the path, is recognised as the same conversion and recorded paths stay valid."""
    return Path(path).expanduser().resolve()


# --------------------------------------------------------------------------------------------------------------
# Rerun record
# --------------------------------------------------------------------------------------------------------------
_RERUN_ADVICE = "pass --overwrite to replace it, or give a new dataset id with -d"
_MAX_FILES_LISTED = 10


def _source_files(discovery: Discovery) -> list[Path]:
    files: list[Path] = []
    for case in discovery.cases:
        files.extend(channel.path for channel in case.channels)
        if case.label is not None:
            files.append(case.label)
    return sorted(dict.fromkeys(files))


def _stat(path: Path) -> list[int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return [info.st_size, info.st_mtime_ns]


def _record(spec: DatasetSpec, discovery: Discovery, options: Options) -> dict:
    """What the output depends on: converter, options, and every source file's size and modification time."""
    return {
        "version": RECORD_VERSION,
        "converter": spec.converter,
        "options": {"skip_invalid": options.skip_invalid, "annotated": options.annotated, "seed": options.seed,
                    "hidden_labels_file": str(options.hidden_labels_file) if options.hidden_labels_file else None,
                    **{k: v for k, v in options.extra.items()}},
        "sources": {str(path): _stat(path) for path in _source_files(discovery)},
        "problems": {k: v for k, v in sorted(discovery.case_problems.items())},
    }


def _existing_record(dataset_dir: Path) -> dict | str:
    """The record of the dataset in ``dataset_dir``, or why it has none."""
    record_file = dataset_dir / RECORD_FILE
    if not record_file.is_file():
        return f"it holds no {RECORD_FILE}"
    try:
        stored = json.loads(record_file.read_text())
    except (OSError, ValueError) as error:
        return f"its {RECORD_FILE} cannot be read ({error})"
    return stored if isinstance(stored, dict) else f"its {RECORD_FILE} holds no record"


def _differences(stored: dict, record: dict) -> list[str]:
    """What makes ``record`` (this conversion) differ from ``stored`` (the one that wrote the dataset); [] if none."""
    if stored.get("converter") != record["converter"]:
        return [f"it was written by {stored.get('converter')}, not by {record['converter']}"]
    if stored.get("version") != record["version"] or "summary" not in stored:
        return [f"it was written by another version of {record['converter']}"]
    found = []
    old, new = stored.get("options", {}), record["options"]
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            found.append(f"--{key.replace('_', '-')}: {_shown(old.get(key))} then, {_shown(new.get(key))} now")
    old, new = stored.get("sources", {}), record["sources"]
    changed = [_source_change(path, old, new) for path in sorted(set(old) | set(new))
               if path not in old or path not in new or old[path] != new[path]]
    found.extend(changed[:_MAX_FILES_LISTED])
    if len(changed) > _MAX_FILES_LISTED:
        found.append(f"and {len(changed) - _MAX_FILES_LISTED} more source files")
    old, new = sorted(stored.get("problems", {})), sorted(record["problems"])
    if old != new:
        found.append(f"cases with problems in the sources: {', '.join(old) or 'none'} then, "
                     f"{', '.join(new) or 'none'} now")
    return found


def _shown(value: object) -> str:
    """An option's value as the command line sets it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return "not given" if value is None else str(value)


def _source_change(path: str, old: Mapping[str, list[int] | None], new: Mapping[str, list[int] | None]) -> str:
    """How one source file differs between two records (size and modification time are recorded, not contents)."""
    if path not in old:
        return f"{path}: added"
    if path not in new:
        return f"{path}: {'no longer read' if Path(path).exists() else 'removed'}"
    before, now = old[path], new[path]
    if now is None or before is None:
        return f"{path}: {'cannot be read now' if now is None else 'could not be read then'}"
    if before[0] != now[0]:
        return f"{path}: size changed from {before[0]} to {now[0]} bytes"
    return (f"{path}: modified (same size, modification time changed from {_time(before[1])} to "
            f"{_time(now[1])})")


def _time(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9).isoformat(sep=" ", timespec="milliseconds")


def _refusal(dataset_dir: Path, converter: str, existing: dict | str, differences: list[str] | None) -> str:
    """Why an existing dataset folder is not replaced, and what to do."""
    if isinstance(existing, str):
        return f"output dataset folder {dataset_dir} already exists and was not written by {converter} ({existing}); " \
               f"{_RERUN_ADVICE}"
    listed = "".join(f"\n      {difference}" for difference in differences or [])
    return f"output dataset folder {dataset_dir} already exists and was written by another conversion:{listed}\n" \
           f"    {_RERUN_ADVICE}"


def _up_to_date_summary(spec: DatasetSpec, discovery: Discovery, dataset_dir: Path, stored: dict) -> Summary:
    """The summary of the conversion that wrote the dataset (this very one); the hidden-labels file rewritten if
    it went missing."""
    summary = Summary(**stored["summary"], dataset_dir=dataset_dir, ignored=list(discovery.ignored), up_to_date=True,
                      layout=discovery.layout, grid_channel=spec.channel_names[0])
    summary.skipped = {k: list(v) for k, v in summary.skipped.items()}
    if summary.hidden_labels_file is not None:
        summary.hidden_labels_file = Path(summary.hidden_labels_file)
        _write_hidden_labels(summary.hidden_labels_file, stored.get("hidden", {}), dataset_dir)
    return summary


def _write_hidden_labels(path: Path, hidden: Mapping[str, str], dataset_dir: Path) -> None:
    """The hidden labels' case ids and source files, written atomically outside the dataset folder."""
    content = json.dumps({"dataset": str(dataset_dir), "hidden_labels": dict(sorted(hidden.items())),
                          "note": f"these cases are in {UNLABELED_IMAGES_FOLDER}/ without their labels"}, indent=2)
    if path.is_file() and path.read_text() == content:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(path, "partial")
    temporary.write_text(content)
    os.replace(temporary, path)


# --------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------
def _write(spec: DatasetSpec, cases: Sequence[SourceCase], kept: set[str], dataset_dir: Path,
           record: dict) -> dict[str, dict[str, list[int]]]:
    """Build the dataset in a hidden staging sibling, then rename it into place (convert_folder's swap).

    Returns, per resampled channel and case, the voxels outside that channel's field of view (also recorded).
    """
    dataset_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_sibling(dataset_dir, "partial")
    staging.mkdir()
    try:
        for folder in (IMAGES_TR, LABELS_TR):
            (staging / folder).mkdir()
        outside: dict[str, dict[str, list[int]]] = {}
        for case in cases:
            for channel, counts in _write_case(spec, case, staging, with_label=case.case_id in kept).items():
                outside.setdefault(channel, {})[case.case_id] = counts
        generate_dataset_json(
            str(staging),
            channel_names={index: name for index, name in enumerate(spec.channel_names)},
            labels={name: (tuple(value) if isinstance(value, tuple) else int(value))
                    for name, value in spec.labels.items()},
            num_training_cases=len(kept),
            file_ending=OUTPUT_FILE_ENDING,
            regions_class_order=spec.regions_class_order,
            dataset_name=dataset_dir.name,
            reference=spec.reference,
            license=spec.licence,
            description=spec.description + f" Unannotated cases are in {UNLABELED_IMAGES_FOLDER}/.",
            converted_by=spec.converter,
        )
        record["summary"]["outside_field_of_view"] = outside
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=1))
        move_into_place(staging=staging, dataset_dir=dataset_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return outside


def _channel_images(case: SourceCase) -> list[sitk.Image]:
    """The case's channels as 3-D images; 4-D files split as nnU-Net's MSD conversion does."""
    cache: dict[Path, sitk.Image] = {}
    images = []
    for channel in case.channels:
        if channel.path not in cache:
            cache[channel.path] = sitk.ReadImage(str(channel.path))
        image = cache[channel.path]
        if channel.volume is not None:
            array = sitk.GetArrayFromImage(image)[channel.volume]
            volume = sitk.GetImageFromArray(array)
            spatial = _spatial(Geometry(size=image.GetSize(), spacing=image.GetSpacing(), origin=image.GetOrigin(),
                                        direction=image.GetDirection()))
            volume.SetSpacing(spatial.spacing)
            volume.SetOrigin(spatial.origin)
            volume.SetDirection(spatial.direction)
            image = volume
        images.append(image)
    return images


def resample_onto(image: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Linear resampling of ``image`` onto ``reference``'s grid in scanner (physical) coordinates, as float32.

    This only aligns what the scanner coordinates align: it does not register the images. Outside the
    source's field of view the value is 0 (see :func:`voxels_outside_field_of_view`).
    """
    return sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), reference, sitk.Transform(), sitk.sitkLinear, 0.0,
                         sitk.sitkFloat32)


def voxels_outside_field_of_view(image: sitk.Image, reference: sitk.Image) -> int:
    """How many of ``reference``'s voxels lie outside ``image``'s field of view, where :func:`resample_onto` writes 0.

    SimpleITK's resampling treats a point as inside when it lies within half a voxel of the image's outer voxel
    centres, for nearest-neighbour as for linear interpolation, so resampling ones with the former counts them.
    """
    ones = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(image)
    inside = sitk.Resample(ones, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return int(np.prod(reference.GetSize())) - int(sitk.GetArrayViewFromImage(inside).sum(dtype=np.int64))


def _write_case(spec: DatasetSpec, case: SourceCase, staging: Path, *, with_label: bool) -> dict[str, list[int]]:
    """Write one case; return, per resampled channel, [voxels outside its field of view, voxels]."""
    images = _channel_images(case)
    reference = images[0]
    folder = IMAGES_TR if with_label else UNLABELED_IMAGES_FOLDER
    outside: dict[str, list[int]] = {}
    for index, (channel, image) in enumerate(zip(case.channels, images)):
        if channel.resample:
            outside[spec.channel_names[index]] = [voxels_outside_field_of_view(image, reference),
                                                  int(np.prod(reference.GetSize()))]
            image = resample_onto(image, reference)
        elif index:
            image.CopyInformation(reference)  # within tolerance (validated): snap, nnU-Net's check is tighter
        write_image(image=image, path=staging / folder / f"{case.case_id}_{index:04d}{OUTPUT_FILE_ENDING}")
    if with_label and case.label is not None:
        source = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
        mapped = np.zeros(source.shape, dtype=np.uint8)
        for value, target in spec.label_map.items():
            mapped[source == value] = target
        label = sitk.GetImageFromArray(mapped)
        label.CopyInformation(reference)
        write_image(image=label, path=staging / LABELS_TR / f"{case.case_id}{OUTPUT_FILE_ENDING}")
    return outside


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------
def _add_common_arguments(parser: argparse.ArgumentParser, *, default_name: str) -> None:
    parser.add_argument("-d", "--dataset-id", required=True, type=int, help="nnU-Net dataset id (0..999)")
    parser.add_argument("-n", "--dataset-name", default=default_name, help=f"dataset name (default {default_name})")
    parser.add_argument("--raw-root", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    parser.add_argument("--annotated", type=int, default=None, metavar="N",
                        help="keep the labels of only N annotated cases (drawn with --seed); the other annotated "
                             "cases go to imagesUnlabeled/ and their labels are listed in --hidden-labels-file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --annotated draw (default 0)")
    parser.add_argument("--hidden-labels-file", default=None,
                        help="where to list the hidden labels (default <raw root>/Dataset###_Name.hidden_labels.json,"
                             " outside the dataset folder)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="skip cases with a problem (listed in the summary) instead of stopping")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing dataset written from other sources or options")


def command_line(argv: Sequence[str] | None, *, prog: str, description: str, input_help: str,
                 convert_input: Callable[..., Summary], default_name: str, several_inputs: bool = False,
                 flags: Mapping[str, str] | None = None) -> None:
    """The ``main`` of every converter: ``-i``, the converter's own on/off ``flags`` (flag -> help, passed to
    ``convert_input(input, options, **flags)`` as keywords) and the common options; prints the summary on stdout,
    or the error on stderr and exits with status 2."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-i", "--input", required=True, nargs="+" if several_inputs else None, help=input_help)
    keywords = [parser.add_argument(flag, action="store_true", help=text).dest for flag, text in (flags or {}).items()]
    _add_common_arguments(parser, default_name=default_name)
    args = parser.parse_args(argv)
    try:
        raw_root = args.raw_root or os.environ.get("nnUNet_raw")
        if not raw_root:
            raise DatasetConversionError(["no output folder: pass --raw-root or set the nnUNet_raw environment "
                                          "variable"], context="invalid arguments")
        options = Options(raw_root=Path(raw_root), dataset_id=args.dataset_id, dataset_name=args.dataset_name,
                          overwrite=args.overwrite, skip_invalid=args.skip_invalid, annotated=args.annotated,
                          seed=args.seed,
                          hidden_labels_file=Path(args.hidden_labels_file) if args.hidden_labels_file else None)
        with sigterm_as_exit():  # a terminated run removes its staging folder itself
            summary = convert_input(args.input, options, **{key: getattr(args, key) for key in keywords})
    except DatasetConversionError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(summary.format())

"""The record a public-dataset conversion keeps in its dataset folder, and what a rerun makes of it.

``nnunet_mt_conversion.json`` holds the converter, the options that change the output, the fingerprint (size and
modification time, :mod:`nnunet_mt.file_fingerprint`) of every source file read, keyed by its resolved path, the
cases with problems found while scanning, and the fingerprint of every file written (``outputs``, keyed by its path
in the dataset folder). A rerun whose record equals it finds the dataset up to date, unless a file written has
changed since (deleted or edited by hand): then the dataset is written again, or, where the folder holds files the
conversion did not write (which a rewrite would delete), refused. A rerun whose record differs is refused, saying
what differs and what to do (unless ``--overwrite`` is given).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from nnunet_mt.dataset_conversion.public.cases import DatasetSpec, Discovery, Options
from nnunet_mt.file_fingerprint import describe_changes, file_fingerprint, files_fingerprint

RECORD_FILE = "nnunet_mt_conversion.json"
RECORD_VERSION = 1

_RERUN_ADVICE = "pass --overwrite to replace it, or give a new dataset id with -d"
_MAX_FILES_LISTED = 10


def _source_files(discovery: Discovery) -> list[Path]:
    files: list[Path] = []
    for case in discovery.cases:
        files.extend(channel.path for channel in case.channels)
        if case.label is not None:
            files.append(case.label)
    return sorted(dict.fromkeys(files))


def record(spec: DatasetSpec, discovery: Discovery, options: Options) -> dict:
    """What the output depends on: converter, options, and every source file's size and modification time."""
    return {
        "version": RECORD_VERSION,
        "converter": spec.converter,
        "options": {"skip_invalid": options.skip_invalid, "annotated": options.annotated, "seed": options.seed,
                    "hidden_labels_file": str(options.hidden_labels_file) if options.hidden_labels_file else None,
                    **{k: v for k, v in options.extra.items()}},
        "sources": files_fingerprint(_source_files(discovery)),
        "problems": {k: v for k, v in sorted(discovery.case_problems.items())},
    }


def existing_record(dataset_dir: Path) -> dict | str:
    """The record of the dataset in ``dataset_dir``, or why it has none."""
    record_file = dataset_dir / RECORD_FILE
    if not record_file.is_file():
        return f"it holds no {RECORD_FILE}"
    try:
        stored = json.loads(record_file.read_text())
    except (OSError, ValueError) as error:
        return f"its {RECORD_FILE} cannot be read ({error})"
    return stored if isinstance(stored, dict) else f"its {RECORD_FILE} holds no record"


def differences(stored: dict, current: dict) -> list[str]:
    """What makes ``current`` (this conversion) differ from ``stored`` (the one that wrote the dataset); [] if none."""
    if stored.get("converter") != current["converter"]:
        return [f"it was written by {stored.get('converter')}, not by {current['converter']}"]
    if stored.get("version") != current["version"] or "summary" not in stored:
        return [f"it was written by another version of {current['converter']}"]
    found = []
    old, new = stored.get("options", {}), current["options"]
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            found.append(f"--{key.replace('_', '-')}: {_shown(old.get(key))} then, {_shown(new.get(key))} now")
    changed = describe_changes(stored.get("sources", {}), current["sources"], exists=os.path.exists)
    found.extend(changed[:_MAX_FILES_LISTED])
    if len(changed) > _MAX_FILES_LISTED:
        found.append(f"and {len(changed) - _MAX_FILES_LISTED} more source files")
    old, new = sorted(stored.get("problems", {})), sorted(current["problems"])
    if old != new:
        found.append(f"cases with problems in the sources: {', '.join(old) or 'none'} then, "
                     f"{', '.join(new) or 'none'} now")
    return found


def outputs_fingerprint(dataset_dir: Path) -> dict[str, list[int] | None]:
    """The fingerprint of every file in ``dataset_dir`` but the record, keyed by its path relative to the folder
    (which may move with the raw root)."""
    files = sorted(p for p in dataset_dir.rglob("*") if p.is_file() and p != dataset_dir / RECORD_FILE)
    return {str(p.relative_to(dataset_dir)): file_fingerprint(p) for p in files}


def output_changes(dataset_dir: Path, stored: dict) -> tuple[list[str], list[str]]:
    """(files written that changed since, files the conversion did not write), one line each naming the file;
    nothing for a record without ``outputs`` (written by an earlier version, which did not keep them)."""
    if "outputs" not in stored:
        return [], []
    then = {str(dataset_dir / name): value for name, value in stored["outputs"].items()}
    now = {str(dataset_dir / name): value for name, value in outputs_fingerprint(dataset_dir).items()}
    changes = describe_changes(then, now)
    added = [line for line in changes if line.endswith(": added")]
    return [line for line in changes if line not in added], added


def foreign_files_refusal(dataset_dir: Path, added: list[str]) -> str:
    """Why a dataset whose record is this conversion's is not rewritten: it holds files a rewrite would delete."""
    listed = "".join(f"\n      {line}" for line in added[:_MAX_FILES_LISTED])
    more = f"\n      and {len(added) - _MAX_FILES_LISTED} more" if len(added) > _MAX_FILES_LISTED else ""
    return f"output dataset folder {dataset_dir} holds files its conversion did not write:{listed}{more}\n    " \
           f"writing the dataset again would delete them: move them out of it, or pass --overwrite to replace it"


def _shown(value: object) -> str:
    """An option's value as the command line sets it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return "not given" if value is None else str(value)


def refusal(dataset_dir: Path, converter: str, existing: dict | str, found: list[str] | None) -> str:
    """Why an existing dataset folder is not replaced (``existing``: its record, or why it has none; ``found``: what
    differs), and what to do."""
    if isinstance(existing, str):
        return f"output dataset folder {dataset_dir} already exists and was not written by {converter} ({existing}); " \
               f"{_RERUN_ADVICE}"
    listed = "".join(f"\n      {difference}" for difference in found or [])
    return f"output dataset folder {dataset_dir} already exists and was written by another conversion:{listed}\n" \
           f"    {_RERUN_ADVICE}"

"""The record a conversion keeps in its dataset folder, and what a rerun makes of it (``nnunet_mt_convert`` and the
public releases' converters alike).

``nnunet_mt_conversion.json`` holds the converter, the options that change the output, the fingerprint (size and
modification time, :mod:`nnunet_mt.utils.file_fingerprint`) of every source file read, keyed by its absolute path, the
cases with problems found while scanning, and the fingerprint of every file written (``outputs``, keyed by its path
in the dataset folder). A rerun whose record equals it finds the dataset up to date, unless a file written has
changed since (deleted or edited by hand): then the dataset is written again, or, where the folder holds files the
conversion did not write (which a rewrite would delete), refused. A rerun whose record differs is refused, saying
what differs and what to do (unless ``--overwrite`` is given).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_mt.utils.file_fingerprint import describe_changes, file_fingerprint

RECORD_FILE = "nnunet_mt_conversion.json"
RECORD_VERSION = 1

_RERUN_ADVICE = "pass --overwrite to replace it, or give a new dataset id with -d"
_MAX_FILES_LISTED = 10


@dataclass
class Rerun:
    """What an existing dataset folder means for this conversion."""

    #: the record found in the folder, why it has none (a str), or None where there is no folder
    existing: dict | str | None = None
    #: files written by this very conversion that changed since: the dataset is written again
    damaged: list[str] = field(default_factory=list)
    #: why the folder is not replaced (empty: it may be)
    problems: list[str] = field(default_factory=list)
    up_to_date: bool = False

    def notes(self, dataset_dir: Path) -> list[str]:
        """What the summary says about a dataset written again because its files changed."""
        if not self.damaged:
            return []
        return [f"rewrote {dataset_dir}: {len(self.damaged)} of its files changed since the conversion wrote them:",
                *(f"  {line}" for line in self.damaged)]


def compare_with_existing(dataset_dir: Path, current: dict, *, overwrite: bool, converter: str) -> Rerun:
    """Whether the dataset in ``dataset_dir`` is this conversion's (``current``: its record) and intact, to be
    written again, or not to be replaced (unless ``overwrite``)."""
    if not dataset_dir.is_dir():
        return Rerun()
    existing = existing_record(dataset_dir)
    found = differences(existing, current) if isinstance(existing, dict) else None
    if overwrite:
        return Rerun(existing)
    if found == []:
        damaged, foreign = output_changes(dataset_dir, existing)
        if foreign:
            return Rerun(existing, damaged, [foreign_files_refusal(dataset_dir, foreign)])
        return Rerun(existing, damaged, up_to_date=not damaged)
    return Rerun(existing, problems=[refusal(dataset_dir, converter, existing, found)])


def write_record(folder: Path, record: dict) -> None:
    """Write ``record`` into the dataset being built in ``folder``, with the fingerprint of every file in it (kept
    by the rename into place, so that a later change to one of them shows)."""
    record["outputs"] = outputs_fingerprint(folder)
    (folder / RECORD_FILE).write_text(json.dumps(record, indent=1))


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

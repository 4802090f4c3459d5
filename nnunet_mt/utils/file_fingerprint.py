"""Which source files a rerun finds changed: each file's size and modification time, not its contents.

The public converters keep ``{resolved path: fingerprint}`` of every file they read in the dataset's
``nnunet_mt_conversion.json``; the unannotated preprocessing keeps ``{file name: fingerprint}`` of a case's scans
in its ``.pkl`` properties (key ``nnunet_mt_source_fingerprint``). A fingerprint is ``[size in bytes, mtime in
ns]``, or None for a file that could not be looked at. Nothing here caches or writes anything.
"""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

def file_fingerprint(path: str | os.PathLike) -> list[int] | None:
    """``[size in bytes, modification time in ns]`` of the file at ``path`` (``os.stat``), or None when it cannot
    be looked at (missing, or a folder on the way is not readable)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return [int(info.st_size), int(info.st_mtime_ns)]


def files_fingerprint(paths: Iterable[str | os.PathLike], *, by_name: bool = False) -> dict[str, list[int] | None]:
    """``{str(path): file_fingerprint(path)}`` in the order of ``paths``; with ``by_name`` keyed by the file name
    alone (for files of one folder that may move as a whole)."""
    return {(Path(path).name if by_name else str(path)): file_fingerprint(path) for path in paths}


def changed_fingerprints(before: Mapping[str, Sequence[int] | None],
                         now: Mapping[str, Sequence[int] | None]) -> list[str]:
    """The keys (paths or names), sorted, that are in only one of two fingerprints or whose entries differ."""
    return sorted(key for key in set(before) | set(now)
                  if key not in before or key not in now or before[key] != now[key])


def describe_changes(before: Mapping[str, Sequence[int] | None], now: Mapping[str, Sequence[int] | None], *,
                     exists: Callable[[str], bool] | None = None) -> list[str]:
    """One line per :func:`changed_fingerprints` key, in that order: ``"<key>: added"``, ``"<key>: removed"`` (or
    ``"<key>: no longer read"`` where ``exists(key)`` says the file is still there; ``exists`` None: not asked),
    ``"<key>: cannot be read now"`` / ``"<key>: could not be read then"``, ``"<key>: size changed from A to B
    bytes"``, or ``"<key>: modified (same size, modification time changed from T0 to T1)"`` (local time, ms)."""
    return [_change(key, before, now, exists) for key in changed_fingerprints(before, now)]


def _change(key: str, before: Mapping[str, Sequence[int] | None], now: Mapping[str, Sequence[int] | None],
            exists: Callable[[str], bool] | None) -> str:
    if key not in before:
        return f"{key}: added"
    if key not in now:
        return f"{key}: {'no longer read' if exists is not None and exists(key) else 'removed'}"
    old, new = before[key], now[key]
    if new is None or old is None:
        return f"{key}: {'cannot be read now' if new is None else 'could not be read then'}"
    if old[0] != new[0]:
        return f"{key}: size changed from {old[0]} to {new[0]} bytes"
    return f"{key}: modified (same size, modification time changed from {_time(old[1])} to {_time(new[1])})"


def _time(ns: int) -> str:
    """A modification time in ns as local date and time, to the millisecond."""
    return datetime.fromtimestamp(ns / 1e9).isoformat(sep=" ", timespec="milliseconds")

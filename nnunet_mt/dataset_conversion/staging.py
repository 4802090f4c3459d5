"""Hidden staging folders beside a dataset: how they are named, and how a later run removes those of killed runs.

Every writer here (``nnunet_mt_convert``, the public converters, the synthetic generator) builds its dataset in a
hidden sibling folder and renames it into place, so nnU-Net never sees half a dataset. A run killed with SIGKILL
(or SIGTERM outside the command lines, which turn it into a normal exit with :class:`sigterm_as_exit`) leaves that
folder behind: :func:`remove_stale_temporaries` at the start of the next run removes it and says so.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sys
import uuid
from pathlib import Path
from typing import Callable, Iterator, Sequence

# Temporary siblings of a dataset folder: '.<name>.<kind>-<pid>@<host>-<token>'. The writer's PID and host are in
# the name (not in a file inside, which would end up in the dataset) so that a later run can tell a folder left by
# a killed run from one a concurrent run is still writing. Names without them come from older versions. 'tmp' and
# 'old' are the synthetic generator's staging folder and backup, 'partial' and 'replaced' the converters'.
TEMPORARY_KINDS = ("partial", "replaced", "tmp", "old")
_BACKUP_KINDS = ("replaced", "old")
HOST_TAG = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40] or "host"
_TEMPORARY_PATTERN = re.compile(r"^\.(?P<target>.+)\.(?P<kind>" + "|".join(TEMPORARY_KINDS)
                                + r")-(?:(?P<pid>\d+)(?:@(?P<host>[A-Za-z0-9]+))?-)?[0-9a-f]{8}$")
_DATASET_TARGET = re.compile(r"^Dataset\d{3}_")


def temporary_sibling(target: Path, kind: str) -> Path:
    """``<parent>/.<name>.<kind>-<pid>@<host>-<token>``: hidden, beside ``target``, naming its writer."""
    assert kind in TEMPORARY_KINDS, kind
    return target.parent / f".{target.name}.{kind}-{os.getpid()}@{HOST_TAG}-{uuid.uuid4().hex[:8]}"


def _process_gone(pid: int) -> bool:
    """True when no process ``pid`` runs here (an exited but unreaped process counts as gone)."""
    if os.name == "nt":
        return False  # os.kill would terminate the process there; keep the folder rather than guess
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return True
    except PermissionError:
        return False  # someone else's live process
    try:  # a zombie still answers kill(0) but writes nothing any more
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _stale_temporaries(folder: Path, targets: Sequence[str] | None) -> Iterator[tuple[Path, re.Match]]:
    for entry in sorted(folder.iterdir()) if folder.is_dir() else ():
        match = _TEMPORARY_PATTERN.match(entry.name)
        if match is not None and (match["target"] in targets if targets is not None
                                  else _DATASET_TARGET.match(match["target"])):
            yield entry, match


def remove_stale_temporaries(folder: Path, log: Callable[[str], None] = print,
                             targets: Sequence[str] | None = None) -> list[Path]:
    """Remove the temporary folders (and files) that killed runs left in ``folder``; return what was removed.

    Only temporaries of ``targets`` (names in ``folder``), by default of any ``Dataset###_*``. Stale means its
    writer process is gone (or, for names without a PID, written by an older version). Folders of a live writer (a
    concurrent conversion) are kept; those written on another host are kept and mentioned, since whether their
    writer runs cannot be told from here. A stale backup (``.replaced-``, ``.old-``) whose target is missing holds
    the previous dataset (the run was killed between its two renames): it is put back, not deleted.
    """
    removed = []
    for entry, match in _stale_temporaries(Path(folder), targets):
        pid, host = match["pid"], match["host"]
        if host is not None and host != HOST_TAG:
            log(f"note: left {entry} alone: written on another host ({host}), its writer may still run there")
            continue
        if pid is not None and not _process_gone(int(pid)):
            continue  # a concurrent run is writing it
        writer = f"process {pid} no longer runs" if pid is not None else "written by an older version"
        target = entry.parent / match["target"]
        if match["kind"] in _BACKUP_KINDS and entry.is_dir() and not target.exists():
            entry.rename(target)
            log(f"restored {target} from {entry.name}, left by an interrupted overwrite ({writer})")
            continue
        what = "folder" if entry.is_dir() and not entry.is_symlink() else "file"
        try:
            if what == "folder":
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as error:  # not this run's to fail on: its own output is written beside it
            log(f"note: could not remove {entry}, a temporary {what} left by an interrupted run ({writer}): "
                f"{error.strerror or error}; delete it by hand")
            continue
        removed.append(entry)
        log(f"removed {entry}, a temporary {what} left by an interrupted run ({writer})")
    return removed


def _raise_system_exit(signum: int, _frame) -> None:
    sys.exit(128 + signum)


class sigterm_as_exit:
    """Context manager for command lines: SIGTERM raises SystemExit, so ``finally``/``except BaseException``
    clean-up (the staging folder) runs instead of the process vanishing. The previous handler is restored."""

    def __enter__(self) -> "sigterm_as_exit":
        self._previous = signal.signal(signal.SIGTERM, _raise_system_exit)
        return self

    def __exit__(self, *exc_info) -> None:
        signal.signal(signal.SIGTERM, self._previous)

"""Files written whole or not at all: a kill between the write and the rename leaves the old file (or none),
never half a new one."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Mapping, Sequence


def write_atomically(write, filename, tmp=None) -> None:
    """``write(tmp)``, then ``tmp`` renamed onto ``filename``. Nothing is renamed when ``write`` wrote nothing
    (nnU-Net's checkpoint save is a no-op on other DDP ranks).

    ``tmp``: by default ``<filename>.tmp``. Name another path on the same file system where a left-over
    temporary file must not sit beside ``filename``: nnU-Net refuses a preprocessed folder holding a second
    file ending (``infer_dataset_class``)."""
    tmp = os.fspath(tmp) if tmp is not None else f"{os.fspath(filename)}.tmp"
    write(tmp)
    if os.path.isfile(tmp):
        os.replace(tmp, filename)


def write_json(path: Path, obj) -> None:
    """``obj`` as indented JSON at ``path`` (its folder made if missing), through ``<name>.tmp`` and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1)), path)


def write_csv(path: Path, rows: Sequence[Mapping], fieldnames: Sequence[str] | None = None,
              float_format: str | None = None) -> Path:
    """``rows`` as CSV at ``path`` (its folder made if missing), through ``<name>.tmp`` and a rename.

    ``fieldnames``: the columns, in order; keys of a row outside them are left out. By default the first row's
    keys (then ``rows`` must not be empty). ``float_format``: a format spec for float cells (``".6g"``); by
    default Python's shortest repr, which reads back to the same float."""
    path = Path(path)
    if fieldnames is None:
        if not rows:
            raise ValueError(f"{path}: no rows and no fieldnames, so no header to write")
        fieldnames = list(rows[0])

    def cell(v):
        return format(v, float_format) if float_format is not None and isinstance(v, float) else v

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(fieldnames), extrasaction="ignore")
            writer.writeheader()
            writer.writerows({k: cell(v) for k, v in row.items()} for row in rows)

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(write, path)
    return path

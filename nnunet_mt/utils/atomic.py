"""Files written whole or not at all: a kill between the write and the rename leaves the old file (or none),
never half a new one."""
from __future__ import annotations

import json
import os
from pathlib import Path


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

"""Files written whole or not at all: a kill between the write and the rename leaves the old file (or none),
never half a new one."""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_atomically(write, filename) -> None:
    """``write(tmp)`` to ``<filename>.tmp``, then renamed onto ``filename``. Nothing is renamed when ``write``
    wrote nothing (nnU-Net's checkpoint save is a no-op on other DDP ranks)."""
    tmp = f"{filename}.tmp"
    write(tmp)
    if os.path.isfile(tmp):
        os.replace(tmp, filename)


def write_json(path: Path, obj) -> None:
    """``obj`` as indented JSON at ``path`` (its folder made if missing), through ``<name>.tmp`` and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1)), path)

"""Files written whole or not at all: a kill between the write and the rename leaves the old file (or none),
never half a new one."""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(path: Path, obj) -> None:
    """``obj`` as indented JSON at ``path`` (its folder made if missing), through ``<name>.tmp`` and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)

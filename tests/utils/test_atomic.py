"""Whole-or-nothing JSON files."""
from __future__ import annotations

import json

from nnunet_mt.utils.atomic import write_json


def test_write_json_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "deep" / "er" / "state.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]

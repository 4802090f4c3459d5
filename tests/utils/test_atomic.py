"""Whole-or-nothing files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnunet_mt.utils.atomic import write_atomically, write_json


def test_write_json_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "deep" / "er" / "state.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_a_write_that_fails_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "state.json"
    write_json(path, {"a": 1})

    def half_then_fail(tmp):
        Path(tmp).write_text('{"a": ')
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        write_atomically(half_then_fail, path)
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "state.json.tmp"]


def test_the_temporary_file_goes_where_it_is_named_and_nothing_is_renamed_when_nothing_was_written(tmp_path):
    data, side = tmp_path / "data", tmp_path / "data" / "labels"
    side.mkdir(parents=True)
    seen = []

    def write(tmp):
        seen.append(tmp)
        Path(tmp).write_bytes(b"cache")

    write_atomically(write, data / "cache.pkl", tmp=side / ".cache.pkl.tmp")
    assert seen == [str(side / ".cache.pkl.tmp")] and (data / "cache.pkl").read_bytes() == b"cache"
    assert sorted(p.name for p in data.iterdir()) == ["cache.pkl", "labels"] and not list(side.iterdir())
    write_atomically(lambda tmp: None, data / "other.pkl")  # e.g. nnU-Net's save on another DDP rank
    assert not (data / "other.pkl").exists()

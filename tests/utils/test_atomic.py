"""Whole-or-nothing files."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from nnunet_mt.utils.atomic import write_atomically, write_csv, write_json


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


def test_write_csv_keeps_the_named_columns_in_order_and_formats_floats_only_when_asked(tmp_path):
    rows = [{"method": "DeepMedic", "dice": 0.59154321, "n": 10, "extra": "dropped"},
            {"method": "MeanTeacher", "dice": 1 / 3, "n": 10}]
    path = write_csv(tmp_path / "out" / "t.csv", rows, ["n", "method", "dice"])
    assert path == tmp_path / "out" / "t.csv"
    assert path.read_text().splitlines() == ["n,method,dice", "10,DeepMedic,0.59154321",
                                             "10,MeanTeacher,0.3333333333333333"]
    write_csv(path, rows, ["method", "dice"], float_format=".6g")
    assert path.read_text().splitlines() == ["method,dice", "DeepMedic,0.591543", "MeanTeacher,0.333333"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.csv"]


def test_write_csv_takes_the_first_rows_keys_by_default_and_refuses_no_rows_without_columns(tmp_path):
    path = write_csv(tmp_path / "t.csv", [{"seed": 0, "dice": 0.5}, {"seed": 1, "dice": 0.25}])
    assert list(csv.DictReader(path.open())) == [{"seed": "0", "dice": "0.5"}, {"seed": "1", "dice": "0.25"}]
    with pytest.raises(ValueError, match=r"empty\.csv: no rows and no fieldnames"):
        write_csv(tmp_path / "empty.csv", [])
    assert not (tmp_path / "empty.csv").exists()
    assert write_csv(tmp_path / "empty.csv", [], ["seed"]).read_text().splitlines() == ["seed"]

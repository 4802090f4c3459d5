"""nnunet_mt.utils.file_fingerprint: a file's [size, mtime_ns], a set of files', and what changed between two."""
from __future__ import annotations

import json
import os
import pickle
import time

import pytest

from nnunet_mt.utils.file_fingerprint import changed_fingerprints, describe_changes, file_fingerprint, files_fingerprint

T0 = 1_700_000_000_123_000_000  # 2023-11-14 22:13:20.123 UTC, in ns
T1 = T0 + 2_500_000_000  # 2.5 s later


@pytest.fixture
def utc(monkeypatch):
    """Local time is UTC while the test runs (the change descriptions show local time)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_file_fingerprint_is_the_size_and_mtime_ns_os_stat_reports(tmp_path):
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(b"x" * 1234)
    os.utime(path, ns=(T0, T1))
    info = os.stat(path)
    assert file_fingerprint(path) == [info.st_size, info.st_mtime_ns] == [1234, T1]
    assert file_fingerprint(str(path)) == [1234, T1]
    assert file_fingerprint(tmp_path / "missing.nii.gz") is None


def test_files_fingerprint_keys_by_path_or_by_name_in_the_given_order(tmp_path):
    b, a = tmp_path / "b.nii.gz", tmp_path / "a.nii.gz"
    b.write_bytes(b"bb")
    a.write_bytes(b"a")
    os.utime(b, ns=(T0, T0))
    os.utime(a, ns=(T0, T1))
    missing = tmp_path / "gone.nii.gz"
    by_path = files_fingerprint([b, a, missing])
    assert list(by_path.items()) == [(str(b), [2, T0]), (str(a), [1, T1]), (str(missing), None)]
    assert list(files_fingerprint([str(b), str(a)], by_name=True).items()) == [("b.nii.gz", [2, T0]),
                                                                                ("a.nii.gz", [1, T1])]


def test_fingerprints_read_back_from_json_and_pickle_are_unchanged(tmp_path):
    # what the converters store (nnunet_mt_conversion.json) and the preprocessing stores (.pkl properties)
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(b"voxels")
    written = files_fingerprint([path])
    for read_back in (json.loads(json.dumps(written)), pickle.loads(pickle.dumps(written))):
        assert read_back == files_fingerprint([path])
        assert changed_fingerprints(read_back, files_fingerprint([path])) == []
        assert describe_changes(read_back, files_fingerprint([path])) == []


BEFORE = {"/d/same.nii.gz": [100, T0], "/d/removed.nii.gz": [10, T0], "/d/resized.nii.gz": [50, T0],
          "/d/touched.nii.gz": [70, T0]}
NOW = {"/d/same.nii.gz": [100, T0], "/d/added.nii.gz": [5, T1], "/d/resized.nii.gz": [51, T1],
       "/d/touched.nii.gz": [70, T1]}


def test_changed_fingerprints_are_the_added_removed_and_differing_keys_sorted():
    assert changed_fingerprints(BEFORE, NOW) == ["/d/added.nii.gz", "/d/removed.nii.gz", "/d/resized.nii.gz",
                                                 "/d/touched.nii.gz"]
    assert changed_fingerprints(BEFORE, BEFORE) == []
    assert changed_fingerprints({}, {}) == []


def test_describe_changes_one_line_per_changed_file(utc):
    assert describe_changes(BEFORE, NOW) == [
        "/d/added.nii.gz: added",
        "/d/removed.nii.gz: removed",
        "/d/resized.nii.gz: size changed from 50 to 51 bytes",
        "/d/touched.nii.gz: modified (same size, modification time changed from 2023-11-14 22:13:20.123 to "
        "2023-11-14 22:13:22.623)",
    ]


def test_describe_changes_files_still_there_and_unreadable_ones(utc):
    assert describe_changes(BEFORE, NOW, exists=lambda key: key == "/d/removed.nii.gz")[1] == \
        "/d/removed.nii.gz: no longer read"
    assert describe_changes({"a": [1, T0], "b": None}, {"a": None, "b": [1, T0]}) == [
        "a: cannot be read now", "b: could not be read then"]

"""Fingerprints of the source dataset: a rerun on changed sources stops and names the files."""
from __future__ import annotations

import argparse
import hashlib
import json
import os

import pytest

from nnunet_mt.runner.reproduction import Reproduction
from nnunet_mt.runner.source_dataset import ReproduceError, changed_source_files, fingerprint, read_source
from fake_source import _fake_dataset


def _runner(folder, work):
    args = argparse.Namespace(workdir=work, counts=[2], methods=["DeepMedic"], seed=0, shared_test=None,
                              init_epochs=1, epochs=1, iterations_per_epoch=1, val_iterations=1, rampup=None,
                              trainer_suffix="", disable_tta=False)
    return Reproduction(args, read_source(folder))


def test_fingerprint_hashes_content_and_reuses_unchanged_entries(tmp_path):
    folder = _fake_dataset(tmp_path)
    (folder / "labelsTr" / "a.nii.gz").write_bytes(b"label a")
    fp = fingerprint(read_source(folder))
    assert fp["labelsTr/a.nii.gz"][0] == 7
    assert fp["labelsTr/a.nii.gz"][2] == hashlib.sha256(b"label a").hexdigest()
    assert set(fp) >= {"dataset.json", "imagesTr/a_0000.nii.gz", "imagesUnlabeled/u1_0001.nii.gz"}
    # an entry whose size and mtime match is taken as recorded (no re-read): a stale hash shows it
    stale = {k: [v[0], v[1], "recorded"] for k, v in fp.items()}
    assert all(v[2] == "recorded" for v in fingerprint(read_source(folder), stale).values())


def test_touched_is_not_changed(tmp_path):
    folder = _fake_dataset(tmp_path)
    before = fingerprint(read_source(folder))
    f = folder / "imagesTr" / "b_0000.nii.gz"
    os.utime(f, ns=(1, 1))
    assert changed_source_files(before, fingerprint(read_source(folder), before)) == {"changed": [], "added": [],
                                                                                      "removed": []}


def test_rerun_on_changed_sources_stops_naming_the_files(tmp_path):
    folder = _fake_dataset(tmp_path / "raw")
    work = tmp_path / "work"
    (folder / "labelsTs" / "d.nii.gz").write_bytes(b"a lesion")
    _runner(folder, work).prepare()
    recorded = json.loads((work / "manifest.json").read_text())["source_files"]
    assert "labelsTs/d.nii.gz" in recorded
    _runner(folder, work).prepare()  # unchanged: fine
    (folder / "imagesTr" / "a_0001.nii.gz").write_bytes(b"replaced image")
    (folder / "labelsTs" / "d.nii.gz").write_bytes(b"")  # an emptied test label
    (folder / "labelsTr" / "c.nii.gz").write_bytes(b"new label")
    with pytest.raises(ReproduceError) as exc:
        _runner(folder, work).prepare()
    text = str(exc.value)
    assert "changed (3): imagesTr/a_0001.nii.gz, labelsTr/c.nii.gz, labelsTs/d.nii.gz" in text and "new --workdir" in text
    assert json.loads((work / "manifest.json").read_text())["source_files"] == recorded  # not overwritten
    (folder / "imagesTr" / "a_0001.nii.gz").write_bytes(b"")
    (folder / "labelsTr" / "c.nii.gz").write_bytes(b"")
    (folder / "labelsTs" / "d.nii.gz").write_bytes(b"a lesion")
    _runner(folder, work).prepare()  # restored: continues

"""The synthetic generator after a killed run: stale staging folders are removed, and said so;
a concurrent run's are kept; a backup left between the two renames of an overwrite is put back."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from nnunet_mt.dataset_conversion import synthetic_stroke_dwi as sdwi
from nnunet_mt.dataset_conversion.staging import HOST_TAG

DATASET = "Dataset994_SyntheticStrokeDWI"
TINY = dict(dataset_id=994, num_train=1, num_test=0, num_unlabeled=1, shape=(48, 48, 6), spacing=(4.8, 4.8, 22.75),
            montage=False)


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_stale_staging_of_a_killed_run_is_removed_and_a_live_one_kept(tmp_path: Path, capsys):
    raw = tmp_path / "raw"
    truth_parent = sdwi.unlabeled_truth_folder(raw, 994).parent
    stale = raw / f".{DATASET}.tmp-{_dead_pid()}-0123abcd"  # the name an older version gave (no host)
    stale_truth = truth_parent / f".labelsUnlabeled.tmp-{_dead_pid()}@{HOST_TAG}-0123abcd"
    live = raw / f".{DATASET}.tmp-{os.getpid()}@{HOST_TAG}-fedcba98"  # a concurrent run is writing it
    for folder in (stale, stale_truth, live):
        (folder / "imagesTr").mkdir(parents=True)
    dataset = sdwi.generate_synthetic_stroke_dwi(raw, **TINY)
    out = capsys.readouterr().out
    assert f"removed {stale}" in out and f"removed {stale_truth}" in out, out
    assert sorted(p.name for p in raw.iterdir()) == sorted([DATASET, live.name])
    assert sorted(p.name for p in truth_parent.iterdir()) == ["labelsUnlabeled"]
    assert (dataset / "dataset.json").is_file()


def test_backup_left_between_the_renames_of_an_overwrite_is_restored(tmp_path: Path, capsys):
    raw = tmp_path / "raw"
    backup = raw / f".{DATASET}.old-{_dead_pid()}@{HOST_TAG}-0123abcd"
    backup.mkdir(parents=True)
    (backup / "dataset.json").write_text("{}")
    with pytest.raises(FileExistsError, match=DATASET):  # restored, so it exists: overwrite is needed again
        sdwi.generate_synthetic_stroke_dwi(raw, **TINY)
    assert (raw / DATASET / "dataset.json").read_text() == "{}"
    assert f"restored {raw / DATASET}" in capsys.readouterr().out

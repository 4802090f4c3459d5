"""A source dataset of empty files, for the runner's checks (they read names, never images)."""
from __future__ import annotations

import json
from pathlib import Path


def _fake_dataset(raw: Path, name: str = "Dataset321_Fake", tr=("a", "b", "c"), ts_labelled=("d",),
                  ts_unlabelled=("e",), unlabeled=("u1", "u2"), channels: int = 2) -> Path:
    """File names only (read_source does not open the images)."""
    folder = raw / name
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True)
    for case in tr:
        for c in range(channels):
            (folder / "imagesTr" / f"{case}_{c:04d}.nii.gz").touch()
        (folder / "labelsTr" / f"{case}.nii.gz").touch()
    for case in (*ts_labelled, *ts_unlabelled):
        for c in range(channels):
            (folder / "imagesTs" / f"{case}_{c:04d}.nii.gz").touch()
    for case in ts_labelled:
        (folder / "labelsTs" / f"{case}.nii.gz").touch()
    if unlabeled is not None:
        (folder / "imagesUnlabeled").mkdir()
        for case in unlabeled:
            for c in range(channels):
                (folder / "imagesUnlabeled" / f"{case}_{c:04d}.nii.gz").touch()
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {str(c): f"ch{c}" for c in range(channels)}, "labels": {"background": 0, "lesion": 1},
        "numTraining": len(tr), "file_ending": ".nii.gz"}))
    return folder

"""The source dataset of ``nnunet_mt_reproduce`` / ``nnunet_mt_schedule``: its annotated pool, its
unannotated scans, and a fingerprint of every file, so a rerun on changed sources stops instead of
reporting old trainings against new labels."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

UNLABELED_FOLDER = "imagesUnlabeled"


class ReproduceError(Exception):
    """A problem with the inputs or the work folder, reported without a traceback."""


# ---- the source dataset ------------------------------------------------------------------------
@dataclass
class SourceDataset:
    folder: Path
    dataset_json: dict
    file_ending: str
    num_channels: int
    #: case -> (channel files in channel order, label file)
    annotated: dict[str, tuple[list[Path], Path]] = field(default_factory=dict)
    #: case -> channel files
    unlabeled: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The dataset name without ``DatasetXXX_``."""
        return self.folder.name.split("_", 1)[1] if "_" in self.folder.name else self.folder.name

    @property
    def pool(self) -> list[str]:
        return sorted(self.annotated)


def find_dataset_folder(raw_root: Path, dataset: str) -> Path:
    """The folder of dataset ``dataset`` (an ID such as ``501`` or a name ``Dataset501_X``) in ``raw_root``.

    Resolved here rather than with nnU-Net's helpers, which read ``nnUNet_raw`` when imported."""
    raw_root = Path(raw_root)
    if not raw_root.is_dir():
        raise ReproduceError(f"nnU-Net raw folder {raw_root} does not exist")
    if re.fullmatch(r"\d+", dataset):
        prefix = f"Dataset{int(dataset):03d}_"
        found = sorted(p for p in raw_root.iterdir() if p.is_dir() and p.name.startswith(prefix))
        if not found:
            raise ReproduceError(f"no dataset with ID {int(dataset)} ({prefix}*) in {raw_root}")
        if len(found) > 1:
            raise ReproduceError(f"more than one dataset with ID {int(dataset)} in {raw_root}: "
                                 + ", ".join(p.name for p in found))
        return found[0]
    if not re.fullmatch(r"Dataset\d{3}_.+", dataset):
        raise ReproduceError(f"-d {dataset!r}: expected a dataset ID (e.g. 501) or name (Dataset501_Name)")
    folder = raw_root / dataset
    if not folder.is_dir():
        raise ReproduceError(f"dataset {dataset} not found in {raw_root}")
    return folder


def _images_in(folder: Path, file_ending: str, num_channels: int) -> dict[str, list[Path]]:
    """Case -> channel files (``CASE_XXXX<ending>``) in ``folder``; every channel must be there."""
    channels: dict[str, dict[int, Path]] = {}
    for f in sorted(folder.iterdir()):
        if not f.name.endswith(file_ending) or f.name.startswith("."):
            continue
        m = re.fullmatch(r"(.+)_(\d{4})", f.name[:-len(file_ending)])
        if m is None:
            raise ReproduceError(f"{f}: image files must be named CASE_XXXX{file_ending} (XXXX: channel)")
        channels.setdefault(m.group(1), {})[int(m.group(2))] = f
    cases = {}
    for case, files in channels.items():
        missing = [c for c in range(num_channels) if c not in files]
        extra = sorted(set(files) - set(range(num_channels)))
        if missing or extra:
            raise ReproduceError(f"case {case} in {folder}: expected channels 0..{num_channels - 1} "
                                 f"(dataset.json), missing {missing}, unexpected {extra}")
        cases[case] = [files[c] for c in range(num_channels)]
    return cases


def _labels_in(folder: Path, file_ending: str) -> dict[str, Path]:
    return {f.name[:-len(file_ending)]: f for f in sorted(folder.iterdir())
            if f.name.endswith(file_ending) and not f.name.startswith(".")}


def read_source(folder: Path) -> SourceDataset:
    """The annotated pool (imagesTr/labelsTr and imagesTs/labelsTs) and the unannotated scans."""
    folder = Path(folder)
    dj_file = folder / "dataset.json"
    if not dj_file.is_file():
        raise ReproduceError(f"{dj_file} is missing")
    dataset_json = json.loads(dj_file.read_text())
    if "dataset" in dataset_json:
        raise ReproduceError(f"{dj_file} lists its files explicitly (a 'dataset' entry); the runner needs the "
                             f"standard imagesTr/labelsTr layout")
    channel_names = dataset_json.get("channel_names", dataset_json.get("modality"))
    if not channel_names or "file_ending" not in dataset_json:
        raise ReproduceError(f"{dj_file} needs 'channel_names' and 'file_ending'")
    ending = dataset_json["file_ending"]
    source = SourceDataset(folder, dataset_json, ending, len(channel_names))
    seen: dict[str, str] = {}

    def claim(case: str, where: str) -> None:
        if case in seen:
            raise ReproduceError(f"case id {case} occurs in both {seen[case]} and {where} of {folder}; "
                                 f"case ids must be unique")
        seen[case] = where

    if not (folder / "imagesTr").is_dir() or not (folder / "labelsTr").is_dir():
        raise ReproduceError(f"{folder} needs imagesTr/ and labelsTr/")
    for images_dir, labels_dir in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
        if not (folder / images_dir).is_dir():
            continue
        images = _images_in(folder / images_dir, ending, source.num_channels)
        labels = _labels_in(folder / labels_dir, ending) if (folder / labels_dir).is_dir() else {}
        orphans = sorted(set(labels) - set(images))
        if orphans:
            raise ReproduceError(f"{folder / labels_dir} has labels without images in {images_dir}: {orphans}")
        unlabelled = sorted(set(images) - set(labels))
        if unlabelled:
            print(f"note: {len(unlabelled)} case(s) in {images_dir} have no label in {labels_dir} and are not "
                  f"used: {', '.join(unlabelled[:5])}{' ...' if len(unlabelled) > 5 else ''}")
        for case in sorted(labels):
            claim(case, images_dir)
            source.annotated[case] = (images[case], labels[case])
    if (folder / UNLABELED_FOLDER).is_dir():
        for case, files in _images_in(folder / UNLABELED_FOLDER, ending, source.num_channels).items():
            claim(case, UNLABELED_FOLDER)
            source.unlabeled[case] = files
    return source


# ---- fingerprints --------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    """The sha256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_files(source: SourceDataset) -> dict[str, Path]:
    """Every file results depend on, by its path relative to the dataset folder."""
    files = [source.folder / "dataset.json"]
    for images, label in source.annotated.values():
        files += [*images, label]
    for images in source.unlabeled.values():
        files += images
    return {str(f.relative_to(source.folder)): f for f in sorted(files)}


def fingerprint(source: SourceDataset, previous: dict | None = None) -> dict[str, list]:
    """Relative path -> [size, mtime_ns, sha256]. A file whose size and mtime match ``previous`` keeps its
    recorded hash (no re-read), so a rerun costs a stat per file unless something was touched."""
    previous = previous or {}
    out = {}
    for rel, f in source_files(source).items():
        st = f.stat()
        old = previous.get(rel)
        if old is not None and old[0] == st.st_size and old[1] == st.st_mtime_ns:
            out[rel] = list(old)
        else:
            out[rel] = [st.st_size, st.st_mtime_ns, sha256_of(f)]
    return out


def changed_source_files(recorded: dict[str, list], now: dict[str, list]) -> dict[str, list[str]]:
    """What differs between two fingerprints: files ``changed`` (content), ``added`` and ``removed``.
    A file only touched (same hash, other mtime) has not changed."""
    return {"changed": sorted(k for k in recorded.keys() & now.keys() if recorded[k][2] != now[k][2]),
            "added": sorted(now.keys() - recorded.keys()), "removed": sorted(recorded.keys() - now.keys())}


def check_unchanged(folder: Path, recorded: dict[str, list] | None, now: dict[str, list]) -> None:
    """Stop when the source's files differ from those a work folder's results were computed with."""
    if recorded is None:
        return
    diff = changed_source_files(recorded, now)
    if any(diff.values()):
        shown = []
        for kind, names in diff.items():
            if names:
                shown.append(f"  {kind} ({len(names)}): " + ", ".join(names[:5]) + (" ..." if len(names) > 5 else ""))
        raise ReproduceError(
            f"the source dataset {folder} changed since this work folder's trainings and predictions were made:\n"
            + "\n".join(shown) + "\nTheir results would be reported against the new files. Use a new --workdir (or "
            "restore the files to continue).")

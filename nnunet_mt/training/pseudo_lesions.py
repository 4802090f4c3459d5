"""Lesion regions and label maps of unannotated scans, as predicted by the supervised start model.

Sec. 2.3: unannotated patches are sampled 50/50 from lesion and healthy tissue, "since the lesion
region is unknown for unannotated data, it is approximated by the DeepMedic prediction". The
prediction of the initial weights is computed once when training starts and reused on resume. Two
cache files per set of weights, next to the preprocessed unannotated scans (every plugin file there
starts with ``pseudo_``; ``<digest>`` is :func:`weights_digest` of the weights used):

``pseudo_lesions_<digest>.pkl``
    per case, nnU-Net-style voxel locations of every predicted lesion class and of predicted
    healthy tissue (at most :data:`MAX_LOCATIONS` each), what the 50/50 sampler draws from.
    Written last: its presence marks the pass as complete.
``pseudo_labels_<digest>/<case>.npz``
    per case, the predicted label map itself (argmax of the logits on the preprocessed case's grid,
    uint8, compressed), written as soon as the case is predicted and read case by case
    (:class:`PseudoLabelMaps`): the pseudo-labels of the pseudo-label baseline
    (:mod:`nnunet_mt.trainers.nnUNetTrainerDeepMedicPseudoLabel`). A folder, because nnU-Net's
    ``infer_dataset_class`` looks at the files there and accepts no file ending besides the scans'.

Every file is written to a temporary name inside that folder and renamed, so nothing half-written is
ever read, and an interrupted pass continues from the maps it wrote. The logits come from the caller
(the trainers pass nnU-Net's predictor with the network); this module only turns them into labels. The
pass logs one line per scan with its time and the estimated time left
(``pseudo-lesions 3/81: CASE, 12 lesion locations, 4.1 s, ETA 5 min 12 s``).
"""
from __future__ import annotations

import hashlib
import os
import pickle
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from nnunet_mt.training.progress import format_duration
from nnunet_mt.training.sampling import HEALTHY
from nnunet_mt.utils.atomic import write_atomically

#: rows kept per region and case, as nnU-Net keeps for foreground classes
MAX_LOCATIONS = 10000
#: every cache file this module writes into the preprocessed unannotated folder starts with this
CACHE_PREFIX = "pseudo_"


def weights_digest(module: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of a module's state dict: identifies the weights used."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _sample_rows(coords: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if len(coords) > MAX_LOCATIONS:
        coords = coords[np.sort(rng.choice(len(coords), MAX_LOCATIONS, replace=False))]
    return np.concatenate([np.zeros((len(coords), 1), coords.dtype), coords], 1)


def locations_from_prediction(prediction: np.ndarray, seg: np.ndarray, seed: int = 0) -> dict:
    """nnU-Net-style class locations from a predicted label map.

    prediction: (Z, Y, X) predicted labels; seg: (1, Z, Y, X) nnU-Net segmentation of the scan
    (0 inside the head, -1 outside). Returns {label: rows, HEALTHY: rows}, rows [0, z, y, x].
    """
    rng = np.random.default_rng(seed)
    inside = seg[0] >= 0
    out = {int(c): _sample_rows(np.argwhere((prediction == c) & inside), rng)
           for c in np.unique(prediction[inside]) if c > 0}
    out[HEALTHY] = _sample_rows(np.argwhere((prediction == 0) & inside), rng)
    return out


def _label_dtype(num_classes: int):
    return np.uint8 if num_classes <= 256 else np.int16


def cache_file(folder: str | os.PathLike, digest: str) -> Path:
    """The pseudo-lesion locations of the weights ``digest`` (written last: the pass is complete)."""
    return Path(folder) / f"{CACHE_PREFIX}lesions_{digest}.pkl"


def labels_folder(folder: str | os.PathLike, digest: str) -> Path:
    """The folder of the predicted label maps of the weights ``digest`` (one ``<case>.npz`` each)."""
    return Path(folder) / f"{CACHE_PREFIX}labels_{digest}"


class PseudoLabelMaps:
    """The predicted label maps in a :func:`labels_folder`: ``maps[case]`` is that case's map.

    Holds only the folder name (cheap to send to nnU-Net's background workers); every lookup reads
    that one case's file."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def file(self, case: str) -> Path:
        return self.folder / f"{case}.npz"

    def cases(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.name[:-len(".npz")] for p in self.folder.glob("*.npz") if not p.name.startswith("."))

    def __contains__(self, case: str) -> bool:
        return self.file(case).is_file()

    def __getitem__(self, case: str) -> np.ndarray:
        path = self.file(case)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no pseudo-label map of case {case} (the pseudo-lesion pass of these "
                                    f"weights did not write it); delete {self.folder} and the matching "
                                    f"{CACHE_PREFIX}lesions_*.pkl to recompute both")
        with np.load(path) as z:
            return z["labels"]

    def write(self, case: str, labels: np.ndarray) -> None:
        """Atomically, through a hidden temporary file in the same folder."""
        self.folder.mkdir(parents=True, exist_ok=True)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
                np.savez_compressed(f, labels=labels)

        write_atomically(write, self.file(case), tmp=self.folder / f".{case}.npz.tmp")


@torch.no_grad()
def predict_pseudo_lesions(predict_logits: Callable[[torch.Tensor], torch.Tensor] | None, dataset, log=print,
                           labels: PseudoLabelMaps | None = None,
                           clock: Callable[[], float] = time.perf_counter) -> dict:
    """Segment every case of ``dataset``; returns id -> locations.

    predict_logits: (C, Z, Y, X) image -> (K, Z, Y, X) logits, e.g. nnU-Net's sliding-window predictor.
    labels: if given, each predicted label map is written there as soon as it is computed, and a case
    whose map is already there (an interrupted pass) is not predicted again: its locations are taken
    from that map. One log line per case with its time and the estimated time left (mean time per
    predicted case so far x cases still to predict).
    """
    result = {}
    cases = list(dataset.identifiers)
    predicted, predicting_time, total = 0, 0.0, 0.0
    for i, case in enumerate(cases):
        case_start = clock()
        data, seg, _, _ = dataset.load_case(case)
        reused = labels is not None and case in labels
        if reused:
            prediction = labels[case]
        else:
            if predict_logits is None:
                raise ValueError("predict_pseudo_lesions needs predict_logits for cases without a stored map")
            logits = predict_logits(torch.from_numpy(np.asarray(data[:], np.float32)))
            prediction = logits.argmax(0).cpu().numpy().astype(_label_dtype(logits.shape[0]))
            if labels is not None:
                labels.write(case, prediction)
        result[case] = locations_from_prediction(prediction, np.asarray(seg[:]), seed=i)
        n_lesion = sum(len(v) for k, v in result[case].items() if k != HEALTHY)
        took = clock() - case_start
        total += took
        if not reused:
            predicted += 1
            predicting_time += took
        if i + 1 < len(cases):
            to_predict = sum(1 for c in cases[i + 1:] if labels is None or c not in labels)
            eta = predicting_time / predicted * to_predict if predicted else 0.0
            timing = f"ETA {format_duration(eta)}"
        else:
            timing = f"all {len(cases)} in {format_duration(total)}"
        source = "map from the interrupted pass, " if reused else ""
        log(f"pseudo-lesions {i + 1}/{len(cases)}: {case}, {n_lesion} lesion locations, {source}"
            f"{format_duration(took)}, {timing}")
    return result


def load_or_compute(folder, digest: str, predict_logits: Callable[[torch.Tensor], torch.Tensor] | None, dataset,
                    log=print) -> dict:
    """Cached pseudo-lesion locations for the weights ``digest``; computed (with the label maps) and
    written atomically if missing.

    ``predict_logits`` None means the weights ``digest`` are not at hand (a resumed run): the locations
    must then be cached, and are returned even if label maps are missing (:class:`PseudoLabelMaps`
    raises a clear error when a missing one is read); otherwise a clear error names the missing file.
    A pass that was interrupted continues: the label maps it wrote are reused."""
    path, maps = cache_file(folder, digest), PseudoLabelMaps(labels_folder(folder, digest))
    ids = list(dataset.identifiers)
    if path.is_file():
        with open(path, "rb") as f:
            cached = pickle.load(f)
        if set(cached) == set(ids):
            if predict_logits is None or set(ids) <= set(maps.cases()):
                log(f"using cached pseudo-lesions {path}")
                return cached
            log(f"{maps.folder} lacks label maps of some cases: completing the pseudo-lesion pass")
        else:
            log(f"{path} covers other cases than the preprocessed unannotated scans: recomputing")
    if predict_logits is None and not set(ids) <= set(maps.cases()):
        raise FileNotFoundError(
            f"{path} is missing or covers other cases than the scans in {folder}, and the weights it belongs to "
            f"(digest {digest}, the run's initial model) are no longer at hand to compute it; restore the file or "
            f"start the training afresh from the initial model")
    result = predict_pseudo_lesions(predict_logits, dataset, log, labels=maps)
    # the temporary file lives in the label folder, not beside the scans: a left-over "*.tmp" there would be a
    # second file ending for nnU-Net's infer_dataset_class
    maps.folder.mkdir(parents=True, exist_ok=True)
    write_atomically(lambda tmp: Path(tmp).write_bytes(pickle.dumps(result)), path,
                     tmp=maps.folder / f".{path.name}.tmp")
    return result


class PseudoLesionLocations:
    """Wraps the unannotated nnU-Net dataset; its cases' class locations become the pseudo-lesions.

    include_healthy: also provide the predicted healthy tissue (for DeepMedic's 50/50 sampler);
    nnU-Net's own loader would take any extra key for a foreground class, so it gets lesions only.
    labels: if given, each case's segmentation becomes its predicted label map inside the head (nnU-Net's
    -1 outside it is kept), so the loader's targets are the pseudo-labels, augmented with the image.
    """

    def __init__(self, dataset, locations: dict, include_healthy: bool = True,
                 labels: PseudoLabelMaps | None = None) -> None:
        self.dataset = dataset
        self.labels = labels
        self.locations = locations if include_healthy else {
            case: {k: v for k, v in locs.items() if k != HEALTHY} for case, locs in locations.items()}

    @property
    def identifiers(self):
        return self.dataset.identifiers

    def __len__(self) -> int:
        return len(self.dataset.identifiers)

    def __getattr__(self, name):
        if name in ("dataset", "labels", "locations"):  # not yet set (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def load_case(self, identifier: str):
        data, seg, seg_prev, properties = self.dataset.load_case(identifier)
        properties = dict(properties)
        properties["class_locations"] = self.locations[identifier]
        if self.labels is not None:
            seg = np.asarray(seg[:])
            predicted = self.labels[identifier]
            if predicted.shape != seg.shape[1:]:
                raise ValueError(f"{self.labels.file(identifier)} has shape {predicted.shape}, the preprocessed "
                                 f"scan {seg.shape[1:]}: the scans were preprocessed again; delete "
                                 f"{self.labels.folder} and its {CACHE_PREFIX}lesions_*.pkl to recompute them")
            seg = np.where(seg < 0, seg, predicted[None].astype(seg.dtype))
        return data, seg, seg_prev, properties

"""Lesion regions of unannotated scans, approximated by the supervised DeepMedic's prediction.

Sec. 2.3: unannotated patches are sampled 50/50 from lesion and healthy tissue, "since the lesion
region is unknown for unannotated data, it is approximated by the DeepMedic prediction". The
prediction of the teacher's initial weights is computed once when training starts, stored next to
the preprocessed unannotated scans (keyed by a hash of those weights) and reused on resume.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from nnunet_mt.training.sampling import HEALTHY

#: rows kept per region and case, as nnU-Net keeps for foreground classes
MAX_LOCATIONS = 10000


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


@torch.no_grad()
def predict_pseudo_lesions(predict_logits: Callable[[torch.Tensor], torch.Tensor], dataset, log=print) -> dict:
    """Segment every case of ``dataset``; returns id -> locations.

    predict_logits: (C, Z, Y, X) image -> (K, Z, Y, X) logits, e.g. nnU-Net's sliding-window predictor.
    """
    result = {}
    for i, case in enumerate(dataset.identifiers):
        data, seg, _, _ = dataset.load_case(case)
        prediction = predict_logits(torch.from_numpy(np.asarray(data[:], np.float32))).argmax(0).cpu().numpy()
        result[case] = locations_from_prediction(prediction, np.asarray(seg[:]), seed=i)
        n_lesion = sum(len(v) for k, v in result[case].items() if k != HEALTHY)
        log(f"pseudo-lesions {i + 1}/{len(dataset.identifiers)}: {case}, {n_lesion} lesion locations kept")
    return result


def cache_file(folder: str | os.PathLike, digest: str) -> Path:
    return Path(folder) / f"pseudo_lesions_{digest}.pkl"


def load_or_compute(folder, digest: str, predict_logits: Callable[[torch.Tensor], torch.Tensor], dataset,
                    log=print) -> dict:
    """Cached pseudo-lesion locations for the weights ``digest``; computed and written atomically if missing."""
    path = cache_file(folder, digest)
    if path.is_file():
        with open(path, "rb") as f:
            cached = pickle.load(f)
        if set(cached) == set(dataset.identifiers):
            log(f"using cached pseudo-lesions {path}")
            return cached
        log(f"{path} covers other cases than the preprocessed unannotated scans: recomputing")
    result = predict_pseudo_lesions(predict_logits, dataset, log)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(result, f)
    os.replace(tmp, path)
    return result


class PseudoLesionLocations:
    """Wraps the unannotated nnU-Net dataset; its cases' class locations become the pseudo-lesions.

    include_healthy: also provide the predicted healthy tissue (for DeepMedic's 50/50 sampler);
    nnU-Net's own loader would take any extra key for a foreground class, so it gets lesions only.
    """

    def __init__(self, dataset, locations: dict, include_healthy: bool = True) -> None:
        self.dataset = dataset
        self.locations = locations if include_healthy else {
            case: {k: v for k, v in locs.items() if k != HEALTHY} for case, locs in locations.items()}

    @property
    def identifiers(self):
        return self.dataset.identifiers

    def __len__(self) -> int:
        return len(self.dataset.identifiers)

    def __getattr__(self, name):
        return getattr(self.dataset, name)

    def load_case(self, identifier: str):
        data, seg, seg_prev, properties = self.dataset.load_case(identifier)
        properties = dict(properties)
        properties["class_locations"] = self.locations[identifier]
        return data, seg, seg_prev, properties

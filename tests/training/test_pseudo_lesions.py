"""Pseudo-lesions of unannotated scans: locations from a prediction, computed once and cached."""
from __future__ import annotations

import numpy as np
import torch

from nnunet_mt.training.pseudo_lesions import (PseudoLesionLocations, cache_file, load_or_compute,
                                               locations_from_prediction, weights_digest)
from nnunet_mt.training.sampling import HEALTHY


class FakeUnlabeled:
    identifiers = ["u1", "u2"]

    def load_case(self, k):
        seg = np.zeros((1, 4, 6, 6), np.int16)
        seg[0, :, :, 0] = -1  # outside the head
        data = np.zeros((2, 4, 6, 6), np.float32)
        data[0, 1:3, 2:4, 2:4] = 5.0 if k == "u1" else 0.0  # a bright blob in u1 only
        return data, seg, None, {"class_locations": {1: []}}


def fake_logits(x: torch.Tensor) -> torch.Tensor:
    """Lesion where channel 0 is bright."""
    return torch.stack([torch.zeros_like(x[0]), x[0] - 1.0])


def test_locations_follow_the_prediction_and_skip_outside_the_head():
    prediction = np.zeros((4, 6, 6), int)
    prediction[1:3, 2:4, 2:4] = 1
    prediction[:, :, 0] = 1  # predicted lesion outside the head is ignored
    seg = np.zeros((1, 4, 6, 6), np.int16)
    seg[0, :, :, 0] = -1
    loc = locations_from_prediction(prediction, seg)
    assert len(loc[1]) == 8 and np.all(prediction[tuple(loc[1][:, 1:].T)] == 1)
    assert len(loc[HEALTHY]) == 4 * 6 * 5 - 8 and np.all(loc[HEALTHY][:, 3] > 0)


def test_computed_once_then_read_from_the_cache(tmp_path):
    calls = []

    def counting(x):
        calls.append(1)
        return fake_logits(x)

    first = load_or_compute(tmp_path, "abc", counting, FakeUnlabeled(), log=lambda *a: None)
    assert len(calls) == 2 and cache_file(tmp_path, "abc").is_file()
    assert 1 in first["u1"] and 1 not in first["u2"]  # u2 has no predicted lesion
    again = load_or_compute(tmp_path, "abc", None, FakeUnlabeled(), log=lambda *a: None)  # no predictor needed
    assert len(calls) == 2 and np.array_equal(again["u1"][1], first["u1"][1])
    assert not list(tmp_path.glob("*.tmp"))


def test_wrapper_serves_the_cached_locations_and_digest_tracks_weights(tmp_path):
    locations = load_or_compute(tmp_path, "d", fake_logits, FakeUnlabeled(), log=lambda *a: None)
    props = PseudoLesionLocations(FakeUnlabeled(), locations).load_case("u1")[3]
    assert set(props["class_locations"]) == {1, HEALTHY}
    lesions_only = PseudoLesionLocations(FakeUnlabeled(), locations, include_healthy=False).load_case("u1")[3]
    assert set(lesions_only["class_locations"]) == {1}
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    assert weights_digest(a) == weights_digest(a) != weights_digest(b)

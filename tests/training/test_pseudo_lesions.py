"""Pseudo-lesions of unannotated scans: locations and label maps from a prediction, computed once and cached,
with progress and ETA per scan."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunet_mt.training.pseudo_lesions import (PseudoLabelMaps, PseudoLesionLocations, cache_file, format_duration,
                                               labels_folder, load_or_compute, locations_from_prediction,
                                               predict_pseudo_lesions, weights_digest)
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


def test_label_maps_are_kept_next_to_the_locations(tmp_path):
    load_or_compute(tmp_path, "abc", fake_logits, FakeUnlabeled(), log=lambda *a: None)
    maps = PseudoLabelMaps(labels_folder(tmp_path, "abc"))
    assert maps.cases() == ["u1", "u2"]
    for case in FakeUnlabeled.identifiers:
        data = FakeUnlabeled().load_case(case)[0]
        expected = fake_logits(torch.from_numpy(data)).argmax(0).numpy()
        assert maps[case].dtype == np.uint8 and np.array_equal(maps[case], expected)
    assert maps["u1"].sum() == 8 and maps["u2"].sum() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pseudo_labels_abc", "pseudo_lesions_abc.pkl"]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    with pytest.raises(FileNotFoundError, match="no pseudo-label map of case u3"):
        maps["u3"]


def test_wrapper_serves_the_label_maps_as_segmentation(tmp_path):
    locations = load_or_compute(tmp_path, "d", fake_logits, FakeUnlabeled(), log=lambda *a: None)
    maps = PseudoLabelMaps(labels_folder(tmp_path, "d"))
    _, seg, _, _ = PseudoLesionLocations(FakeUnlabeled(), locations, labels=maps).load_case("u1")
    original = FakeUnlabeled().load_case("u1")[1]
    assert np.array_equal(seg[0][original[0] >= 0], maps["u1"][original[0] >= 0])  # predicted labels inside
    assert np.all(seg[0][original[0] < 0] == -1)  # nnU-Net's outside-the-head marker kept
    assert seg.dtype == original.dtype and int((seg == 1).sum()) == 8
    _, plain, _, _ = PseudoLesionLocations(FakeUnlabeled(), locations).load_case("u1")
    assert np.array_equal(plain, original)  # without labels the segmentation is the scan's own


def test_an_interrupted_pass_continues_from_its_maps(tmp_path):
    calls = []

    def counting(x):
        calls.append(1)
        return fake_logits(x)

    maps = PseudoLabelMaps(labels_folder(tmp_path, "k"))
    maps.write("u1", fake_logits(torch.from_numpy(FakeUnlabeled().load_case("u1")[0])).argmax(0).numpy()
               .astype(np.uint8))  # what a killed pass had written; no locations file yet
    lines = []
    result = load_or_compute(tmp_path, "k", counting, FakeUnlabeled(), log=lines.append)
    assert len(calls) == 1  # only u2 predicted
    assert len(result["u1"][1]) == 8 and cache_file(tmp_path, "k").is_file()
    assert "map from the interrupted pass" in lines[0]


def test_without_the_weights_a_missing_cache_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"pseudo_lesions_zz\.pkl is missing .*digest zz"):
        load_or_compute(tmp_path, "zz", None, FakeUnlabeled(), log=lambda *a: None)
    load_or_compute(tmp_path, "zz", fake_logits, FakeUnlabeled(), log=lambda *a: None)
    assert 1 in load_or_compute(tmp_path, "zz", None, FakeUnlabeled(), log=lambda *a: None)["u1"]


def test_progress_line_per_scan_with_eta():
    class Three(FakeUnlabeled):
        identifiers = ["u1", "u2", "u1b"]

        def load_case(self, k):
            return super().load_case("u1" if k == "u1b" else k)

    ticks = iter([0.0, 4.0, 4.0, 6.0, 6.0, 399.0])  # (start, end) of each case
    lines = []
    predict_pseudo_lesions(fake_logits, Three(), log=lines.append, clock=lambda: next(ticks))
    assert lines == ["pseudo-lesions 1/3: u1, 8 lesion locations, 4.0 s, ETA 8.0 s",
                     "pseudo-lesions 2/3: u2, 0 lesion locations, 2.0 s, ETA 3.0 s",
                     "pseudo-lesions 3/3: u1b, 8 lesion locations, 6 min 33 s, all 3 in 6 min 39 s"]


def test_durations_read_well():
    assert [format_duration(s) for s in (4.06, 59.9, 312, 3599.4, 7500)] == \
        ["4.1 s", "59.9 s", "5 min 12 s", "59 min 59 s", "2 h 05 min"]

"""DeepMedic's 50/50 lesion/healthy patch sampling on top of nnU-Net's data loader."""
from __future__ import annotations

import numpy as np
import pytest

from nnunet_mt.training.sampling import HEALTHY, DeepMedicDataLoader, HealthyTissueLocations


class FakeLabelManager:
    all_labels = [0, 1]
    has_ignore_label = False


class FakeDataset:
    """Two cases of 12x40x40 voxels: a lesion cube, healthy tissue, and -1 outside the 'head'."""

    def __init__(self):
        self.identifiers = ["a", "b"]
        self.cases = {}
        for k, off in zip(self.identifiers, (5, 20)):
            seg = np.zeros((1, 12, 40, 40), np.int16)
            seg[0, :, :, :4] = -1
            seg[0, 4:7, off:off + 4, off:off + 4] = 1
            data = np.stack([seg[0].astype(np.float32), np.zeros(seg.shape[1:], np.float32)])
            locations = {1: np.argwhere(seg == 1)}
            self.cases[k] = (data, seg, None, {"class_locations": locations})

    def load_case(self, k):
        return self.cases[k]


@pytest.fixture
def loader():
    np.random.seed(0)
    return DeepMedicDataLoader(HealthyTissueLocations(FakeDataset(), max_locations=500), 8, (9, 15, 15), (9, 15, 15),
                               FakeLabelManager(), oversample_foreground_percent=0.5)


def test_healthy_locations_are_label_zero_inside_the_head():
    ds = HealthyTissueLocations(FakeDataset(), max_locations=300)
    _, seg, _, props = ds.load_case("a")
    loc = props["class_locations"][HEALTHY]
    assert loc.shape == (300, 4)
    assert np.all(seg[0][tuple(loc[:, 1:].T)] == 0)
    assert 1 in props["class_locations"]  # nnU-Net's own lesion locations are kept
    again = HealthyTissueLocations(FakeDataset(), max_locations=300).load_case("a")[3]["class_locations"][HEALTHY]
    assert np.array_equal(loc, again)  # same sample in every worker


def test_half_the_batch_is_centred_on_lesion_and_half_on_healthy_tissue(loader):
    for _ in range(20):
        batch = loader.generate_train_batch()
        centre = batch["target"][:, 0, 4, 7, 7].numpy()
        # samples 0-3 healthy-centred, 4-7 lesion-centred (nnU-Net oversamples the last ones)
        assert np.all(centre[:4] == 0), centre
        assert np.all(centre[4:] == 1), centre


def test_patch_is_centred_on_the_drawn_voxel_even_at_the_border(loader):
    # a voxel on the first slice: nnU-Net would shift the patch inwards; DeepMedic pads instead
    locations = {1: np.array([[0, 0, 10, 10]]), HEALTHY: np.array([[0, 11, 39, 39]])}
    lbs, ubs = loader.get_bbox(np.array([12, 40, 40]), True, locations)
    assert lbs == [0 - 4, 10 - 7, 10 - 7] and ubs == [5, 18, 18]
    lbs, _ = loader.get_bbox(np.array([12, 40, 40]), False, locations)
    assert lbs == [11 - 4, 39 - 7, 39 - 7]


def test_case_without_lesion_falls_back_to_healthy_tissue(loader):
    locations = {1: np.zeros((0, 4), int), HEALTHY: np.array([[0, 3, 3, 3]])}
    lbs, _ = loader.get_bbox(np.array([12, 40, 40]), True, locations)
    assert lbs == [3 - 4, 3 - 7, 3 - 7]

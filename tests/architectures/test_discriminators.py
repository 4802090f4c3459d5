"""Shapes and input checks of the adversaries."""
from __future__ import annotations

import pytest
import torch

from nnunet_mt.architectures.discriminators import EvaluationNetwork, PatchDiscriminator


@pytest.mark.parametrize("size", [(6, 21, 21), (1, 1, 1), (18, 33, 45)])
def test_any_output_grid_gives_two_logits_per_patch(size):
    assert PatchDiscriminator(7, features=4)(torch.randn(3, 7, *size)).shape == (3, 2)
    assert EvaluationNetwork(2, 2, features=4)(torch.rand(3, 2, *size), torch.randn(3, 2, *size)).shape == (3, 2)


def test_evaluation_network_refuses_maps_and_images_of_different_voxels():
    with pytest.raises(ValueError, match=r"\(1, 2, 6, 21, 21\).*\(1, 2, 6, 20, 21\)"):
        EvaluationNetwork(2, 2)(torch.rand(1, 2, 6, 21, 21), torch.randn(1, 2, 6, 20, 21))


def test_evaluation_network_reads_both_image_and_segmentation():
    torch.manual_seed(0)
    en = EvaluationNetwork(2, 2, features=4).eval()
    probs, image = torch.rand(1, 2, 6, 21, 21), torch.randn(1, 2, 6, 21, 21)
    base = en(probs, image)
    assert not torch.allclose(en(probs.flip(-1), image), base)
    assert not torch.allclose(en(probs, image.flip(-1)), base)

"""benchmarks/analyses/operating_point_push.py: the push on a voxel's logits, checked against the s = t push of
over_segmentation.py, and its counts by hand (the run on a work folder is tested on the runner's tiny screen,
tests/commands/test_reproduce.py)."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks" / "analyses"))
from operating_point_push import count, logit_push, merge  # noqa: E402
from over_segmentation import consistency_push  # noqa: E402

from nnunet_mt.training.mean_teacher import CONSISTENCY_LOSSES  # noqa: E402


@pytest.mark.parametrize("name", ["paper", "released", "squared"])
def test_the_push_on_two_logits_is_twice_the_push_on_the_one_logit_of_a_two_label_softmax(name):
    # softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)] depends on z_fg - z_bg only: dz_fg = -dz_bg = dz
    t = np.array([[0.3, 0.01, 0.95, 0.6], [0.02, 0.5, 0.7, 0.1]])
    logits = torch.stack([torch.zeros(2, 4, dtype=torch.float64), torch.logit(torch.as_tensor(t))], 1)
    kwargs = {"eps": 1e-5} if name == "released" else {}
    ours = logit_push(logits, logits, CONSISTENCY_LOSSES[name], **kwargs).numpy()
    np.testing.assert_allclose(ours, 2 * consistency_push(t, CONSISTENCY_LOSSES[name], **kwargs), atol=1e-12)
    assert np.allclose(logit_push(logits, logits, CONSISTENCY_LOSSES[name], 3.0, **kwargs).numpy(), 3 * ours)


def test_counts_by_hand_and_merged():
    push = torch.tensor([[0.2, -0.1, 0.3, -0.4]])
    s = torch.tensor([[0.4, 0.1, 0.9, 0.6]])
    t = torch.tensor([[0.2, 0.3, 0.8, 0.7]])
    one = count(push, s, t)
    # background (t < 0.5): voxels 0, 1; pushed up: voxel 0 (0.2). Lesion: 2, 3; pushed down: voxel 3
    assert one == {"patches": 1, "voxels": 4, "mean_abs_gap": pytest.approx(0.15), "teacher_lesion": 2,
                   "pushed_up": 1, "pushed_down": 1, "push_up_sum": pytest.approx(0.2)}
    two = merge([one, count(push[:, :2], s[:, :2], t[:, :2])])
    assert two["voxels"] == 6 and two["pushed_up"] == 2 and two["teacher_lesion"] == 2
    assert two["mean_abs_gap"] == pytest.approx((0.15 * 4 + 0.2 * 2) / 6)

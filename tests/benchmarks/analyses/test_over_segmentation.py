"""benchmarks/analyses/over_segmentation.py's step-0 push: each consistency's gradient at s = t, on hand-computed maps."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks" / "analyses"))
from over_segmentation import (consistencies, consistency_push, count_push, draw_patches,  # noqa: E402
                               unannotated_batches)

from nnunet_mt.training.mean_teacher import (kl_consistency, mse_consistency, released_dice_consistency,  # noqa: E402
                                             squared_dice_consistency)

HEALTHY = [0.3, 0.01, 0.01, 0.01]
LESION = [0.3, 0.95, 0.95, 0.01]


def test_eq1_push_is_the_hand_computed_gradient_and_per_patch():
    # tests/training/test_mean_teacher.py: dLc/dz = -0.045265 (voxel 0), +0.0026072 (voxels 1-3) in the
    # healthy patch, +0.023009 for the 0.3 of the lesion patch; the push is its negative
    push = consistency_push(np.array([HEALTHY]))
    assert push[0] == pytest.approx([0.045265, -0.0026072, -0.0026072, -0.0026072], abs=1e-6)
    # Eq. 1 is a mean over the batch of per-patch Dice: in a batch of two each patch's push halves
    pair = consistency_push(np.array([HEALTHY, LESION]))
    assert pair[0] == pytest.approx(push[0] / 2, abs=1e-9)
    assert pair[1][0] == pytest.approx(-0.023009 / 2, abs=1e-6)


def test_released_push_pools_over_the_batch_and_follows_the_argmax():
    # argmax fg: voxels 1, 2 of the lesion patch. Pooled: S_fg = 2.54, Y_fg = 2, sum s y = 1.9,
    # D_fg = 3.80001 / 4.54001 = 0.837004; S_bg = 5.46, Y_bg = 6, sum s y = 5.36, D_bg = 10.72001 / 11.46001
    # = 0.935428. push_v = (1/2) t(1-t) [(2 y_fg - D_fg) / 4.54001 - (2 y_bg - D_bg) / 11.46001]:
    # t = 0.3, y_fg = 0: 0.105 (-0.184362 - 0.092894) = -0.029112 (down, in either patch: pooled);
    # t = 0.95, y_fg = 1: 0.02375 (0.256167 + 0.081626) = +0.0080226 (up)
    push = consistency_push(np.array([HEALTHY, LESION]), released_dice_consistency, eps=1e-5)
    assert push[0][0] == pytest.approx(-0.029112, abs=1e-6)
    assert push[1][0] == pytest.approx(-0.029112, abs=1e-6)
    assert push[1][1] == pytest.approx(0.0080226, abs=1e-6)
    assert (push[np.array([HEALTHY, LESION]) < 0.5] < 0).all()  # teacher background: only ever down


@pytest.mark.parametrize("loss, kwargs, bound", [(mse_consistency, {}, 1e-15), (kl_consistency, {}, 1e-15),
                                                 (kl_consistency, {"confidence": 0.95}, 1e-15),
                                                 # only its eps = 1e-6 in the denominator is left:
                                                 # 2 t eps / (2 |t|^2)^2 per label, times t(1 - t) / 2 / B
                                                 (squared_dice_consistency, {}, 1e-6)])
def test_losses_that_vanish_at_agreement_push_nothing(loss, kwargs, bound):
    push = consistency_push(np.array([HEALTHY, LESION]), loss, **kwargs)
    assert np.abs(push).max() < bound
    # the Dice of Eq. 1 pushes ~1e-2 on the same maps
    assert np.abs(consistency_push(np.array([HEALTHY, LESION]))).max() > 1e-2


def test_squared_push_is_its_eps_term():
    # healthy patch alone, fg label: |t|^2 = 0.0903, dD/ds_v at s = t = 2 t_v eps / (2 |t|^2 + eps)^2;
    # bg: |1-t|^2 = 0.49 + 3 * 0.9801 = 3.4303. push_0 = (1/2) 0.21 (2*0.3e-6 / 0.1806^2 - 2*0.7e-6 / 6.8606^2)
    # = 0.105 (1.83959e-5 - 2.9744e-8) = 1.92845e-6
    push = consistency_push(np.array([HEALTHY]), squared_dice_consistency)
    assert push[0][0] == pytest.approx(1.92845e-6, rel=1e-3)


def test_consistencies_are_the_trainers_without_the_controls():
    rows = consistencies()
    assert list(rows) == ["paper", "released", "squared", "mse", "kl", "kl confidence=0.95"]
    assert rows["released"]["methods"] == ["MeanTeacher-released", "MeanTeacher-released-beta1",
                                           "MeanTeacher-released-gram", "MeanTeacher-released-short-schedule"]
    assert rows["released"]["kwargs"] == {"eps": 1e-5} and rows["mse"]["weight"] == 100.0
    assert rows["paper"]["methods"] == ["MeanTeacher", "MeanTeacher-deterministic-teacher"]  # dropout is off at s = t
    assert not any("no-consistency" in m for r in rows.values() for m in r["methods"])  # the controls (w = 0)


def test_batches_hold_half_of_each_kind_and_the_rest_alone():
    patches = [("lesion", i, None) for i in range(5)] + [("healthy", i, None) for i in range(9)]
    batches = unannotated_batches(patches, 8)
    assert [[k for k, _, _ in b] for b in batches] == [["lesion"] * 4 + ["healthy"] * 4,
                                                        ["lesion"] + ["healthy"] * 5]
    assert sorted((k, i) for b in batches for k, i, _ in b) == sorted((k, i) for k, i, _ in patches)
    shuffled = unannotated_batches(patches, 8, np.random.default_rng(0))
    assert sorted((k, i) for b in shuffled for k, i, _ in b) == sorted((k, i) for k, i, _ in patches)


def test_draw_patches_centres_inside_and_of_their_kind():
    prob = np.zeros((6, 10, 10))
    prob[2:4, 4:6, 4:6] = 0.9  # one lesion of 8 voxels
    inside = np.ones(prob.shape, bool)
    inside[:, :, 0] = False
    drawn = draw_patches(prob, inside, (3, 5, 5), per_type=20, rng=np.random.default_rng(1))
    assert len(drawn["lesion"]) == 8  # every lesion voxel is a valid centre, fewer than asked
    for kind, slices in drawn.items():
        for sl in slices:
            assert [s.stop - s.start for s in sl] == [3, 5, 5]
            assert all(s.start >= 0 and s.stop <= n for s, n in zip(sl, prob.shape))
            centre = tuple(s.start + (s.stop - s.start) // 2 for s in sl)
            assert (prob[centre] >= 0.5) == (kind == "lesion") and inside[centre]
    assert len(drawn["healthy"]) == 20


def test_count_push_counts_eq1_on_the_hand_maps():
    # Eq. 1 per patch: the healthy patch's 0.3 is pushed up (not truly lesion here), its 0.01s down; in the
    # lesion patch the 0.3 is pushed down (a background voxel, not counted as pushed up), the 0.95s up
    ref = np.array([False, False, False, False])
    batch = [("healthy", np.array(HEALTHY), ref), ("lesion", np.array(LESION), np.array([True, True, True, False]))]
    counts = count_push([batch], loss=None, kwargs={})
    h, le = counts["healthy"], counts["lesion"]
    assert (h["patches"], h["model_lesion"], h["pushed_up"], h["pushed_up_true"], h["pushed_down"]) == (1, 0, 1, 0, 0)
    assert h["push_up_sum"] == pytest.approx(0.045265 / 2, abs=1e-6)
    assert (le["model_lesion"], le["pushed_up"], le["pushed_down"]) == (2, 0, 0)
    assert h["mean_foreground_mass"] == pytest.approx(0.0825)
    released = count_push([batch], released_dice_consistency, {"eps": 1e-5})
    assert released["healthy"]["pushed_up"] == released["lesion"]["pushed_up"] == 0

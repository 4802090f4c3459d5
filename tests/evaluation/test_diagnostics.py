"""Diagnostics and schedule arithmetic against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nnunet_mt.evaluation.curves import label_quality, mean_by_step
from nnunet_mt.evaluation.diagnostics import relative_distance, summarize_quality
from nnunet_mt.schedule import holdout_split, plateau_step
from nnunet_mt.source_dataset import ReproduceError


def test_relative_distance_is_one_l2_norm_over_float_entries():
    ref = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[0.0, 4.0]]), "n": torch.tensor(7)}
    moved = {"a": torch.tensor([3.0, 1.0]), "b": torch.tensor([[2.0, 4.0]]), "n": torch.tensor(99)}
    # ||(0, 1, 2, 0)|| / ||(3, 0, 0, 4)|| = sqrt(5) / 5; the integer counter is left out
    assert relative_distance(moved, ref) == pytest.approx(math.sqrt(5) / 5)
    assert relative_distance(ref, ref) == 0.0


def test_label_quality_and_summary():
    truth = np.zeros((2, 4, 4), bool)
    truth[0, :2, :2] = True  # 4 voxels
    pred = np.zeros_like(truth)
    pred[0, :2, 1:3] = True  # 4 voxels, 2 of them true
    q = label_quality(pred, truth)
    assert q["dice"] == pytest.approx(0.5) and q["precision"] == 0.5 and q["recall"] == 0.5
    empty = label_quality(np.zeros_like(truth), truth)
    assert empty["dice"] == 0.0 and math.isnan(empty["precision"]) and empty["recall"] == 0.0
    s = summarize_quality({"a": q, "b": empty})
    assert s["cases"] == 2 and s["dice_mean"] == pytest.approx(0.25) and s["dice_std"] == pytest.approx(0.25)
    assert s["precision_mean"] == 0.5 and s["precision_nan_cases"] == 1
    # voxel-pooled: TP 2 + 0, predicted 4 + 0, true 4 + 4
    assert q["true_positive_voxels"] == 2 and empty["true_positive_voxels"] == 0
    assert s["pooled_precision"] == 0.5 and s["pooled_recall"] == 0.25 and s["pooled_volume_ratio"] == 0.5


def test_mean_by_step_leaves_out_nan_and_other_models():
    rows = [{"step": 0, "model": "m", "dice": 0.2}, {"step": 0, "model": "m", "dice": 0.4},
            {"step": 5, "model": "m", "dice": float("nan")}, {"step": 5, "model": "m", "dice": 0.9},
            {"step": 5, "model": "other", "dice": 0.0}]
    steps, means, stds = mean_by_step(rows, "m")
    assert steps.tolist() == [0, 5] and means == pytest.approx([0.3, 0.9]) and stds == pytest.approx([0.1, 0.0])


def test_plateau_step():
    steps = np.array([0, 10, 20, 30, 40])
    means = np.array([0.1, 0.5, 0.795, np.nan, 0.8])
    assert plateau_step(steps, means, 0.01) == 20
    assert plateau_step(steps, means, 0.0) == 40
    assert plateau_step(steps, np.full(5, np.nan), 0.01) is None


def test_holdout_split_is_seeded_disjoint_and_checked():
    train = [f"c{i}" for i in range(10)]
    a = holdout_split(train, 3, seed=0)
    assert a == holdout_split(list(reversed(train)), 3, seed=0)  # depends on the set, not its order
    assert len(a["val"]) == 3 and sorted(a["train"] + a["val"]) == train
    assert holdout_split(train, 3, seed=1) != a
    with pytest.raises(ReproduceError, match="--holdout 10"):
        holdout_split(train, 10, seed=0)

"""Diagnostics and schedule arithmetic against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nnunet_mt.commands.schedule import holdout_split, plateau_step
from nnunet_mt.evaluation.curves import label_quality, mean_by_step
from nnunet_mt.evaluation.diagnostics import relative_distance, summarize_quality
from nnunet_mt.runner.source_dataset import ReproduceError


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


def test_snapshot_plot_draws_each_networks_mean_dice_and_distance_by_step(tmp_path):
    from nnunet_mt.evaluation.diagnostics import write_snapshot_plot

    rows = [{"step": s, "model": m, "case": c, "dice": d} for s, m, c, d in [
        (0, "network_weights", "a", 0.5), (0, "network_weights", "b", 0.7), (200, "network_weights", "a", 0.6),
        (200, "network_weights", "b", float("nan")), (200, "student_weights", "a", 0.2)]]
    distance = [{"step": 0, "model": "network_weights", "distance_from_init": 0.0},
                {"step": 200, "model": "network_weights", "distance_from_init": 0.01}]
    fig = write_snapshot_plot({"MT": {"dice": rows, "distance": distance}}, tmp_path / "p.png", "t", "validation")
    dice_ax, dist_ax = fig.axes[:2]
    lines = {line.get_label(): line for line in dice_ax.get_lines()}
    model, student = lines["MT model"], lines["MT student"]
    assert list(model.get_xdata()) == [0, 200] and list(model.get_ydata()) == pytest.approx([0.6, 0.6])  # NaN left out
    assert model.get_linestyle() == "-" and student.get_linestyle() == "--"
    assert list(student.get_xdata()) == [200] and list(student.get_ydata()) == pytest.approx([0.2])
    (dist,) = dist_ax.get_lines()
    assert list(dist.get_ydata()) == [0.0, 0.01] and dice_ax.get_ylabel() == "mean Dice on the validation scans"
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_validation_curve_plot_draws_each_stage_with_its_error_bars(tmp_path):
    from nnunet_mt.commands.schedule import write_curve_plot

    curve = {"split": {"val": ["x", "y"]}, "boundary_step": 4, "stages": [
        {"name": "A: init", "lr": 1e-3, "steps": [0, 2, 4], "mean_dice": [0.1, 0.3, 0.5], "std_dice": [0, 0.1, 0.2]},
        {"name": "B: DeepMedic", "lr": 1e-4, "steps": [4, 6], "mean_dice": [0.5, 0.55], "std_dice": [0.2, 0.1]}]}
    ax = write_curve_plot(curve, tmp_path / "c.png").axes[0]
    bars = {c.get_label(): c for c in ax.containers}  # one errorbar container per stage
    assert sorted(bars) == ["A: init (lr 0.001)", "B: DeepMedic (lr 0.0001)"]
    assert list(bars["A: init (lr 0.001)"].lines[0].get_ydata()) == [0.1, 0.3, 0.5]
    assert list(bars["B: DeepMedic (lr 0.0001)"].lines[0].get_xdata()) == [4, 6]
    (segments,) = bars["A: init (lr 0.001)"].lines[2]  # the error bars: mean ± std at each step
    ends = np.array([seg[:, 1] for seg in segments.get_segments()])
    np.testing.assert_allclose(ends, [[0.1, 0.1], [0.2, 0.4], [0.3, 0.7]])
    assert any(list(line.get_xdata()) == [4, 4] for line in ax.get_lines())  # the stage boundary
    assert ax.get_ylabel() == "Dice on 2 held-out training scans"

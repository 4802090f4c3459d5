"""The training plots: what each panel draws (the figure's lines, caught before it is written), and the file."""
from __future__ import annotations

import matplotlib.image
import pytest

from nnunet_mt.training import plots


@pytest.fixture
def drawn(monkeypatch):
    """The (figure, panels) of every plot written, in order."""
    figures = []
    save = plots._save

    def keep(fig, axes, filename):
        figures.append((fig, list(axes)))
        save(fig, axes, filename)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def _lines(ax) -> dict:
    """label -> (x, y) of the panel's lines."""
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


MEAN_TEACHER = {"step": [0, 1, 2, 3], "Ls": [0.9, 0.7, 0.6, 0.5], "Lc": [0.1, 0.2, 0.15, 0.12],
                "beta": [0.0067, 0.29, 1.0, 1.0], "alpha": [0.99, 0.99, 0.99, 0.999],
                "dice_step": [2, 4], "dice_student": [0.3, 0.5], "dice_teacher": [0.35, 0.55]}


def test_mean_teacher_progress_draws_dice_losses_and_weights_per_step(drawn, tmp_path):
    out = tmp_path / "progress_mean_teacher.png"
    plots.plot_mean_teacher_progress(MEAN_TEACHER, str(out), rampup_length=2)
    (fig, (dice, losses, beta)), = drawn
    h = MEAN_TEACHER
    assert _lines(dice) == {"student": ([2, 4], [0.3, 0.5]), "teacher": ([2, 4], [0.35, 0.55]),
                            "end of ramp-up": ([2, 2], [0, 1])}
    assert _lines(losses)["Ls (cross-entropy)"] == (h["step"], h["Ls"])
    assert _lines(losses)["Lc (soft-Dice consistency)"] == (h["step"], h["Lc"])
    assert _lines(beta)["beta (consistency weight)"] == (h["step"], h["beta"])
    twin, = [ax for ax in fig.axes if ax not in (dice, losses, beta)]  # alpha on its own scale
    assert _lines(twin) == {"alpha (EMA decay, right axis)": (h["step"], h["alpha"])}
    assert matplotlib.image.imread(out).shape[:2] == (800, 720)  # 9 x 10 inches at 80 dpi
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # written through a temporary file


def test_ramp_up_end_is_marked_only_once_training_reached_it(drawn, tmp_path):
    plots.plot_mean_teacher_progress(MEAN_TEACHER, str(tmp_path / "p.png"), rampup_length=400)
    assert all("end of ramp-up" not in _lines(ax) for ax in drawn[0][0].axes)


def test_semi_supervised_progress_draws_every_model_and_one_panel_per_step_key(drawn, tmp_path):
    history = {"step": [0, 1, 2, 3], "Ls": [0.9, 0.8, 0.7, 0.6], "Lp": [0.5, 0.4, 0.45, 0.3],
               "dice_step": [2, 4], "dice_student": [0.2, 0.4], "dice_teacher": [0.25, 0.45]}
    plots.plot_semi_supervised_progress(history, str(tmp_path / "p.png"), title="PL", step_keys=("Ls", "Lp"))
    (fig, (dice, ls, lp)), = drawn
    assert len(fig.axes) == 3 and dice.get_title() == "PL"
    assert _lines(dice) == {"student": ([2, 4], [0.2, 0.4]), "teacher": ([2, 4], [0.25, 0.45])}
    assert _lines(ls) == {"Ls": (history["step"], history["Ls"])} and ls.get_ylabel() == "Ls"
    assert _lines(lp) == {"Lp": (history["step"], history["Lp"])} and lp.get_xlabel() == "optimizer step"

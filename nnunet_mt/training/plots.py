"""Training plots beside nnU-Net's ``progress.png``."""
from __future__ import annotations

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402

from nnunet_mt.utils.atomic import write_atomically  # noqa: E402


def plot_mean_teacher_progress(history: dict, filename: str, rampup_length: int | None = None) -> None:
    """Student vs teacher training Dice over optimizer steps (the paper's Fig. 2), and Ls, Lc, beta, alpha.

    history: lists ``step, Ls, Lc, beta, alpha`` (one entry per step) and ``dice_step,
    dice_student, dice_teacher`` (one entry per epoch). Written atomically.
    """
    # nnU-Net's logger sets a large seaborn font scale globally; draw in matplotlib's defaults
    with plt.style.context("default"), plt.rc_context({"font.size": 10}):
        _draw(history, filename, rampup_length)


def _draw(history: dict, filename: str, rampup_length: int | None) -> None:
    fig, axes = plt.subplots(3, 1, figsize=(9, 10), sharex=True)
    ax = axes[0]
    ax.plot(history["dice_step"], history["dice_student"], "o-", color="tab:blue", label="student")
    ax.plot(history["dice_step"], history["dice_teacher"], "o-", color="tab:red", label="teacher")
    ax.set_ylabel("training Dice (annotated patches)")
    ax.set_title("Mean teacher: student vs teacher (cf. Fig. 2 of Cui et al. 2019)")
    ax = axes[1]
    ax.plot(history["step"], history["Ls"], color="tab:blue", label="Ls (cross-entropy)")
    ax.plot(history["step"], history["Lc"], color="tab:green", label="Lc (soft-Dice consistency)")
    ax.set_ylabel("loss")
    ax = axes[2]
    ax.plot(history["step"], history["beta"], color="tab:purple", label="beta (consistency weight)")
    ax.set_ylabel("beta")
    ax.set_xlabel("optimizer step")
    twin = ax.twinx()  # alpha moves between 0.99 and 0.999: its own scale
    twin.plot(history["step"], history["alpha"], color="tab:orange", label="alpha (EMA decay, right axis)")
    twin.set_ylabel("alpha")
    twin.legend(loc="lower right")
    for ax in axes:
        if rampup_length is not None and history["step"] and history["step"][-1] >= rampup_length:
            ax.axvline(rampup_length, color="grey", ls=":", label="end of ramp-up")
    _save(fig, axes, filename)


def _save(fig, axes, filename: str) -> None:
    """Legends and grids on every panel, then the figure written atomically (PNG, whatever the name ends in)."""
    for ax in axes:
        ax.legend(loc="best")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    write_atomically(lambda tmp: fig.savefig(tmp, dpi=80, format="png"), filename)
    plt.close(fig)


def plot_semi_supervised_progress(history: dict, filename: str, title: str, step_keys: tuple[str, ...]) -> None:
    """Training Dice per epoch (every ``dice_<model>`` list against ``dice_step``) and the per-step
    values named in ``step_keys`` (losses and weights), one panel each. Written atomically."""
    with plt.style.context("default"), plt.rc_context({"font.size": 10}):
        fig, axes = plt.subplots(1 + len(step_keys), 1, figsize=(9, 3 + 2.2 * len(step_keys)), sharex=True,
                                 squeeze=False)
        axes = axes[:, 0]
        for key in history:
            if key.startswith("dice_") and key != "dice_step":
                axes[0].plot(history["dice_step"], history[key], "o-", label=key[5:])
        axes[0].set_ylabel("training Dice (annotated patches)")
        axes[0].set_title(title)
        for ax, key in zip(axes[1:], step_keys):
            ax.plot(history["step"], history[key], label=key)
            ax.set_ylabel(key)
        axes[-1].set_xlabel("optimizer step")
        _save(fig, axes, filename)

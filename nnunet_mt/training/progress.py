"""Progress lines every trainer of the plugin writes to nnU-Net's log (and the terminal).

:class:`~nnunet_mt.trainers.plugin_trainer.PluginTrainer` writes them, so every trainer of the plugin does.
They change nothing that is trained:

* after each epoch: ``epoch 3/5, step 60/100 (60 %), this epoch 12.0 s, about 24.0 s left`` (nnU-Net's own
  ``Epoch 2`` line counts from 0 and names no total);
* at the start, for a trainer whose nnU-Net ``train_loss`` is a weighted sum (``loss_composition``, e.g. the
  mean teacher's ``Ls + beta * Lc``): why that loss rises while the weight ramps up;
* around nnU-Net's end-of-training validation (``perform_actual_validation``, silent for minutes per case on
  a CPU): what it does, for how many cases, and how long it took;
* no attempt at nnU-Net's network diagram when its ``hiddenlayer`` package is not installed (nnU-Net would
  log ``Unable to plot network architecture: No module named 'hiddenlayer'`` on every run).
"""
from __future__ import annotations

import importlib.util
import json
import os


def epoch_progress(epoch: int, num_epochs: int, iterations_per_epoch: int, epoch_seconds: float | None = None,
                   ) -> str:
    """``'epoch 3/5, step 60/100 (60 %), this epoch 12.0 s, about 24.0 s left'`` for the 0-based ``epoch`` just done."""
    done, total = epoch + 1, max(num_epochs, 1)
    line = (f"epoch {done}/{total}, step {done * iterations_per_epoch}/{total * iterations_per_epoch} "
            f"({100 * done / total:.0f} %)")
    if epoch_seconds is not None:
        line += f", this epoch {format_duration(epoch_seconds)}"
        if done < total:
            line += f", about {format_duration(epoch_seconds * (total - done))} left"
    return line


def format_duration(seconds: float) -> str:
    """``4.1 s``, ``5 min 12 s``, ``2 h 05 min``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        minutes, secs = divmod(int(round(seconds)), 60)
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(int(round(seconds / 60)), 60)
    return f"{hours} h {minutes:02d} min"


def validation_cases(preprocessed_dataset_folder_base: str | None, fold) -> list[str] | None:
    """The validation cases of ``fold`` from ``splits_final.json`` (None when that cannot be told)."""
    if preprocessed_dataset_folder_base is None or fold == "all":
        return None
    splits_file = os.path.join(preprocessed_dataset_folder_base, "splits_final.json")
    try:
        with open(splits_file) as f:
            return list(json.load(f)[int(fold)]["val"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def training_length_lines(trainer) -> list[str]:
    """What a run logs at its start: its length, and why a composite ``train_loss`` rises while its weight ramps
    up (``trainer.loss_composition``, e.g. ``"Ls + beta * Lc"``; None: nothing to explain)."""
    steps = trainer.num_epochs * trainer.num_iterations_per_epoch
    resumed = f" (resuming after epoch {trainer.current_epoch})" if trainer.current_epoch > 0 else ""
    lines = [f"training length: {trainer.num_epochs} epochs x {trainer.num_iterations_per_epoch} steps "
             f"= {steps} optimizer steps{resumed}"]
    composition = getattr(trainer, "loss_composition", None)
    if composition:
        weight = composition.split("*")[0].split("+")[-1].strip()
        rampup = getattr(trainer, "rampup_length", None)
        log_name = getattr(trainer, "log_name", None)
        lines.append(
            f"note: nnU-Net's train_loss (loss_tr in progress.png) is L = {composition}; it rises "
            f"while {weight} ramps up" + (f" over the first {rampup} steps" if rampup else "")
            + ", also when the supervised loss Ls falls: that is not divergence. Ls alone is in the per-epoch "
            + (f"'{log_name.replace('_', ' ')}:' lines and in progress_{log_name}.png" if log_name
               else "log lines"))
    return lines


def final_validation_line(trainer) -> str:
    """Said before nnU-Net's final validation, silent for minutes per case on a CPU."""
    cases = validation_cases(trainer.preprocessed_dataset_folder_base, trainer.fold)
    what = f"the {len(cases)} validation case(s) of fold {trainer.fold}" if cases is not None \
        else f"the validation cases of fold {trainer.fold}"
    return (f"final validation (nnU-Net's perform_actual_validation): predicting {what} whole-volume with the "
            f"final model, then writing {os.path.join(trainer.output_folder, 'validation', 'summary.json')}; "
            f"nnU-Net prints a line per case when it starts it, nothing while it runs (on a CPU a case can take "
            f"minutes)")


def can_plot_network() -> bool:
    """nnU-Net's network diagram needs the ``hiddenlayer`` package; without it nnU-Net logs an error every run."""
    return importlib.util.find_spec("hiddenlayer") is not None

"""What every trainer of this plugin does beyond nnU-Net's ``nnUNetTrainer``, in one place and in order.

:class:`PluginTrainer` is the base of both network families (``nnUNetTrainerDeepMedic``,
``nnUNetTrainerUNet``); the methods are subclasses of those, as nnU-Net's own variants are. Each step
below is a small function of :mod:`nnunet_mt.training`; a method changes what it must through the hooks
named in the table, never by reordering the steps.

=============================  ==========================================================================
nnU-Net's call                 what happens, in order
=============================  ==========================================================================
``__init__``                   a bad ``nnUNet_mt_final_validation`` stops the run now, not after the
                               training (:mod:`~nnunet_mt.training.final_validation`); nnU-Net's
                               ``__init__``; ``checkpoint_latest.pth`` every ``checkpoint_every`` epochs
``initialize``                 seed the global generators from ``nnUNet_mt_seed`` (the same initial
                               weights every run, :mod:`~nnunet_mt.training.seeding`); nnU-Net's
                               ``initialize``; check the ``-pretrained_weights`` file against the network
                               (:mod:`~nnunet_mt.training.checkpoints`)
``on_train_start``             a fresh run: hook ``prepare_fresh_run`` (default: seed the validation
                               batches and dropout; a semi-supervised method checks and keeps its start);
                               open the annotated batches' random stream; SIGTERM stops the loaders
                               (:mod:`~nnunet_mt.training.workers`); nnU-Net's ``on_train_start`` (its
                               folders, the loaders and their warm-up batches); log the training length
                               (:mod:`~nnunet_mt.training.progress`); a fresh run's snapshot 0
                               (:mod:`~nnunet_mt.training.snapshots`); hook ``describe_setup`` (log
                               lines); hook ``resume_state`` (a resumed method puts its random state back,
                               after the warm-up batches as in the first run)
``on_epoch_start``             start the epoch's clock; nnU-Net's
``on_epoch_end``               a snapshot when due; the progress line; nnU-Net's (``checkpoint_latest``)
``save_checkpoint``            hook ``write_checkpoint`` (nnU-Net's checkpoint by default) to a ``.tmp``
                               file, renamed into place: a kill never leaves half a checkpoint
``load_checkpoint`` (``--c``)  the file checked against the network, errors naming it; hook
                               ``check_checkpoint_kind``; nnU-Net's ``load_checkpoint``; hook
                               ``restore_from_checkpoint`` (a method's own state)
``perform_actual_validation``  skipped with ``nnUNet_mt_final_validation=0``; otherwise nnU-Net's, with a
                               line before (it is silent for minutes per case on a CPU) and after
``on_train_end``               nnU-Net's; then every loader's workers stopped (the unannotated one too)
``get_*_transforms``           nnU-Net's transforms, wrapped so that background workers die with the run
=============================  ==========================================================================
"""
from __future__ import annotations

import time

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_mt.training.checkpoints import (check_pretrained_weights, check_resume_checkpoint,
                                            pretrained_weights_argument)
from nnunet_mt.training.final_validation import final_validation_enabled, skipped_message
from nnunet_mt.training.progress import (can_plot_network, epoch_progress, final_validation_line, format_duration,
                                         training_length_lines)
from nnunet_mt.training.seeding import (SEED_VARIABLE, annotated_stream, fresh_run_seed, seed_everything,
                                        training_seed)
from nnunet_mt.training.snapshots import snapshot_due, write_snapshot
from nnunet_mt.training.workers import (ExitWithParent, bind_forked_children, release_forked_children,
                                        restore_sigterm, stop_loaders, stop_loaders_on_sigterm)
from nnunet_mt.utils.atomic import write_atomically


class PluginTrainer(nnUNetTrainer):
    """nnU-Net's trainer with the plugin's seeding, checks, progress lines, snapshots, atomic checkpoints and
    worker lifetime (the module docstring lists them in order)."""

    #: epochs between ``checkpoint_latest.pth`` writes (nnU-Net: 50); every epoch, so a killed run resumed with
    #: --c loses at most one epoch (a few MB, written atomically)
    checkpoint_every: int = 1
    #: epochs between weight snapshots (:mod:`nnunet_mt.training.snapshots`; ``nnUNet_mt_snapshot_every``); 0: none
    snapshot_every: int = 0
    #: the formula of nnU-Net's ``train_loss`` when it is not the supervised loss alone (e.g. ``"Ls + beta * Lc"``)
    loss_composition: str | None = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        final_validation_enabled()  # a bad value stops the run now, not after the training
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.save_every = self.checkpoint_every

    # ---- hooks a method may override -----------------------------------------------------------
    def is_fresh_run(self) -> bool:
        """Whether this run starts rather than continues (``--c``)."""
        return self.current_epoch == 0

    def prepare_fresh_run(self) -> None:
        """Before a fresh run's loaders start: seed what it draws besides the annotated batches."""
        seed_everything(fresh_run_seed(self.training_seed, self.local_rank))  # validation batches, dropout
        self.print_to_log_file(f"seeded run: {SEED_VARIABLE}={self.training_seed}")

    def describe_setup(self) -> None:
        """Log lines about the run's set-up, once its loaders are running."""

    def resume_state(self) -> None:
        """After nnU-Net's ``on_train_start``: a resumed method puts its random state back here."""

    def write_checkpoint(self, filename: str) -> None:
        """The checkpoint's contents, written to ``filename`` (a temporary name): nnU-Net's by default."""
        super().save_checkpoint(filename)

    def check_checkpoint_kind(self, checkpoint: dict, filename: str) -> None:
        """Refuse a ``--c`` checkpoint this trainer cannot continue (it fits the network)."""

    def restore_from_checkpoint(self, checkpoint: dict) -> None:
        """After nnU-Net's ``load_checkpoint``: the method's own state from the same checkpoint."""

    # ---- nnU-Net's calls, with the plugin's steps in order ---------------------------------------
    def initialize(self):
        self.training_seed = training_seed()
        # before nnU-Net builds the network: the same initial weights on every run (and every DDP rank)
        seed_everything(self.training_seed)
        super().initialize()
        pretrained = pretrained_weights_argument()
        if pretrained is not None:
            check_pretrained_weights(self, pretrained)

    def on_train_start(self):
        if not self.was_initialized:
            self.initialize()
        if self.is_fresh_run():
            self.prepare_fresh_run()
        # the annotated batches' own stream (seeding.py), used by loaders that draw in the training process
        self.annotated_stream = annotated_stream(self.training_seed, self.local_rank, self.current_epoch)
        self._previous_sigterm_handler = stop_loaders_on_sigterm(self)
        super().on_train_start()
        for line in training_length_lines(self):
            self.print_to_log_file(line)
        if self.current_epoch == 0 and snapshot_due(0, self.snapshot_every):
            write_snapshot(self, 0)
        self.describe_setup()
        self.resume_state()

    def on_epoch_start(self):
        self._epoch_started = time.time()
        super().on_epoch_start()

    def on_epoch_end(self):
        # the snapshot before nnU-Net's on_epoch_end, which writes checkpoint_latest.pth and counts the epoch: a
        # run killed in between redoes the epoch on resume (and its snapshot), so every epoch it skips has one
        if snapshot_due(self.current_epoch + 1, self.snapshot_every):
            write_snapshot(self, self.current_epoch + 1)
        started = getattr(self, "_epoch_started", None)
        self.print_to_log_file(epoch_progress(self.current_epoch, self.num_epochs, self.num_iterations_per_epoch,
                                              None if started is None else time.time() - started))
        super().on_epoch_end()

    def save_checkpoint(self, filename: str) -> None:
        write_atomically(self.write_checkpoint, filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        checkpoint = None
        if isinstance(filename_or_checkpoint, str):
            if not self.was_initialized:
                self.initialize()
            checkpoint = check_resume_checkpoint(self, filename_or_checkpoint)
            self.check_checkpoint_kind(checkpoint, filename_or_checkpoint)
        # nnU-Net 2.8.1's load_checkpoint only works when given a file name, so it reads the file once more
        super().load_checkpoint(filename_or_checkpoint)
        if checkpoint is not None:
            self.restore_from_checkpoint(checkpoint)

    def perform_actual_validation(self, save_probabilities: bool = False):
        if not final_validation_enabled():
            self.print_to_log_file(skipped_message(self.output_folder))
            return
        self.print_to_log_file(final_validation_line(self))
        started = time.time()
        super().perform_actual_validation(save_probabilities)
        self.print_to_log_file(f"final validation done in {format_duration(time.time() - started)}")

    def on_train_end(self):
        try:
            super().on_train_end()  # nnU-Net stops its two loaders here
        finally:
            stop_loaders(self)
            release_forked_children(self)  # its workers are stopped: later forks are not this trainer's
            restore_sigterm(getattr(self, "_previous_sigterm_handler", None))

    def get_training_transforms(self, *args, **kwargs):
        bind_forked_children(self)  # built before the loaders that apply them fork their workers
        return ExitWithParent(super().get_training_transforms(*args, **kwargs))

    def get_validation_transforms(self, *args, **kwargs):
        bind_forked_children(self)
        return ExitWithParent(super().get_validation_transforms(*args, **kwargs))

    def plot_network_architecture(self):
        """Skipped without the ``hiddenlayer`` package, instead of an error logged every run."""
        if can_plot_network():
            super().plot_network_architecture()

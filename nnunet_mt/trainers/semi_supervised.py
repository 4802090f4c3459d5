"""The machinery every semi-supervised trainer here shares; each method adds only how it uses the
unannotated patches (:class:`~nnunet_mt.trainers.nnUNetTrainerMeanTeacher.MeanTeacherMixin`,
:mod:`~nnunet_mt.trainers.nnUNetTrainerDeepMedicEN`, :mod:`~nnunet_mt.trainers.nnUNetTrainerDeepMedicUDA`).

:class:`SemiSupervisedMixin` (put it first in the bases of ``nnUNetTrainerDeepMedic`` or ``nnUNetTrainerUNet``)
fills :class:`~nnunet_mt.trainers.plugin_trainer.PluginTrainer`'s hooks and provides:

* an unannotated loader: the preprocessed ``imagesUnlabeled`` scans (``nnunet_mt_preprocess_unlabeled``),
  sampled 50/50 from pseudo-lesion and healthy tissue (:mod:`nnunet_mt.training.pseudo_lesions`) through
  nnU-Net's augmentation and background workers; each optimizer step sees 8 annotated + 8 unannotated
  patches (:meth:`_next_batches`), as the paper's batch;
* a required supervised start (``-pretrained_weights``), checked in ``prepare_fresh_run``: the
  pseudo-lesions are predicted with it, and the four methods of the paper's comparison then differ only in
  how they use the unannotated data;
* seeded, replayable runs (``prepare_fresh_run``, ``resume_state``); checkpoints (``write_checkpoint``,
  ``restore_from_checkpoint``) holding the model (``network_weights``, what
  ``nnUNetv2_predict`` loads), the student, the step counter, RNG states, the per-step history and
  whatever the method adds (:meth:`_extra_checkpoint_state`);
* per epoch: the history of the step outputs named in ``history_step_keys`` and the training Dice of
  :meth:`_dice_models`, written to ``<log_name>_log.json`` and plotted to ``progress_<log_name>.png``.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from batchgenerators.utilities.file_and_folder_operations import isdir, join

from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

from nnunet_mt.preprocessing.unlabeled import unlabeled_data_folder
from nnunet_mt.training.distributed import shard, split_batch_size, unwrap
from nnunet_mt.training.pseudo_lesions import PseudoLesionLocations, load_or_compute, weights_digest
from nnunet_mt.training.seeding import (global_rng_state, seeded_rng_state, set_global_rng_state, training_seed,
                                        unstreamed)
from nnunet_mt.utils.atomic import write_atomically

PRETRAINED_MISSING = (
    "{trainer} needs a supervised model to start from (the unannotated scans are sampled around its "
    "predicted lesions; for the mean teacher, Sec. 2.2: the teacher is initialised with the supervised "
    "network). Two steps:\n"
    "  1. nnUNetv2_train {dataset} {configuration} {fold} -tr {supervised}\n"
    "  2. nnUNetv2_train {dataset} {configuration} {fold} -tr {trainer} -pretrained_weights "
    "$nnUNet_results/{dataset}/{supervised}__{plans}__{configuration}/fold_{fold}/checkpoint_final.pth")


@contextmanager
def temporarily(obj, attr: str, value):
    """Set ``obj.attr = value`` inside the block, if ``obj`` has that attribute; restore it afterwards."""
    if obj is None or not hasattr(obj, attr):
        yield obj
        return
    previous = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield obj
    finally:
        setattr(obj, attr, previous)


def full_resolution(output):
    """The full-resolution output of a network with or without deep supervision (a list, finest first)."""
    return output[0] if isinstance(output, (list, tuple)) else output


def hard_dice(logits, target) -> float:
    """Foreground Dice of argmax(logits) (B, K, ...) against labels (B, 1, ...), over the whole batch."""
    logits, target = full_resolution(logits), full_resolution(target)
    pred = logits.argmax(1)
    ref = target[:, 0].long()
    valid = ref >= 0
    pred_fg, ref_fg = (pred > 0) & valid, (ref > 0) & valid
    denom = pred_fg.sum() + ref_fg.sum()
    return float(2 * (pred_fg & ref_fg).sum() / denom) if denom > 0 else float("nan")


class SemiSupervisedMixin:
    """Annotated + unannotated training on top of a plugin trainer (put it first in the bases)."""

    #: unannotated patches per optimizer step (the paper's 8), split across DDP ranks like nnU-Net's batch
    batch_size_unannotated: int = 8
    #: ramp-up length in optimizer steps of the method's unannotated-data weight (the paper's L = 400)
    rampup_length: int = 400
    #: annotated batches on which the training Dice is measured after each epoch (Fig. 2)
    dice_batches_per_epoch: int = 2
    #: the supervised trainer whose checkpoint the run starts from (for the error message)
    supervised_trainer_name: str = "nnUNetTrainerDeepMedic"
    #: seeds data sampling, augmentation and the method's own random draws of a fresh run
    noise_seed: int = 20190801
    #: DeepMedic's sampler draws non-lesion patches from predicted healthy tissue; nnU-Net's draws them anywhere
    sample_healthy_tissue: bool = True
    #: per-step outputs of ``train_step`` kept in the history (besides "step")
    history_step_keys: tuple[str, ...] = ()
    #: names the log files: ``<log_name>_log.json``, ``progress_<log_name>.png``
    log_name: str = "semi_supervised"

    def _init_semi_supervised(self) -> None:
        self.global_step = 0
        self.noise_seed = self.noise_seed + training_seed()  # the run's nnUNet_mt_seed moves every draw
        self.noise_generator = torch.Generator().manual_seed(self.noise_seed + self.local_rank)
        self.dataloader_unlabeled = None
        self.initial_weights_digest = None  # weights right after initialisation, to detect pretraining
        self.pseudo_lesion_digest = None  # weights the pseudo-lesions were predicted with
        dice_keys = [f"dice_{name}" for name in self._dice_model_names()]
        self.history = {k: [] for k in ("step", *self.history_step_keys, "dice_step", *dice_keys)}
        self._pending_rng_state = None
        self._pending_annotated_stream = None

    # ---- what a method overrides --------------------------------------------------------------
    def target_network(self) -> torch.nn.Module:
        """The network whose weights are the model (``network_weights``): the student by default."""
        return self.plain_network()

    def _dice_model_names(self) -> tuple[str, ...]:
        return ("student",)

    def _dice_models(self) -> dict[str, torch.nn.Module]:
        """Networks whose training Dice is logged each epoch, by name."""
        return {"student": self.plain_network()}

    def _on_fresh_start(self) -> None:
        """Called once at the start of a fresh (not resumed) run, after the pretrained weights are in."""

    def _extra_checkpoint_state(self) -> dict:
        return {}

    def _load_extra_checkpoint_state(self, state: dict, checkpoint: dict) -> None:
        pass

    def _plot_history(self, filename: str) -> None:
        from nnunet_mt.training.plots import plot_semi_supervised_progress

        plot_semi_supervised_progress(self.history, filename, title=self.__class__.__name__,
                                      step_keys=self.history_step_keys)

    # ---- set-up ------------------------------------------------------------------------------
    def plain_network(self) -> torch.nn.Module:
        """The student inside DDP / torch.compile wrappers."""
        return unwrap(self.network)

    def initialize(self):
        super().initialize()
        self.initial_weights_digest = weights_digest(self.plain_network())

    def is_fresh_run(self) -> bool:
        return self._pending_rng_state is None  # a resumed run has its checkpoint's random state waiting

    def prepare_fresh_run(self) -> None:
        """The supervised start must be in (its weights differ from the initialisation's); then the method's
        own seeding (``noise_seed``), so the run replays, and its start (e.g. the teacher's copy)."""
        if weights_digest(self.plain_network()) == self.initial_weights_digest:
            raise RuntimeError(PRETRAINED_MISSING.format(
                trainer=self.__class__.__name__, supervised=self.supervised_trainer_name,
                dataset=self.plans_manager.dataset_name, configuration=self.configuration_name, fold=self.fold,
                plans=self.plans_manager.plans_name))
        self._set_rng_state(self._seeded_rng_state(self.noise_seed + self.local_rank))
        self._on_fresh_start()

    def resume_state(self) -> None:
        """A resumed run's random state, after the loaders' warm-up batches as in the first run."""
        if self._pending_rng_state is None:
            return
        if self.is_ddp:
            # the checkpoint holds rank 0's states only: every rank draws its own, fresh ones
            seed = self.noise_seed + 1000 * self.global_step + self.local_rank
            self._set_rng_state(self._seeded_rng_state(seed))
            self.noise_generator.manual_seed(seed)
        else:
            self._set_rng_state(self._pending_rng_state)
            if self._pending_annotated_stream is not None:  # checkpoints before paired streams have none
                self.annotated_stream.state = self._pending_annotated_stream
        self._pending_rng_state = self._pending_annotated_stream = None

    # ---- unannotated data --------------------------------------------------------------------
    def unlabeled_folder(self) -> str:
        return str(unlabeled_data_folder(self.preprocessed_dataset_folder_base,
                                         self.configuration_manager.data_identifier))

    def _unlabeled_dataset(self):
        folder = self.unlabeled_folder()
        if not isdir(folder) or not [f for f in os.listdir(folder) if f.endswith(".pkl") and "pseudo" not in f]:
            raise RuntimeError(
                f"No preprocessed unannotated scans in {folder}. Put them in $nnUNet_raw/"
                f"{self.plans_manager.dataset_name}/imagesUnlabeled (named like imagesTr) and run "
                f"nnunet_mt_preprocess_unlabeled -d {self.plans_manager.dataset_name} -c {self.configuration_name}")
        dataset = infer_dataset_class(folder)(folder)
        first = dataset.identifiers[0]
        channels = dataset.load_case(first)[0].shape[0]
        if channels != self.num_input_channels:
            raise RuntimeError(f"unannotated scan {first} in {folder} has {channels} channels, the annotated "
                               f"data {self.num_input_channels}: preprocess imagesUnlabeled with the same channels")
        return dataset

    def _predict_logits(self, network: torch.nn.Module):
        """(C, Z, Y, X) -> (K, Z, Y, X) logits with nnU-Net's sliding-window predictor (no mirroring)."""
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                    perform_everything_on_device=self.device.type == "cuda", device=self.device,
                                    verbose=False, allow_tqdm=False)
        predictor.manual_initialization(network, self.plans_manager, self.configuration_manager, None,
                                        self.dataset_json, self.__class__.__name__, None)
        return lambda x: predictor.predict_sliding_window_return_logits(x).float()

    def _pseudo_lesions(self, dataset) -> dict:
        source = self.target_network()
        if self.pseudo_lesion_digest is None:
            self.pseudo_lesion_digest = weights_digest(source)
        folder = self.unlabeled_folder()
        locations = None
        if self.local_rank == 0:
            self.print_to_log_file("approximating the lesions of the unannotated scans with the initial model")
            # a resumed run's network has moved on from the weights the cache belongs to: read it, never recompute
            predict = self._predict_logits(source) if weights_digest(source) == self.pseudo_lesion_digest else None
            with self._single_output(source):
                locations = load_or_compute(folder, self.pseudo_lesion_digest, predict, dataset,
                                            log=self.print_to_log_file)
        if self.is_ddp:
            dist.barrier()
        if locations is None:  # other ranks read what rank 0 wrote
            locations = load_or_compute(folder, self.pseudo_lesion_digest, None, dataset, log=lambda *a: None)
        return locations

    def _single_output(self, module: torch.nn.Module):
        """Deep supervision off while nnU-Net's predictor runs the module (it expects one output)."""
        return temporarily(getattr(module, "decoder", None), "deep_supervision", False)

    def _unlabeled_batch_size(self) -> int:
        """This rank's share of the unannotated batch, split like nnU-Net splits the annotated one."""
        if not self.is_ddp:
            return self.batch_size_unannotated
        return split_batch_size(self.batch_size_unannotated, dist.get_world_size(), dist.get_rank())

    def get_dataloaders(self):
        # checked before nnU-Net starts its workers, whose tracebacks would otherwise bury the message
        dataset = self._unlabeled_dataset()
        loaders = super().get_dataloaders()
        locations = self._pseudo_lesions(dataset)
        if self.is_ddp:  # each rank samples its own share of the unannotated scans
            keep = shard(dataset.identifiers, dist.get_world_size(), dist.get_rank())
            dataset = infer_dataset_class(dataset.source_folder)(dataset.source_folder, keep)
        transforms, initial_patch_size = self.training_transforms()
        loader = self._make_loader(self._unlabeled_cases(dataset, locations), initial_patch_size, transforms,
                                   batch_size=self._unlabeled_batch_size())
        self.dataloader_unlabeled = self._augmenter(loader, *self._unlabeled_processes())
        return loaders

    def _unlabeled_cases(self, dataset, locations: dict):
        """What the unannotated loader reads: the scans with their pseudo-lesion locations."""
        return PseudoLesionLocations(dataset, locations, self.sample_healthy_tissue)

    def _unlabeled_processes(self) -> tuple[int, int]:
        from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
        n = get_allowed_n_proc_DA()
        return max(1, n // 2), max(3, n // 4)

    # ---- pieces of one optimizer step -------------------------------------------------------------
    def _next_batches(self, batch: dict):
        """(annotated images on the device, their targets on the device, unannotated images on the CPU)."""
        batch = self._crop_target(batch)
        unlabeled = next(self.dataloader_unlabeled)
        x_l = batch["data"].to(self.device, non_blocking=True)
        y_l = batch["target"]
        y_l = [y.to(self.device, non_blocking=True) for y in y_l] if isinstance(y_l, list) \
            else y_l.to(self.device, non_blocking=True)
        return x_l, y_l, unlabeled["data"]

    def _backward_and_step(self, loss: torch.Tensor) -> None:
        """nnU-Net's update of the segmenter: (scaled) backward, gradient clipping at 12, optimizer step."""
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()

    # ---- watching it train --------------------------------------------------------------------
    @contextmanager
    def _patch_mode(self, module: torch.nn.Module):
        """Eval mode with the valid (patch) forward, restored afterwards."""
        was_training = module.training
        module.eval()
        try:
            with temporarily(module, "dense_eval", False):
                yield module
        finally:
            module.train(was_training)

    @torch.no_grad()
    def _training_dice(self) -> dict[str, float]:
        """Dice of each of :meth:`_dice_models` on the same fresh annotated training batches (Fig. 2)."""
        models = self._dice_models()
        scores = {name: [] for name in models}
        for _ in range(self.dice_batches_per_epoch):
            # beside the annotated stream: every method then trains on the same annotated batches (seeding.py)
            batch = self._crop_target(next(unstreamed(self.dataloader_train)))
            x, y = batch["data"].to(self.device), full_resolution(batch["target"]).to(self.device)
            for name, module in models.items():
                with self._patch_mode(module):
                    scores[name].append(hard_dice(module(x), y))
        return {name: float(np.nanmean(s)) for name, s in scores.items()}

    def on_train_epoch_end(self, train_outputs: list[dict]):
        super().on_train_epoch_end(train_outputs)
        h = self.history
        for o in train_outputs:
            for k in ("step", *self.history_step_keys):
                h[k].append(o[k])
        dice = self._training_dice()
        h["dice_step"].append(self.global_step)
        for name, value in dice.items():
            h[f"dice_{name}"].append(value)
        means = ", ".join(f"{k} {np.nanmean([o[k] for o in train_outputs]):.4f}" for k in self.history_step_keys)
        dices = " ".join(f"{name} {value:.4f}" for name, value in dice.items())
        self.print_to_log_file(f"{self.log_name.replace('_', ' ')}: step {self.global_step}, {means}, "
                               f"training Dice {dices}")
        if self.local_rank == 0:
            self._write_history()

    def _write_history(self) -> None:
        write_atomically(lambda tmp: Path(tmp).write_text(json.dumps(self.history)),
                         join(self.output_folder, f"{self.log_name}_log.json"))
        self._plot_history(join(self.output_folder, f"progress_{self.log_name}.png"))

    # ---- validation uses the model ------------------------------------------------------------
    @contextmanager
    def _model_as_network(self):
        student = self.network
        self.network = self.target_network()
        try:
            yield
        finally:
            self.network = student

    def on_validation_epoch_start(self):
        self._student_during_validation = self.network
        self.network = self.target_network()
        super().on_validation_epoch_start()

    def on_validation_epoch_end(self, val_outputs):
        super().on_validation_epoch_end(val_outputs)
        self.network = self._student_during_validation

    def perform_actual_validation(self, save_probabilities: bool = False):
        with self._model_as_network():
            super().perform_actual_validation(save_probabilities)

    # ---- checkpoints ---------------------------------------------------------------------------
    @staticmethod
    def _rng_state() -> dict:
        state = global_rng_state()
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    #: RNG states as seeded with a seed (validation batches, unannotated sampling and augmentation, dropout)
    _seeded_rng_state = staticmethod(seeded_rng_state)

    @staticmethod
    def _set_rng_state(state: dict) -> None:
        set_global_rng_state(state)
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def write_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint with the model as ``network_weights``, plus the student and the state
        needed to resume (step counter, noise generator, RNGs, history, the method's own)."""
        if self.local_rank != 0 or self.disable_checkpointing:
            return
        checkpoint = {
            "network_weights": self.target_network().state_dict(),
            "student_weights": self.plain_network().state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "logging": self.logger.get_checkpoint(),
            "_best_ema": self._best_ema,
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
            "semi_supervised": {"global_step": self.global_step, "noise_generator": self.noise_generator.get_state(),
                                "rng": self._rng_state(), "history": self.history,
                                "annotated_stream": getattr(getattr(self, "annotated_stream", None), "state", None),
                                "pseudo_lesion_digest": self.pseudo_lesion_digest,
                                **self._extra_checkpoint_state()},
        }
        torch.save(checkpoint, filename)

    def check_checkpoint_kind(self, checkpoint: dict, filename: str) -> None:
        if "semi_supervised" not in checkpoint:
            raise RuntimeError(f"{filename} is not a {self.__class__.__name__} checkpoint (no "
                               f"semi-supervised state); pass supervised weights with -pretrained_weights instead")

    def restore_from_checkpoint(self, checkpoint: dict) -> None:
        """nnU-Net loaded ``network_weights`` (the model) into the student: put the student back, then the state."""
        self.plain_network().load_state_dict(checkpoint["student_weights"])
        state = checkpoint["semi_supervised"]
        self.global_step = state["global_step"]
        self.noise_generator.set_state(state["noise_generator"])
        self.history = state["history"]
        self.pseudo_lesion_digest = state["pseudo_lesion_digest"]
        self._pending_rng_state = state["rng"]
        self._pending_annotated_stream = state.get("annotated_stream")
        self._load_extra_checkpoint_state(state, checkpoint)

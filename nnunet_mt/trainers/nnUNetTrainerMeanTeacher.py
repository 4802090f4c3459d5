"""The paper's method: ``nnUNetv2_train DATASET 3d_fullres FOLD -tr nnUNetTrainerMeanTeacher
-pretrained_weights <supervised DeepMedic checkpoint>``.

:class:`MeanTeacherMixin` adds the method (Sec. 2.2-2.3) to the shared semi-supervised machinery
(:class:`~nnunet_mt.trainers.semi_supervised.SemiSupervisedMixin`: unannotated loader, 8+8 batch,
supervised start, seeded runs, checkpoints, history) and works on both networks' trainers
(``nnUNetTrainerDeepMedic``, ``nnUNetTrainerUNet``):

* each optimizer step: the student sees the annotated patches clean and the unannotated ones with
  noise eta (Eq. 5), the teacher the same batch with independent noise eta' on the unannotated half
  (so both normalise over the same 8 + 8 patches; the consistency uses the unannotated half); both run
  with DeepMedic's dropout, as in both references (``teacher_dropout``);
  ``L = Ls + beta Lc`` (Eqs. 1-3); then the EMA teacher update (Eq. 4);
* the teacher starts from ``-pretrained_weights`` (so does the student) and is the final model: the
  checkpoint's ``network_weights``, which ``nnUNetv2_predict`` loads, are the teacher's;
* per epoch: Ls, Lc, beta, alpha and the training Dice of student and teacher (Fig. 2), written to
  ``mean_teacher_log.json`` and plotted in ``progress_mean_teacher.png`` beside nnU-Net's ``progress.png``.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import autocast

from nnunetv2.utilities.helpers import dummy_context

from nnunet_mt.trainers.nnUNetTrainerDeepMedic import nnUNetTrainerDeepMedic
from nnunet_mt.trainers.semi_supervised import SemiSupervisedMixin, full_resolution
from nnunet_mt.training.distributed import average_buffers
from nnunet_mt.training.mean_teacher import (CONSISTENCY_LOSSES, MeanTeacherSchedule, apply_input_noise,
                                             batch_statistics_from_first, captured_output, draw_input_noise,
                                             ema_update, forward_unannotated_half, make_teacher,
                                             set_teacher_forward_mode, similarity_preserving_loss)


class MeanTeacherMixin(SemiSupervisedMixin):
    """The adapted mean teacher on top of a plugin trainer (put it first in the bases)."""

    noise_additive_std: float = 0.05
    noise_multiplicative_std: float = 0.01
    #: False: the Π model (no EMA teacher; the student's second noisy pass is the target)
    use_ema_teacher: bool = True
    history_step_keys = ("Ls", "Lc", "beta", "alpha")
    log_name = "mean_teacher"

    # ---- the consistency: what the variants (mean_teacher_variants.py) change ----------------------
    #: the loss ``Lc`` by name, a key of ``training.mean_teacher.CONSISTENCY_LOSSES`` ("paper": Eq. 1)
    consistency: str = "paper"
    #: keyword arguments of that loss (e.g. ``{"confidence": 0.95}`` for "kl")
    consistency_kwargs: dict = {}
    #: ``w`` in ``L = Ls + beta w Lc``: 1 for the Dice losses; 0 trains without consistency (a control)
    consistency_scale: float = 1.0
    #: False: beta ramps up (Eq. 3); True: beta = 1 from the first step (the released code's total cost)
    constant_beta: bool = False
    #: consistency on every sample of the batch (the released code) instead of the unannotated half
    consistency_on_all_samples: bool = False
    #: weight of the similarity-preserving term on the first 1^3 layer (the released code: 1e4; 0: none)
    similarity_scale: float = 0.0
    #: False: the student's (and teacher's) BatchNorm layers normalise with the annotated half's statistics
    unannotated_in_batch_statistics: bool = True
    #: the teacher's forward keeps DeepMedic's dropout, as both references' (``set_teacher_forward_mode``)
    teacher_dropout: bool = True
    #: EMA decay after the ramp-up (Sec. 2.2: 0.999; 0.99 during it). Over a short run 0.999 keeps the teacher
    #: close to its ramp-up state: 1000 steps in, 0.999^600 = 0.55 of its weight is still its step-400 state
    ema_decay_after: float = 0.999

    def _init_mean_teacher(self) -> None:
        if self.consistency not in CONSISTENCY_LOSSES:
            raise ValueError(f"{self.__class__.__name__}.consistency = {self.consistency!r}: expected one of "
                             f"{', '.join(CONSISTENCY_LOSSES)}")
        if self.similarity_scale and "Lsim" not in self.history_step_keys:
            self.history_step_keys = (*self.history_step_keys, "Lsim")
        self._init_semi_supervised()
        self.schedule = MeanTeacherSchedule(self.rampup_length, decay_after=self.ema_decay_after)
        self.teacher = None

    @property
    def loss_composition(self) -> str | None:
        """What nnU-Net logs as train_loss (explained in the log when it rises while beta ramps up)."""
        if self.constant_beta or not self.consistency_scale:
            return None
        weight = "" if self.consistency_scale == 1 else f"{self.consistency_scale:g} "
        similarity = f" + {self.similarity_scale:g} Lsim" if self.similarity_scale else ""
        return f"Ls + beta * {weight}Lc{similarity}"

    def target_network(self) -> torch.nn.Module:
        """The network whose weights are the model: the teacher (the student for the Π model)."""
        return self.teacher if self.use_ema_teacher else self.plain_network()

    def _dice_model_names(self) -> tuple[str, ...]:
        return ("student", "teacher")

    def _dice_models(self) -> dict[str, torch.nn.Module]:
        return {"student": self.plain_network(), "teacher": self.target_network()}

    def _on_fresh_start(self) -> None:
        if self.use_ema_teacher:
            self.teacher = make_teacher(self.plain_network()).to(self.device)

    def _plot_history(self, filename: str) -> None:
        from nnunet_mt.training.plots import plot_mean_teacher_progress

        plot_mean_teacher_progress(self.history, filename, rampup_length=self.rampup_length)

    def _load_extra_checkpoint_state(self, state: dict, checkpoint: dict) -> None:
        if self.use_ema_teacher:
            self.teacher = make_teacher(self.plain_network()).to(self.device)
            self.teacher.load_state_dict(checkpoint["network_weights"])

    # ---- one optimizer step --------------------------------------------------------------------
    def _consistency_target(self, x_annotated: torch.Tensor, x_teacher: torch.Tensor):
        """Teacher logits on its noisy copy of the unannotated patches (Eq. 1's f(X_u, eta', theta')), or on
        the whole batch with ``consistency_on_all_samples``; no gradient. The teacher sees the same composite
        batch as the student, [annotated clean, unannotated with eta'], so its BatchNorm normalises over the
        same 8 + 8 patches (``forward_unannotated_half``)."""
        with torch.no_grad():
            # Π model: the student's own second pass, detached
            network = set_teacher_forward_mode(self.teacher, self.teacher_dropout) if self.use_ema_teacher \
                else self.network
            with self._normalisation(network, len(x_annotated)):
                if self.consistency_on_all_samples:
                    return network(torch.cat([x_annotated, x_teacher]))
                return forward_unannotated_half(network, x_annotated, x_teacher)

    def _normalisation(self, network: torch.nn.Module, n_annotated: int):
        """BatchNorm over the whole batch (default) or with the annotated half's statistics (the control)."""
        if self.unannotated_in_batch_statistics:
            return nullcontext()
        return batch_statistics_from_first(network, n_annotated)

    def _similarity_layer(self, network: torch.nn.Module) -> torch.nn.Module:
        """The layer whose activations the similarity-preserving term compares: DeepMedic's first 1^3 layer
        (the released code's ``getFcPathway().getLayer(0)``)."""
        fc = getattr(network, "fc", None)
        if fc is None or not len(fc):
            raise RuntimeError(f"{self.__class__.__name__}: similarity_scale needs a DeepMedic network "
                               f"(its first 1^3 layer, .fc[0]); {type(network).__name__} has none")
        return fc[0]

    def _capture_similarity(self, network: torch.nn.Module):
        return captured_output(self._similarity_layer(network)) if self.similarity_scale else nullcontext([])

    def train_step(self, batch: dict) -> dict:
        x_l, y_l, x_u = self._next_batches(batch)
        # Eq. 5: independent per-voxel noise for student (eta) and teacher (eta'), drawn first (replayable)
        eta = draw_input_noise(x_u.shape, self.noise_additive_std, self.noise_multiplicative_std,
                               generator=self.noise_generator)
        eta_t = draw_input_noise(x_u.shape, self.noise_additive_std, self.noise_multiplicative_std,
                                 generator=self.noise_generator)
        x_s = apply_input_noise(x_u, *eta).to(self.device, non_blocking=True)
        x_t = apply_input_noise(x_u, *eta_t).to(self.device, non_blocking=True)
        step = self.global_step
        beta = 1.0 if self.constant_beta else self.schedule.beta(step)
        alpha = self.schedule.alpha(step)
        consistency = CONSISTENCY_LOSSES[self.consistency]
        n = len(x_l)

        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            with self._normalisation(self.network, n), self._capture_similarity(self.plain_network()) as feats_s:
                out = self.network(torch.cat([x_l, x_s]))  # one batch of 16, as the paper's
            out_l = [o[:n] for o in out] if isinstance(out, (list, tuple)) else out[:n]
            ls = self.loss(out_l, y_l)  # Eq. 2, annotated patches, no noise
            target_net = self.teacher if self.use_ema_teacher else self.plain_network()
            with self._capture_similarity(target_net) as feats_t:
                target = full_resolution(self._consistency_target(x_l, x_t))
            # consistency on the full-resolution output (deep supervision's coarser heads are auxiliary)
            out_c = full_resolution(out)[-len(target):]
            lc = consistency(torch.softmax(out_c.float(), 1), torch.softmax(target.float(), 1),
                             **self.consistency_kwargs)
            loss = ls + beta * self.consistency_scale * lc  # Eq. 3
            extra = {}
            if self.similarity_scale:
                m = len(target)  # the samples in the consistency, last in both batches
                lsim = similarity_preserving_loss(feats_s[-1][-m:], feats_t[-1][-m:])
                loss = loss + self.similarity_scale * lsim
                extra["Lsim"] = lsim.item()
        self._backward_and_step(loss)
        if self.use_ema_teacher:
            ema_update(self.teacher, self.plain_network(), alpha)  # Eq. 4, BatchNorm statistics too
            if self.is_ddp:
                average_buffers(self.teacher)  # one teacher on every rank
        self.global_step += 1
        return {"loss": loss.detach().cpu().numpy(), "Ls": ls.item(), "Lc": lc.item(), "beta": beta,
                "alpha": alpha if self.use_ema_teacher else float("nan"), "step": step, **extra}


class nnUNetTrainerMeanTeacher(MeanTeacherMixin, nnUNetTrainerDeepMedic):
    """Cui et al. 2019: mean teacher with DeepMedic student and teacher. Same length as the supervised
    trainer (300 epochs x 250 steps); the ramp-up (400 steps) ends early in the first two epochs."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._init_mean_teacher()


class nnUNetTrainerMeanTeacher_50epochs(nnUNetTrainerMeanTeacher):
    epochs = 50


class nnUNetTrainerMeanTeacher_demo(nnUNetTrainerMeanTeacher):
    """The README demo on CPU: 4 epochs x 10 steps after the supervised demo, ramp-up shortened to 20 steps."""

    rampup_length = 20
    epochs, iterations_per_epoch, val_iterations_per_epoch = 4, 10, 2
    supervised_trainer_name = "nnUNetTrainerDeepMedic_demo"


class nnUNetTrainerMeanTeacher_tiny(nnUNetTrainerMeanTeacher):
    """For tests: narrow DeepMedic, 2 epochs x 2 steps, batch 2 + 2, ramp-up 2 steps, checkpoint every epoch."""

    deepmedic_kwargs = {"filters": (8,) * 8, "fc_filters": (16, 16)}
    supervised_trainer_name = "nnUNetTrainerDeepMedic_tiny"  # same widths: its checkpoint fits
    batch_size_annotated = 2
    batch_size_unannotated = 2
    rampup_length = 2
    dice_batches_per_epoch = 1
    epochs, iterations_per_epoch, val_iterations_per_epoch, checkpoint_every = 2, 2, 1, 1

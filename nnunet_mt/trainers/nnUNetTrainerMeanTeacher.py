"""The paper's method: ``nnUNetv2_train DATASET 3d_fullres FOLD -tr nnUNetTrainerMeanTeacher
-pretrained_weights <supervised DeepMedic checkpoint>``.

:class:`MeanTeacherMixin` adds the method (Sec. 2.2-2.3) to the shared semi-supervised machinery
(:class:`~nnunet_mt.trainers.semi_supervised.SemiSupervisedMixin`: unannotated loader, 8+8 batch,
supervised start, seeded runs, checkpoints, history) and works on any nnU-Net trainer:

* each optimizer step: the student sees the annotated patches clean and the unannotated ones with
  noise eta (Eq. 5), the teacher the same batch with independent noise eta' on the unannotated half
  (so both normalise over the same 8 + 8 patches; the consistency uses the unannotated half);
  ``L = Ls + beta Lc`` (Eqs. 1-3); then the EMA teacher update (Eq. 4);
* the teacher starts from ``-pretrained_weights`` (so does the student) and is the final model: the
  checkpoint's ``network_weights``, which ``nnUNetv2_predict`` loads, are the teacher's;
* per epoch: Ls, Lc, beta, alpha and the training Dice of student and teacher (Fig. 2), written to
  ``mean_teacher_log.json`` and plotted in ``progress_mean_teacher.png`` beside nnU-Net's ``progress.png``.
"""
from __future__ import annotations

import torch
from torch import autocast

from nnunetv2.utilities.helpers import dummy_context

from nnunet_mt.trainers.nnUNetTrainerDeepMedic import nnUNetTrainerDeepMedic
from nnunet_mt.trainers.semi_supervised import SemiSupervisedMixin, full_resolution
from nnunet_mt.training.distributed import average_buffers
from nnunet_mt.training.mean_teacher import (MeanTeacherSchedule, apply_input_noise, draw_input_noise,
                                             ema_update, forward_unannotated_half, make_teacher,
                                             set_teacher_forward_mode, soft_dice_consistency)


class MeanTeacherMixin(SemiSupervisedMixin):
    """The adapted mean teacher on top of an nnU-Net trainer (put it first in the bases)."""

    noise_additive_std: float = 0.05
    noise_multiplicative_std: float = 0.01
    #: False: the Π model (no EMA teacher; the student's second noisy pass is the target)
    use_ema_teacher: bool = True
    history_step_keys = ("Ls", "Lc", "beta", "alpha")
    log_name = "mean_teacher"
    #: what nnU-Net logs as train_loss (explained in the log: it rises while beta ramps up)
    loss_composition = "Ls + beta * Lc"

    def _init_mean_teacher(self) -> None:
        self._init_semi_supervised()
        self.schedule = MeanTeacherSchedule(self.rampup_length)
        self.teacher = None

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
        """Teacher logits on its noisy copy of the unannotated patches (Eq. 1's f(X_u, eta', theta')); no
        gradient. The teacher sees the same composite batch as the student, [annotated clean, unannotated
        with eta'], so its BatchNorm normalises over the same 8 + 8 patches (``forward_unannotated_half``)."""
        with torch.no_grad():
            # Π model: the student's own second pass, detached
            network = set_teacher_forward_mode(self.teacher) if self.use_ema_teacher else self.network
            return forward_unannotated_half(network, x_annotated, x_teacher)

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
        beta, alpha = self.schedule.beta(step), self.schedule.alpha(step)

        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            out = self.network(torch.cat([x_l, x_s]))  # one batch of 16, as the paper's
            n = len(x_l)
            out_l = [o[:n] for o in out] if isinstance(out, (list, tuple)) else out[:n]
            ls = self.loss(out_l, y_l)  # Eq. 2, annotated patches, no noise
            target = full_resolution(self._consistency_target(x_l, x_t))
            # consistency on the full-resolution output (deep supervision's coarser heads are auxiliary)
            out_u = full_resolution(out)[n:]
            lc = soft_dice_consistency(torch.softmax(out_u.float(), 1), torch.softmax(target.float(), 1))
            loss = ls + beta * lc  # Eq. 3
        self._backward_and_step(loss)
        if self.use_ema_teacher:
            ema_update(self.teacher, self.plain_network(), alpha, buffers="ema")  # Eq. 4
            if self.is_ddp:
                average_buffers(self.teacher)  # one teacher on every rank
        self.global_step += 1
        return {"loss": loss.detach().cpu().numpy(), "Ls": ls.item(), "Lc": lc.item(), "beta": beta,
                "alpha": alpha if self.use_ema_teacher else float("nan"), "step": step}


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

"""What DeepMedic-EN and DeepMedic-UDA share: an adversary with its own optimizer, trained in
alternation with the segmenter on the same 8 + 8 batch as the mean teacher's.

Each optimizer step (:meth:`AdversarialMixin.train_step`):

1. segmenter turn: one forward of the 16 patches (annotated first); ``L = Ls + lambda(S) * L_adv``, where
   ``Ls`` is DeepMedic's cross-entropy on the annotated patches and ``L_adv`` the method's adversarial
   term, computed through the *frozen* adversary; the segmenter takes an nnU-Net step (RMSProp, as
   the supervised DeepMedic and the mean teacher);
2. adversary turn: one Adam step of the adversary on the same inputs, detached, classifying
   annotated (1) vs unannotated (0).

The segmenter (the student) is the model: ``network_weights``. The adversary and its optimizer live in
the checkpoint's ``semi_supervised`` state, so ``nnUNetv2_train --c`` resumes both.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import autocast, nn

from nnunetv2.utilities.helpers import dummy_context

from nnunet_mt.trainers.semi_supervised import SemiSupervisedMixin, full_resolution
from nnunet_mt.training.adversarial import adversary_step, domain_labels, frozen
from nnunet_mt.training.distributed import broadcast_state


class AdversarialMixin(SemiSupervisedMixin):
    """Alternating segmenter / adversary updates (put it first in the bases of a DeepMedic trainer)."""

    #: the adversary's Adam (SSL4MIS' ``train_adversarial_network_3D.py``: lr 1e-4, betas 0.9, 0.99)
    adversary_lr: float = 1e-4
    adversary_betas: tuple[float, float] = (0.9, 0.99)
    #: keyword arguments of the adversary's constructor
    adversary_kwargs: dict = {}
    history_step_keys = ("Ls", "Ladv", "lambda", "L_adversary", "adversary_accuracy")
    log_name = "adversarial"
    #: what nnU-Net logs as train_loss (explained in the log: it moves while lambda ramps up)
    loss_composition = "Ls + lambda * Ladv"

    def _init_adversarial(self) -> None:
        self._init_semi_supervised()
        self.adversary = None
        self.adversary_optimizer = None

    # ---- what a method defines ----------------------------------------------------------------
    def build_adversary(self) -> nn.Module:
        raise NotImplementedError

    def adversarial_weight(self, step: int) -> float:
        """lambda(S), the weight of the adversarial term in the segmenter's loss."""
        raise NotImplementedError

    def _forward_context(self):
        """Entered around the segmenter's forward (UDA records activations there)."""
        return nullcontext()

    def adversary_inputs(self, x: torch.Tensor, logits: torch.Tensor, context) -> tuple[torch.Tensor, ...]:
        """The adversary's inputs for the 16 patches ``x`` and the segmenter's ``logits`` on them."""
        raise NotImplementedError

    def segmenter_adversarial_loss(self, adversary_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ---- set-up and state -----------------------------------------------------------------------
    def initialize(self):
        super().initialize()
        self._set_up_adversary()

    def _set_up_adversary(self) -> None:
        """The adversary and its Adam; under DDP every rank starts from rank 0's adversary (and
        :func:`adversary_step` averages its gradients), so one adversary is trained and saved."""
        self.adversary = self.build_adversary().to(self.device)
        if self.is_ddp:
            broadcast_state(self.adversary)
        self.adversary_optimizer = torch.optim.Adam(self.adversary.parameters(), lr=self.adversary_lr,
                                                    betas=self.adversary_betas)
        self.print_to_log_file(f"adversary: {self.adversary.__class__.__name__}, "
                               f"{sum(p.numel() for p in self.adversary.parameters())} parameters")

    def _extra_checkpoint_state(self) -> dict:
        return {"adversary": self.adversary.state_dict(), "adversary_optimizer": self.adversary_optimizer.state_dict()}

    def _load_extra_checkpoint_state(self, state: dict, checkpoint: dict) -> None:
        self.adversary.load_state_dict(state["adversary"])
        self.adversary_optimizer.load_state_dict(state["adversary_optimizer"])

    # ---- one optimizer step ---------------------------------------------------------------------
    def train_step(self, batch: dict) -> dict:
        x_l, y_l, x_u = self._next_batches(batch)
        x = torch.cat([x_l, x_u.to(self.device, non_blocking=True)])
        n = len(x_l)
        labels = domain_labels(n, len(x) - n, device=self.device)
        step = self.global_step
        weight = self.adversarial_weight(step)

        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            with self._forward_context() as context:
                out = self.network(x)  # one batch of 16, as the mean teacher's
            out_l = [o[:n] for o in out] if isinstance(out, (list, tuple)) else out[:n]
            ls = self.loss(out_l, y_l)
            inputs = self.adversary_inputs(x, full_resolution(out), context)
            with frozen(self.adversary):  # the segmenter's turn: gradients reach the segmenter only
                ladv = self.segmenter_adversarial_loss(self.adversary(*inputs), labels)
            loss = ls + weight * ladv
        self._backward_and_step(loss)
        l_adversary, accuracy = adversary_step(self.adversary, self.adversary_optimizer, inputs, labels)
        self.global_step += 1
        return {"loss": loss.detach().cpu().numpy(), "Ls": ls.item(), "Ladv": ladv.item(), "lambda": weight,
                "L_adversary": l_adversary, "adversary_accuracy": accuracy, "step": step}

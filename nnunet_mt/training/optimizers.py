"""DeepMedic's RMSProp, as an optimizer that a trainer can select (``optimizer_name = "deepmedic-rmsprop"``).

The paper trains "following DeepMedic", whose RMSProp (``deepmedic/neuralnet/optimizers.py``,
``RmsPropOptimizer``, with DeepMedic's defaults: momentum 0.6, normalised, Nesterov; rho 0.9; eps 1e-4)
differs from ``torch.optim.RMSprop`` with the same numbers in two places, per parameter ``p`` with
gradient ``g``::

    a = rho a + (1 - rho) g^2
    d = (1 - m) lr g / sqrt(a + eps)          # eps inside the root; (1 - m): normalised momentum
    v = m v - d
    p = p + m v - d                           # Nesterov (p = p + v for classic momentum)

``torch.optim.RMSprop`` divides by ``sqrt(a) + eps`` and does not scale by ``1 - m``. With gradients of
order 1e-4 (this model's scale), ``sqrt(a + 1e-4)`` is about 1e-2 while ``sqrt(a) + 1e-4`` is about 2e-4: the
torch update is tens of times larger for the same learning rate.
"""
from __future__ import annotations

from typing import Iterable

import torch


class DeepMedicRMSprop(torch.optim.Optimizer):
    """DeepMedic's RMSProp with (normalised, Nesterov) momentum; see the module docstring for the update.

    Args:
        params: parameters (or parameter groups) to optimise.
        lr: learning rate.
        rho: decay of the running mean of squared gradients (DeepMedic's ``rho``; torch's ``alpha``).
        eps: added to that mean *inside* the square root.
        momentum: ``m``; 0 turns momentum off.
        normalized_momentum: scale the gradient step by ``1 - m`` (DeepMedic's default).
        nesterov: Nesterov's update ``m v - d`` (DeepMedic's default) instead of ``v``.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, rho: float = 0.9, eps: float = 1e-4,
                 momentum: float = 0.6, normalized_momentum: bool = True, nesterov: bool = True) -> None:
        for name, value, low, high in (("lr", lr, 0.0, float("inf")), ("rho", rho, 0.0, 1.0),
                                       ("eps", eps, 0.0, float("inf")), ("momentum", momentum, 0.0, 1.0)):
            if not low <= value < high or (name == "eps" and value == 0):
                raise ValueError(f"DeepMedicRMSprop: {name}={value!r} is outside [{low}, {high})"
                                 + (" and must be > 0" if name == "eps" else ""))
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, momentum=momentum,
                                      normalized_momentum=normalized_momentum, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            m = group["momentum"]
            scale = group["lr"] * ((1.0 - m) if group["normalized_momentum"] else 1.0)
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.zeros_like(p)
                    state["velocity"] = torch.zeros_like(p)
                a, v = state["square_avg"], state["velocity"]
                a.mul_(group["rho"]).addcmul_(g, g, value=1.0 - group["rho"])
                d = g * scale / (a + group["eps"]).sqrt()
                v.mul_(m).sub_(d)
                p.add_(v * m - d if group["nesterov"] else v)
        return loss

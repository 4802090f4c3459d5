import math

import pytest
import torch

from nnunet_mt.training.optimizers import DeepMedicRMSprop


def _step(optimizer, p, grad):
    p.grad = torch.tensor(grad, dtype=p.dtype)
    optimizer.step()


def test_two_steps_by_hand():
    # lr 0.1, rho 0.9, eps 1e-4, m 0.6, normalised Nesterov, gradient 0.01 then -0.02
    p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = DeepMedicRMSprop([p], lr=0.1)
    _step(opt, p, [0.01])
    a1 = 0.1 * 0.01 ** 2                               # 1e-5
    d1 = 0.4 * 0.1 * 0.01 / math.sqrt(a1 + 1e-4)       # (1 - m) lr g / sqrt(a + eps)
    v1 = -d1
    p1 = 1.0 + 0.6 * v1 - d1
    assert p.item() == pytest.approx(p1, rel=1e-12)
    _step(opt, p, [-0.02])
    a2 = 0.9 * a1 + 0.1 * 0.02 ** 2
    d2 = 0.4 * 0.1 * -0.02 / math.sqrt(a2 + 1e-4)
    v2 = 0.6 * v1 - d2
    assert p.item() == pytest.approx(p1 + 0.6 * v2 - d2, rel=1e-12)
    assert opt.state[p]["velocity"].item() == pytest.approx(v2, rel=1e-12)


def test_classic_unnormalised_momentum_by_hand():
    p = torch.nn.Parameter(torch.tensor([0.0], dtype=torch.float64))
    opt = DeepMedicRMSprop([p], lr=0.1, normalized_momentum=False, nesterov=False)
    _step(opt, p, [0.01])
    assert p.item() == pytest.approx(-0.1 * 0.01 / math.sqrt(1e-5 + 1e-4), rel=1e-12)


def test_steps_are_far_smaller_than_torch_rmsprop_at_small_gradients():
    # the reason the choice matters: eps inside the root damps steps when |g| << sqrt(eps)
    ours, theirs = (torch.nn.Parameter(torch.zeros(1, dtype=torch.float64)) for _ in range(2))
    a = DeepMedicRMSprop([ours], lr=1e-4)
    b = torch.optim.RMSprop([theirs], lr=1e-4, alpha=0.9, eps=1e-4, momentum=0.6)
    for opt, p in ((a, ours), (b, theirs)):
        _step(opt, p, [2.5e-4])
    # torch: lr g / (sqrt(0.1) g + eps) = 1e-4 * 2.5e-4 / 1.79e-4; ours: 1.6 * 0.4 * 1e-4 * 2.5e-4 / 1.0003e-2
    assert abs(theirs.item()) / abs(ours.item()) == pytest.approx(
        (2.5e-4 / (math.sqrt(0.1) * 2.5e-4 + 1e-4)) / (1.6 * 0.4 * 2.5e-4 / math.sqrt(0.1 * 2.5e-4 ** 2 + 1e-4)),
        rel=1e-9)
    assert abs(theirs.item()) > 50 * abs(ours.item())


def test_parameters_without_gradient_are_left_alone():
    p, q = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = DeepMedicRMSprop([p, q], lr=0.1)
    p.grad = torch.ones(2)
    opt.step()
    assert torch.equal(q, torch.ones(2)) and not torch.equal(p, torch.ones(2))
    assert q not in opt.state


@pytest.mark.parametrize("kwargs, named", [({"lr": -1.0}, "lr=-1.0"), ({"rho": 1.0}, "rho=1.0"),
                                           ({"eps": 0.0}, "eps=0.0"), ({"momentum": 1.5}, "momentum=1.5")])
def test_bad_hyperparameters_are_named(kwargs, named):
    with pytest.raises(ValueError, match=named):
        DeepMedicRMSprop([torch.nn.Parameter(torch.zeros(1))], **kwargs)

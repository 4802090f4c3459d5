"""The mean teacher's and the Π model's own ``train_step`` on fixed patches, recorded with forward hooks:
which network sees which input, and what the consistency compares (issue 11, "tests that cannot fail")."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bare_trainer import bare_trainer, batches
from nnunet_mt.training.adversarial import adversary_step, domain_labels
from nnunet_mt.training.mean_teacher import apply_input_noise, draw_input_noise, soft_dice_consistency


class Recorder:
    """Inputs, outputs, grad mode and the train/eval mode of dropout and BatchNorm layers of every forward
    of a module (hooks: the trainer's own calls are unchanged)."""

    def __init__(self, module: nn.Module) -> None:
        self.calls = []
        self.module = module
        module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        modes = [m.training for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
        bn = [m.training for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.calls.append({"input": inputs[0].detach().clone(), "output": output, "grad": torch.is_grad_enabled(),
                           "dropout_training": modes, "bn_training": bn})


def _noise_the_trainer_draws(t, x_u):
    """Replays the trainer's noise generator: (student's copy, teacher's copy) of the unannotated patches."""
    g = torch.Generator().set_state(t.noise_generator.get_state())
    eta = draw_input_noise(x_u.shape, t.noise_additive_std, t.noise_multiplicative_std, generator=g)
    eta_t = draw_input_noise(x_u.shape, t.noise_additive_std, t.noise_multiplicative_std, generator=g)
    return apply_input_noise(x_u, *eta), apply_input_noise(x_u, *eta_t)


def _one_step(name: str):
    t = bare_trainer(name)
    if t.use_ema_teacher:
        t._on_fresh_start()
    annotated, t.dataloader_unlabeled = batches(7, 1)
    x_l, x_u = annotated[0]["data"], next(batches(7, 1)[1])["data"]  # what the trainer's loader yields
    student = Recorder(t.network)
    teacher = Recorder(t.teacher) if t.use_ema_teacher else None
    x_s, x_t = _noise_the_trainer_draws(t, x_u)
    before = {k: v.clone() for k, v in (t.teacher.state_dict() if t.use_ema_teacher else {}).items()}
    out = type(t).train_step(t, annotated[0])
    return t, out, student, teacher, x_l, x_u, x_s, x_t, before


def test_student_and_teacher_see_the_same_patches_with_independent_noise_and_a_clean_annotated_half():
    t, out, student, teacher, x_l, x_u, x_s, x_t, _ = _one_step("nnUNetTrainerMeanTeacher_tiny")
    n = len(x_l)
    assert len(student.calls) == 1 and len(teacher.calls) == 1
    s_in, t_in = student.calls[0]["input"], teacher.calls[0]["input"]
    for x in (s_in, t_in):
        assert torch.equal(x[:n], x_l)  # annotated half: no Eq. 5 noise
    torch.testing.assert_close(s_in[n:], x_s, rtol=0, atol=0)  # (x_u + eta_s) * eta_m
    torch.testing.assert_close(t_in[n:], x_t, rtol=0, atol=0)  # other draws, eta'
    noise_s, noise_t = s_in[n:] - x_u, t_in[n:] - x_u
    assert noise_s.abs().mean() > 0.02 and noise_t.abs().mean() > 0.02
    assert abs(torch.corrcoef(torch.stack([noise_s.flatten(), noise_t.flatten()]))[0, 1]) < 0.05  # independent
    # Lc compares the student's unannotated half with the teacher's, and L = Ls + beta Lc
    s_u = student.calls[0]["output"][n:].detach()
    t_u = teacher.calls[0]["output"][n:]
    lc = soft_dice_consistency(torch.softmax(s_u, 1), torch.softmax(t_u, 1)).item()
    assert out["Lc"] == pytest.approx(lc, rel=1e-6)
    assert float(out["loss"]) == pytest.approx(out["Ls"] + out["beta"] * lc, rel=1e-6)
    assert not teacher.calls[0]["grad"]


def test_the_teachers_forward_uses_batch_statistics_no_dropout_and_its_running_statistics_are_an_ema():
    t, out, student, teacher, *_, before = _one_step("nnUNetTrainerMeanTeacher_tiny")
    bns = [m for m in t.teacher.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(m.momentum == 0.0 for m in bns)  # its own passes leave its statistics alone
    assert not any(p.requires_grad for p in t.teacher.parameters())
    call = teacher.calls[0]
    assert call["bn_training"] and all(call["bn_training"])  # batch statistics, as the student
    assert call["dropout_training"] and not any(call["dropout_training"])  # no dropout
    assert any(student.calls[0]["dropout_training"])  # the student keeps DeepMedic's dropout
    # Eq. 4 for the statistics too: alpha * teacher's + (1 - alpha) * student's after its step
    alpha = out["alpha"]
    student_state = t.network.state_dict()
    for k, v in t.teacher.state_dict().items():
        if k.endswith("running_mean") or k.endswith("running_var"):
            torch.testing.assert_close(v, alpha * before[k] + (1 - alpha) * student_state[k])


def test_pi_model_target_is_the_students_own_second_noisy_pass():
    t, out, student, teacher, x_l, x_u, x_s, x_t, _ = _one_step("nnUNetTrainerPiModel_tiny")
    n = len(x_l)
    assert t.teacher is None and teacher is None
    assert len(student.calls) == 2  # the student itself, twice
    first, second = student.calls
    assert first["grad"] and not second["grad"]  # the target is detached
    assert torch.equal(first["input"][:n], x_l) and torch.equal(second["input"][:n], x_l)
    torch.testing.assert_close(first["input"][n:], x_s, rtol=0, atol=0)
    torch.testing.assert_close(second["input"][n:], x_t, rtol=0, atol=0)  # its own other noise
    lc = soft_dice_consistency(torch.softmax(first["output"][n:].detach(), 1),
                               torch.softmax(second["output"][n:], 1)).item()
    assert out["Lc"] == pytest.approx(lc, rel=1e-6)


@pytest.mark.parametrize("name", ["nnUNetTrainerDeepMedicEN_tiny", "nnUNetTrainerDeepMedicUDA_tiny"])
def test_the_trainers_adversary_learns_a_fixed_batch(name):
    """The trainer's own adversary and Adam (lr 1e-4, betas 0.9/0.99): its loss falls on fixed inputs."""
    t = bare_trainer(name)
    torch.manual_seed(3)
    t._set_up_adversary()
    assert t.adversary_optimizer.defaults["lr"] == 1e-4 and t.adversary_optimizer.defaults["betas"] == (0.9, 0.99)
    annotated, unannotated = batches(9, 1)
    x = torch.cat([annotated[0]["data"], next(unannotated)["data"]])
    x[2:] += 0.5  # the unannotated scans look different
    labels = domain_labels(2, 2)
    with torch.no_grad(), t._forward_context() as context:
        logits = t.network(x)
    inputs = t.adversary_inputs(x, logits, context)
    losses = [adversary_step(t.adversary, t.adversary_optimizer, inputs, labels)[0] for _ in range(8)]
    assert losses[-1] < losses[0]

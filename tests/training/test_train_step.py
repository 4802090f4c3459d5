"""The mean teacher's and the Π model's own ``train_step`` on fixed patches, recorded with forward hooks:
which network sees which input, and what the consistency compares, so that a wrong input or target cannot pass unnoticed."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bare_trainer import bare_trainer, batches
from nnunet_mt.training.adversarial import adversary_step, domain_labels
from nnunet_mt.training.mean_teacher import (apply_input_noise, draw_input_noise, kl_consistency,
                                             mse_consistency, released_dice_consistency, similarity_preserving_loss,
                                             soft_dice_consistency, squared_dice_consistency)


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


@pytest.mark.parametrize("name, dropout", [("nnUNetTrainerMeanTeacher_tiny", True),
                                           ("nnUNetTrainerMeanTeacherDeterministicTeacher_tiny", False)])
def test_the_teachers_forward_uses_batch_statistics_its_dropout_and_its_running_statistics_are_an_ema(name, dropout):
    t, out, student, teacher, *_, before = _one_step(name)
    bns = [m for m in t.teacher.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(m.momentum == 0.0 for m in bns)  # its own passes leave its statistics alone
    assert not any(p.requires_grad for p in t.teacher.parameters())
    call = teacher.calls[0]
    assert call["bn_training"] and all(call["bn_training"])  # batch statistics, as the student
    assert call["dropout_training"] and all(m is dropout for m in call["dropout_training"])  # as the references
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


# ---- the consistency variants (trainers/mean_teacher_variants.py) ------------------------------------
#: variant -> (its loss on (student, teacher) probabilities, weight w, all 16 samples?, constant beta?)
VARIANT_LOSSES = {
    "nnUNetTrainerMeanTeacherReleased_tiny": (lambda s, t: released_dice_consistency(s, t, eps=1e-5), 1, True, False),
    "nnUNetTrainerMeanTeacherReleasedBeta1_tiny": (released_dice_consistency, 1, True, True),
    "nnUNetTrainerMeanTeacherSquared_tiny": (squared_dice_consistency, 1, False, False),
    "nnUNetTrainerMeanTeacherMSE_tiny": (mse_consistency, 100, False, False),
    "nnUNetTrainerMeanTeacherKL_tiny": (kl_consistency, 1, False, False),
    "nnUNetTrainerMeanTeacherKLConfident_tiny": (lambda s, t: kl_consistency(s, t, confidence=0.95), 1, False, False),
    "nnUNetTrainerMeanTeacherNoConsistency_tiny": (soft_dice_consistency, 0, False, False),
}


@pytest.mark.parametrize("name", sorted(VARIANT_LOSSES))
def test_each_variant_compares_what_it_says_with_its_own_loss_and_weight(name):
    loss_fn, weight, all_samples, constant_beta = VARIANT_LOSSES[name]
    t, out, student, teacher, x_l, *_ = _one_step(name)
    n = len(x_l)
    s_out, t_out = student.calls[0]["output"].detach(), teacher.calls[0]["output"]
    assert len(t_out) == 2 * n  # the teacher always sees the composite batch (BatchNorm)
    if not all_samples:
        s_out, t_out = s_out[n:], t_out[n:]
    lc = loss_fn(torch.softmax(s_out, 1), torch.softmax(t_out, 1)).item()
    assert out["Lc"] == pytest.approx(lc, rel=1e-5, abs=1e-7)
    beta = 1.0 if constant_beta else math.exp(-5)  # step 0 of the ramp-up
    assert out["beta"] == pytest.approx(beta)
    assert float(out["loss"]) == pytest.approx(out["Ls"] + beta * weight * lc, rel=1e-5)


def test_released_gram_adds_the_similarity_of_the_first_fc_layer():
    t = bare_trainer("nnUNetTrainerMeanTeacherReleasedGram_tiny")
    t._on_fresh_start()
    fc_s, fc_t = Recorder(t.network.fc[0]), Recorder(t.teacher.fc[0])
    annotated, t.dataloader_unlabeled = batches(7, 1)
    out = type(t).train_step(t, annotated[0])
    assert "Lsim" in t.history and t.similarity_scale == 1e4
    lsim = similarity_preserving_loss(fc_s.calls[0]["output"].detach(), fc_t.calls[0]["output"]).item()
    assert out["Lsim"] == pytest.approx(lsim, rel=1e-5) and lsim > 0
    assert float(out["loss"]) == pytest.approx(out["Ls"] + out["beta"] * out["Lc"] + 1e4 * lsim, rel=1e-5)


@pytest.mark.parametrize("name, independent", [("nnUNetTrainerMeanTeacherNoConsistency_tiny", False),
                                               ("nnUNetTrainerMeanTeacherNoConsistencyAnnotatedBN_tiny", True)])
def test_annotated_bn_control_keeps_the_unannotated_patches_out_of_the_normalisation(name, independent):
    """Ls of one step with two different unannotated batches (same weights, annotated batch, dropout): equal
    only when BatchNorm takes its statistics from the annotated half."""
    losses, running = [], []
    for seed in (7, 8):
        t = bare_trainer(name)
        t._on_fresh_start()
        annotated, _ = batches(7, 1)
        t.dataloader_unlabeled = batches(seed, 1)[1]
        torch.manual_seed(5)
        out = type(t).train_step(t, annotated[0])
        losses.append(out["Ls"])
        running.append(next(m for m in t.network.modules() if isinstance(m, nn.BatchNorm3d)).running_mean.clone())
        assert float(out["loss"]) == pytest.approx(out["Ls"], rel=1e-6)  # w = 0: no consistency term
    assert (losses[0] == pytest.approx(losses[1], rel=1e-6)) is independent
    assert torch.allclose(running[0], running[1]) is independent


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

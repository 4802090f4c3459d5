"""End to end on the tiny dataset: supervised DeepMedic -> unlabeled preprocessing -> mean teacher with
-pretrained_weights -> nnUNetv2_predict; resume; bad input."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from matplotlib.image import imread
from torch import nn

from bare_trainer import bare_trainer, batches
from conftest import TINY_ID, TINY_NAME, assert_train_losses_compose, direct_probabilities
from nnunet_mt.architectures.deepmedic import DeepMedic
from nnunet_mt.trainers.nnUNetTrainerMeanTeacher import MeanTeacherMixin
from nnunet_mt.training.adversarial import adversary_step, domain_labels
from nnunet_mt.training.mean_teacher import (apply_input_noise, draw_input_noise, forward_unannotated_half,
                                             kl_consistency, make_teacher, mse_consistency, released_dice_consistency,
                                             similarity_preserving_loss, soft_dice_consistency,
                                             squared_dice_consistency, uses_batch_statistics)

MT = "nnUNetTrainerMeanTeacher_tiny"


@pytest.fixture(scope="module")
def pretrained(trained_deepmedic) -> Path:
    return trained_deepmedic / "checkpoint_final.pth"


def test_without_pretrained_weights_the_two_step_workflow_is_explained(tiny_nnunet):
    proc = tiny_nnunet.run(
        "nnUNetv2_train", str(TINY_ID), "3d_fullres", "0", "-tr", MT, "-device", "cpu", check=False,
        extra_env={"nnUNet_n_proc_DA": "0"})
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "-pretrained_weights" in text and "checkpoint_final.pth" in text
    # the supervised variant of the same width, not the full-width nnUNetTrainerDeepMedic
    assert f"nnUNetv2_train {TINY_NAME} 3d_fullres 0 -tr nnUNetTrainerDeepMedic_tiny\n" in text
    assert "/nnUNetTrainerDeepMedic_tiny__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth" in text


def test_missing_pretrained_checkpoint_is_named(tiny_nnunet, tmp_path):
    missing = tmp_path / "nope" / "checkpoint_final.pth"
    proc = tiny_nnunet.run("nnUNetv2_train", str(TINY_ID), "3d_fullres", "0", "-tr", MT, "-device", "cpu",
                           "-pretrained_weights", str(missing), check=False, extra_env={"nnUNet_n_proc_DA": "0"})
    assert proc.returncode != 0 and str(missing) in proc.stdout + proc.stderr


def test_checkpoint_from_another_architecture_is_refused(tiny_nnunet, tmp_path):
    other = tmp_path / "unet.pth"
    torch.save({"network_weights": {"encoder.stages.0.0.convs.0.conv.weight": torch.zeros(32, 2, 1, 3, 3)}}, other)
    proc = tiny_nnunet.run("nnUNetv2_train", str(TINY_ID), "3d_fullres", "0", "-tr", MT, "-device", "cpu",
                           "-pretrained_weights", str(other), check=False, extra_env={"nnUNet_n_proc_DA": "0"})
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"-pretrained_weights {other} does not fit {MT}'s network" in text
    assert "starts from a checkpoint_final.pth of nnUNetTrainerDeepMedic_tiny" in text


def test_missing_unannotated_scans_tell_how_to_preprocess_them(tiny_unlabeled):
    assert "No preprocessed unannotated scans" in tiny_unlabeled
    assert "nnunet_mt_preprocess_unlabeled -d Dataset901_Tiny -c 3d_fullres" in tiny_unlabeled
    # the last thing printed: no augmentation worker was started to fail after it
    assert tiny_unlabeled.rstrip().splitlines()[-1].startswith("RuntimeError: No preprocessed unannotated scans")


@pytest.fixture(scope="module")
def trained_mean_teacher(tiny_nnunet, tiny_unlabeled, pretrained) -> Path:
    tiny_nnunet.train(MT, "-pretrained_weights", str(pretrained), final_validation=True)
    return tiny_nnunet.model_folder(MT) / "fold_0"


def test_schedule_and_history_follow_the_paper(trained_mean_teacher):
    log = json.loads((trained_mean_teacher / "mean_teacher_log.json").read_text())
    assert log["step"] == [0, 1, 2, 3]
    # ramp-up L = 2 in the tiny variant: beta = exp(-5 (1 - S/2)^2) -> exp(-5), exp(-1.25), 1, 1
    assert log["beta"] == pytest.approx([math.exp(-5), math.exp(-1.25), 1.0, 1.0])
    assert log["alpha"] == pytest.approx([0.99, 0.99, 0.99, 0.999])  # 0.99 while S <= L
    assert log["dice_step"] == [2, 4] and len(log["dice_teacher"]) == 2
    assert "foreground_mean" in json.loads((trained_mean_teacher / "validation" / "summary.json").read_text())
    assert_train_losses_compose(trained_mean_teacher, log, ("Ls", 1), ("Lc", "beta"))  # L = Ls + beta Lc
    # the plot of this history (its data: tests/training/test_plots.py), 9 x 10 inches at 80 dpi
    assert imread(trained_mean_teacher / "progress_mean_teacher.png").shape[:2] == (800, 720)
    cached = list((trained_mean_teacher.parents[3] / "preprocessed" / TINY_NAME /
                   "nnUNetPlans_3d_fullres_unlabeled").glob("pseudo_lesions_*.pkl"))
    assert len(cached) == 1
    train_log = "".join(p.read_text() for p in sorted(trained_mean_teacher.glob("training_log_*.txt")))
    assert "epoch 2/2, step 4/4 (100 %)" in train_log
    assert "train_loss (loss_tr in progress.png) is L = Ls + beta * Lc; it rises while beta ramps up over the " \
           "first 2 steps" in train_log and "progress_mean_teacher.png" in train_log


def test_checkpoint_holds_teacher_as_model_and_student_for_resuming(trained_mean_teacher, pretrained):
    ckpt = torch.load(trained_mean_teacher / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    start = torch.load(pretrained, map_location="cpu", weights_only=False)["network_weights"]
    teacher, student = ckpt["network_weights"], ckpt["student_weights"]
    assert ckpt["semi_supervised"]["global_step"] == 4
    key = "classifier.conv.weight"
    assert not torch.equal(teacher[key], student[key])
    # after 4 EMA steps with alpha 0.99, 0.99, 0.99, 0.999 the teacher stays close to where it started
    drift_teacher = (teacher[key] - start[key]).abs().max()
    drift_student = (student[key] - start[key]).abs().max()
    assert 0 < drift_teacher < drift_student


def test_predict_uses_the_teacher(tiny_nnunet, trained_mean_teacher, tmp_path):
    images = tiny_nnunet.raw / TINY_NAME / "imagesTs"
    out = tmp_path / "pred"
    tiny_nnunet.run("nnUNetv2_predict", "-i", str(images), "-o", str(out), "-d", str(TINY_ID), "-c", "3d_fullres",
                    "-f", "0", "-tr", MT, "-device", "cpu", "--save_probabilities", "-npp", "1", "-nps", "1")
    files = [str(images / f"ts_000_{c:04d}.nii.gz") for c in range(2)]
    ckpt = trained_mean_teacher / "checkpoint_final.pth"
    probs = np.load(out / "ts_000.npz")["probabilities"]
    teacher = direct_probabilities(trained_mean_teacher.parent, ckpt, files)
    student = direct_probabilities(trained_mean_teacher.parent, ckpt, files, weights_key="student_weights")
    np.testing.assert_allclose(probs, teacher, atol=3e-3)
    assert np.abs(probs - student).max() > 10 * np.abs(probs - teacher).max()


def test_resume_continues_as_if_uninterrupted(tiny_nnunet, trained_mean_teacher, pretrained, tmp_path):
    script = Path(__file__).with_name("resume_run.py")
    results = {}
    for name, args in (("straight", ["4"]), ("resumed", ["4", "2"])):
        folder = tmp_path / name
        folder.mkdir()
        proc = tiny_nnunet.run(sys.executable, str(script), str(pretrained), str(folder / "out.pt"), *args,
                               extra_env={"nnUNet_n_proc_DA": "0", "nnUNet_results": str(folder)})
        results[name] = torch.load(folder / "out.pt", weights_only=False)
    assert "resumed at step 4" in proc.stdout
    a, b = results["straight"], results["resumed"]
    assert a["step"] == b["step"] == 8
    for k in ("step", "beta", "alpha", "Ls", "Lc", "dice_teacher"):
        assert a["history"][k] == pytest.approx(b["history"][k], abs=1e-6), k
    for k in a["teacher"]:
        torch.testing.assert_close(a["teacher"][k], b["teacher"][k], atol=1e-6, rtol=0)


# The mean teacher's and the Π model's own ``train_step`` on fixed patches, recorded with forward hooks:
# which network sees which input, and what the consistency compares, so that a wrong input or target cannot pass unnoticed.


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


@pytest.mark.parametrize("name, rampup, alpha_after", [("nnUNetTrainerMeanTeacherReleased_tiny", 2, 0.999),
                                                      ("nnUNetTrainerMeanTeacherReleasedShortSchedule_tiny", 100, 0.99)])
def test_the_short_schedule_ramps_over_100_steps_and_keeps_the_ramp_ups_ema_decay_after_it(name, rampup, alpha_after):
    t = bare_trainer(name)
    t._on_fresh_start()
    # beta = exp(-5 (1 - S/L)^2) (Eq. 3): exp(-1.25) halfway through the ramp-up
    assert t.schedule.beta(rampup // 2) == pytest.approx(math.exp(-1.25)) and t.schedule.beta(rampup) == 1.0
    annotated, t.dataloader_unlabeled = batches(7, 1)
    t.global_step = rampup + 1  # the first step after the ramp-up
    before = [p.clone() for p in t.teacher.parameters()]
    out = type(t).train_step(t, annotated[0])
    assert (out["step"], out["beta"], out["alpha"]) == (rampup + 1, 1.0, alpha_after)
    for old, new, student in zip(before, t.teacher.parameters(), t.network.parameters()):  # Eq. 4
        torch.testing.assert_close(new, alpha_after * old + (1 - alpha_after) * student.detach())


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


# The teacher's forward sees the student's composite batch: at step 0, with identical
# weights and identical noise, teacher and student agree on the unannotated half.


N = 3  # patches per half



def _fake(teacher_dropout: bool = False, **attrs):
    """The state ``_consistency_target`` reads: the paper's consistency on the unannotated half, plain BatchNorm;
    the teacher's dropout off unless asked for, so that passes can be compared exactly."""
    from contextlib import nullcontext

    return SimpleNamespace(consistency_on_all_samples=False, _normalisation=lambda network, n: nullcontext(),
                           teacher_dropout=teacher_dropout, **attrs)


def _student() -> DeepMedic:
    torch.manual_seed(0)
    student = DeepMedic(2, 2, filters=(8,) * 8, fc_filters=(16, 16))
    student.train()
    # the student's dropout is the only randomness left in its forward; switched off so the two passes
    # can be compared exactly (and the teacher's, in _fake)
    for m in student.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    return student


def _batches(student: DeepMedic):
    size = student.input_size((3, 9, 9))
    g = torch.Generator().manual_seed(1)
    x_l = torch.randn((N, 2, *size), generator=g) + 1.0  # annotated patches: other intensity statistics
    x_u = torch.randn((N, 2, *size), generator=g)
    x_noisy = apply_input_noise(x_u, *draw_input_noise(x_u.shape, generator=g))  # eta' = eta
    return x_l, x_noisy


def test_teacher_and_student_agree_at_step_0():
    student = _student()
    teacher = make_teacher(student)
    x_l, x_noisy = _batches(student)
    with torch.no_grad():
        student_u = student(torch.cat([x_l, x_noisy]))[N:]  # the student's forward in train_step
        trainer = _fake(teacher=teacher, use_ema_teacher=True, network=student)
        teacher_u = MeanTeacherMixin._consistency_target(trainer, x_l, x_noisy)
        teacher_alone = teacher(x_noisy)  # the former teacher forward: BatchNorm over the unannotated half only
    assert teacher_u.shape == student_u.shape == (N, 2, 3, 9, 9)
    torch.testing.assert_close(teacher_u, student_u, atol=1e-5, rtol=1e-5)
    assert (teacher_alone - student_u).abs().max() > 1e-2  # what the composite batch removes
    # hence no systematic term in Lc: the teacher's target is the student's own output
    s, t = torch.softmax(student_u, 1), torch.softmax(teacher_u, 1)
    torch.testing.assert_close(soft_dice_consistency(s, t), soft_dice_consistency(s, s), atol=1e-6, rtol=0)
    assert soft_dice_consistency(s, torch.softmax(teacher_alone, 1)) > soft_dice_consistency(s, s) + 1e-4


@pytest.mark.parametrize("dropout", [True, False])
def test_teacher_forward_leaves_running_statistics_and_keeps_dropout_unless_switched_off(dropout):
    """momentum 0: the teacher's running statistics come from the EMA only (ema_update). Its dropout is on by
    default, as in both references: two passes on the same batch then differ; off, they are equal."""
    student = DeepMedic(2, 2, filters=(8,) * 8, fc_filters=(16, 16))
    teacher = make_teacher(student)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x_l, x_noisy = _batches(student)
    trainer = _fake(teacher=teacher, use_ema_teacher=True, network=student, teacher_dropout=dropout)
    with torch.no_grad():
        a = MeanTeacherMixin._consistency_target(trainer, x_l, x_noisy)
        b = MeanTeacherMixin._consistency_target(trainer, x_l, x_noisy)
    assert torch.equal(a, b) is not dropout
    drop = [m.training for m in teacher.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    assert drop and all(m is dropout for m in drop)
    for k, v in teacher.state_dict().items():
        if v.is_floating_point():  # weights and running statistics (num_batches_tracked counts, unused)
            assert torch.equal(v, before[k]), k


def test_pi_model_second_pass_uses_the_composite_batch_too():
    student = _student()
    x_l, x_noisy = _batches(student)
    with torch.no_grad():
        first = student(torch.cat([x_l, x_noisy]))[N:]
        second = MeanTeacherMixin._consistency_target(
            _fake(teacher=None, use_ema_teacher=False, network=student), x_l, x_noisy)
    torch.testing.assert_close(second, first, atol=1e-5, rtol=1e-5)


class _DeepSupervised(nn.Module):
    """Two outputs, finest first, as nnU-Net's U-Net with deep supervision."""

    def __init__(self, norm) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 4, 3, padding=1)
        self.norm = norm
        self.head = nn.Conv3d(4, 2, 1)

    def forward(self, x):
        y = self.head(torch.relu(self.norm(self.conv(x))))
        return [y, y[..., ::2, ::2, ::2]]


def test_deep_supervision_outputs_are_all_cut_to_the_unannotated_half():
    torch.manual_seed(0)
    net = _DeepSupervised(nn.BatchNorm3d(4)).train()
    x_l, x_u = torch.randn(2, 2, 6, 6, 6) + 2, torch.randn(3, 2, 6, 6, 6)
    with torch.no_grad():
        whole = net(torch.cat([x_l, x_u]))
        half = forward_unannotated_half(net, x_l, x_u)
        alone = net(x_u)
    assert uses_batch_statistics(net)
    for h, w in zip(half, whole):
        torch.testing.assert_close(h, w[2:])
    assert (alone[0] - half[0]).abs().max() > 1e-2


def test_instance_norm_needs_no_composite_batch():
    """nnU-Net's U-Net normalises per sample: the unannotated half alone gives the same output."""
    torch.manual_seed(0)
    net = _DeepSupervised(nn.InstanceNorm3d(4, affine=True)).train()
    x_l, x_u = torch.randn(2, 2, 6, 6, 6) + 2, torch.randn(3, 2, 6, 6, 6)
    assert not uses_batch_statistics(net)
    with torch.no_grad():
        whole = net(torch.cat([x_l, x_u]))
        half = forward_unannotated_half(net, x_l, x_u)
    for h, w in zip(half, whole):
        torch.testing.assert_close(h, w[2:], atol=1e-5, rtol=1e-5)
    assert not uses_batch_statistics(_DeepSupervised(nn.BatchNorm3d(4)).eval())  # running statistics: per sample

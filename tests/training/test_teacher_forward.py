"""The teacher's forward sees the student's composite batch: at step 0, with identical
weights and identical noise, teacher and student agree on the unannotated half."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from nnunet_mt.architectures.deepmedic import DeepMedic
from nnunet_mt.trainers.nnUNetTrainerMeanTeacher import MeanTeacherMixin
from nnunet_mt.training.mean_teacher import (apply_input_noise, draw_input_noise, forward_unannotated_half,
                                             make_teacher, soft_dice_consistency, uses_batch_statistics)

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

"""The Π model (Laine & Aila, ICLR 2017), the self-ensembling baseline the paper contrasts (Sec. 2.2).

Everything as :class:`nnUNetTrainerMeanTeacher` except that there is no EMA teacher: the consistency
target is a second noisy pass of the student itself (detached, so the only difference from the mean
teacher is where the target comes from), and the student is the model. Starts, like the mean teacher,
from a supervised DeepMedic given with ``-pretrained_weights``.
"""
from __future__ import annotations

from nnunet_mt.trainers.nnUNetTrainerMeanTeacher import nnUNetTrainerMeanTeacher, nnUNetTrainerMeanTeacher_tiny


class nnUNetTrainerPiModel(nnUNetTrainerMeanTeacher):
    use_ema_teacher = False


class nnUNetTrainerPiModel_tiny(nnUNetTrainerPiModel, nnUNetTrainerMeanTeacher_tiny):
    """For tests: the Π model with the tiny mean teacher's sizes (narrow DeepMedic, 2 x 2 steps, 2 + 2 patches)."""

"""The Π model (Laine & Aila, ICLR 2017), the self-ensembling baseline the paper contrasts (Sec. 2.2).

Everything as :class:`nnUNetTrainerMeanTeacher` except that there is no EMA teacher: the consistency
target is a second noisy pass of the student itself (detached, so the only difference from the mean
teacher is where the target comes from), and the student is the model. Starts, like the mean teacher,
from a supervised DeepMedic given with ``-pretrained_weights``.
"""
from __future__ import annotations

from nnunet_mt.trainers.nnUNetTrainerMeanTeacher import nnUNetTrainerMeanTeacher


class nnUNetTrainerPiModel(nnUNetTrainerMeanTeacher):
    use_ema_teacher = False


class nnUNetTrainerPiModel_tiny(nnUNetTrainerPiModel):
    """For tests: narrow DeepMedic, 2 epochs x 2 steps, batch 2 + 2, ramp-up 2 steps."""

    deepmedic_kwargs = {"filters": (8,) * 8, "fc_filters": (16, 16)}
    batch_size_annotated = 2
    batch_size_unannotated = 2
    rampup_length = 2
    dice_batches_per_epoch = 1
    epochs, iterations_per_epoch, val_iterations_per_epoch = 2, 2, 1

"""Helper run by test_nnUNetTrainerMeanTeacher in a subprocess (nnU-Net reads its folders at import).

usage: resume_run.py PRETRAINED OUT.pt EPOCHS [EPOCHS_BEFORE_INTERRUPTION]
Trains nnUNetTrainerMeanTeacher_tiny for EPOCHS epochs; with an interruption, the first trainer stops
after EPOCHS_BEFORE_INTERRUPTION epochs and a fresh trainer continues from its checkpoint as
``nnUNetv2_train --c`` does. Saves the final teacher, step counter and history to OUT.pt.
"""
import sys

import torch
from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint


def trainer(epochs: int, continue_training: bool):
    t = get_trainer_from_args("901", "3d_fullres", 0, "nnUNetTrainerMeanTeacher_tiny",
                              continue_training=continue_training, device=torch.device("cpu"))
    t.num_epochs = epochs
    return t


pretrained, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
first = int(sys.argv[4]) if len(sys.argv) > 4 else epochs
t = trainer(first, False)
maybe_load_checkpoint(t, False, False, pretrained)
t.run_training()
if first < epochs:
    t = trainer(epochs, True)
    maybe_load_checkpoint(t, True, False, None)
    resumed_at = t.global_step
    t.run_training()
    print("resumed at step", resumed_at)
torch.save({"teacher": t.teacher.state_dict(), "student": t.plain_network().state_dict(), "step": t.global_step,
            "history": t.history}, out)

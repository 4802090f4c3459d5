"""Helper run by test_nnUNetTrainerDeepMedicPseudoLabel in a subprocess (nnU-Net reads its folders at import).

usage: pseudo_label_wiring.py PRETRAINED OUT.pt
Starts nnUNetTrainerDeepMedicPseudoLabel_tiny from PRETRAINED as nnUNetv2_train does (up to the first
step: data loaders built, pseudo-lesion pass done) and saves, for every unannotated case, the
segmentation its unannotated loader reads, with the loader's dataset folder and the run's digest.
"""
import sys

import numpy as np
import torch
from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

pretrained, out = sys.argv[1], sys.argv[2]
t = get_trainer_from_args("901", "3d_fullres", 0, "nnUNetTrainerDeepMedicPseudoLabel_tiny", device=torch.device("cpu"))
maybe_load_checkpoint(t, False, False, pretrained)
t.on_train_start()
cases = t.dataloader_unlabeled.data_loader._data  # what the unannotated loader samples from
torch.save({"digest": t.pseudo_lesion_digest, "labels_folder": str(cases.labels.folder),
            "segs": {c: np.asarray(cases.load_case(c)[1]) for c in cases.identifiers}}, out)

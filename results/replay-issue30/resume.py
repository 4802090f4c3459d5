"""Continue each named trainer's fold_0 checkpoint (--c) for one more epoch with whichever nnunet_mt is imported
(PYTHONPATH); write the final checkpoint's digests (tests/trainers/family_replay.py) to OUT.json.

usage: resume.py OUT.json TRAINER ...   (run from a folder without nnunet_mt in it; nnUNet_* set, as in README.md)
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "trainers"))
try:
    from nnunet_mt.utils.ext_trainer import ext_trainer_value
except ImportError:  # code before issue 30's reorganisation, for before/after comparisons
    from nnunet_mt.cli import ext_trainer_value
os.environ["nnUNet_extTrainer"] = ext_trainer_value(None)
import torch
from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint
from family_replay import digest
import nnunet_mt
out, names = sys.argv[1], sys.argv[2:]
res = {"_code": os.path.dirname(nnunet_mt.__file__)}
for name in names:
    sys.argv = [sys.argv[0]]
    t = get_trainer_from_args("901", "3d_fullres", 0, name, continue_training=True, device=torch.device("cpu"))
    t.num_epochs = 3
    maybe_load_checkpoint(t, True, False, None)
    t.run_training()
    res[name] = digest(torch.load(os.path.join(t.output_folder, "checkpoint_final.pth"), map_location="cpu", weights_only=False))
json.dump(res, open(out, "w"), indent=1)

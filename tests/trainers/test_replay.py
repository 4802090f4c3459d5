"""Seeded tiny trainings of each trainer family replay bit for bit (``nnUNet_n_proc_DA=0``): two runs of the same
command give the same final checkpoint, tensor by tensor (weights, student, optimizer state, the method's state).

DeepMedic and the mean teacher replay through the runner in ``test_reproduce.py``; this covers the other families:
the pseudo-label baseline, both adversarial competitors and the U-Net mean teacher (whose start, nnU-Net's U-Net,
is trained in each run). ``family_replay.py`` is also how a refactoring compares two versions of the code.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import TINY_NAME

FAMILIES = ("nnUNetTrainerDeepMedicPseudoLabel_tiny", "nnUNetTrainerDeepMedicEN_tiny",
            "nnUNetTrainerDeepMedicUDA_tiny", "nnUNetTrainerMeanTeacherUNet_tiny")


def test_each_family_replays_its_seeded_training_exactly(tiny_nnunet, trained_deepmedic, tiny_unlabeled, tmp_path):
    # a private copy: the runs' pseudo-lesion caches and results stay out of the session's folders
    preprocessed = tmp_path / "preprocessed"
    shutil.copytree(tiny_nnunet.preprocessed / TINY_NAME, preprocessed / TINY_NAME)
    env = tiny_nnunet.environment({"nnUNet_preprocessed": str(preprocessed), "nnUNet_results": str(tmp_path / "results"),
                                   "nnUNet_n_proc_DA": "0", "nnUNet_mt_seed": "2"})
    out = tmp_path / "digests.json"
    start = f"nnUNetTrainerDeepMedic_tiny={trained_deepmedic / 'checkpoint_final.pth'}"
    proc = subprocess.run([sys.executable, str(Path(__file__).parent / "family_replay.py"), str(out), "--runs", "2",
                           "--start", start, *FAMILIES], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    digests = json.loads(out.read_text())
    for name in FAMILIES:
        first, second = digests[name]
        assert any(k.startswith("optimizer_state.state.") for k in first), name  # it trained
        assert any(k.startswith("semi_supervised.") for k in first), name
        differing = sorted(k for k in first.keys() | second.keys() if first.get(k) != second.get(k))
        assert differing == [], f"{name}: {differing[:10]}"

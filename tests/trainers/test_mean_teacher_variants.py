"""The mean-teacher variants as nnU-Net trainers: named alike by the runner and the module, tiny twins with the
variants' settings, and a variant's checkpoint as ``nnUNetv2_predict`` reads it. Every variant trains through
``nnUNetv2_train`` in the runner's screen (``tests/test_reproduce.py``)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY_ID, TINY_NAME, direct_probabilities
from nnunet_mt.runner import methods
from nnunet_mt.trainers import mean_teacher_variants as mv
from nnunet_mt.trainers.nnUNetTrainerMeanTeacher import nnUNetTrainerMeanTeacher, nnUNetTrainerMeanTeacher_tiny

VARIANTS = sorted(cls.__name__ for cls in mv.VARIANTS.values())


def test_the_runner_and_the_module_name_the_same_variants():
    assert methods.MEAN_TEACHER_VARIANTS == {k: cls.__name__ for k, cls in mv.VARIANTS.items()}
    for key, cls in mv.VARIANTS.items():
        assert methods.METHODS[f"MeanTeacher-{key}"] == (cls.__name__, "nnUNetTrainerDeepMedic")
        assert issubclass(cls, nnUNetTrainerMeanTeacher)


@pytest.mark.parametrize("name", VARIANTS)
def test_tiny_twin_has_the_variants_settings_on_the_tiny_network(name):
    full, tiny = getattr(mv, name), getattr(mv, f"{name}_tiny")
    assert issubclass(tiny, nnUNetTrainerMeanTeacher_tiny) and tiny.deepmedic_kwargs == {"filters": (8,) * 8,
                                                                                          "fc_filters": (16, 16)}
    for attr in ("consistency", "consistency_kwargs", "consistency_scale", "constant_beta",
                 "consistency_on_all_samples", "similarity_scale", "unannotated_in_batch_statistics"):
        assert getattr(tiny, attr) == getattr(full, attr), attr


@pytest.fixture(scope="module")
def pretrained(trained_deepmedic, tiny_unlabeled):
    return trained_deepmedic / "checkpoint_final.pth"


def test_a_variants_checkpoint_is_what_nnunetv2_predict_reads(tiny_nnunet, pretrained, tmp_path):
    """The similarity variant's teacher (the model) is what nnUNetv2_predict applies."""
    trainer = "nnUNetTrainerMeanTeacherReleasedGram_tiny"
    tiny_nnunet.run("nnUNetv2_train", str(TINY_ID), "3d_fullres", "0", "-tr", trainer, "-device", "cpu",
                    "-pretrained_weights", str(pretrained),
                    extra_env={"nnUNet_n_proc_DA": "0", "nnUNet_mt_epochs": "1", "nnUNet_mt_iterations_per_epoch": "2"})
    fold = tiny_nnunet.model_folder(trainer) / "fold_0"
    log = json.loads((fold / "mean_teacher_log.json").read_text())
    assert log["step"] == [0, 1] and len(log["Lsim"]) == 2 and all(v > 0 for v in log["Lsim"])
    images, out = tiny_nnunet.raw / TINY_NAME / "imagesTs", tmp_path / "pred"
    tiny_nnunet.run("nnUNetv2_predict", "-i", str(images), "-o", str(out), "-d", str(TINY_ID), "-c", "3d_fullres",
                    "-f", "0", "-tr", trainer, "-device", "cpu", "--save_probabilities", "-npp", "0", "-nps", "0")
    files = [str(images / f"ts_000_{c:04d}.nii.gz") for c in range(2)]
    teacher = direct_probabilities(fold.parent, fold / "checkpoint_final.pth", files)
    np.testing.assert_allclose(np.load(out / "ts_000.npz")["probabilities"], teacher, atol=3e-3)

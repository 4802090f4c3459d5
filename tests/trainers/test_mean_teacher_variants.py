"""The mean-teacher variants as nnU-Net trainers: the runner's names derived from the class names, tiny twins with
the variants' settings, and a variant's checkpoint as ``nnUNetv2_predict`` reads it. Every variant trains through
``nnUNetv2_train`` in the runner's screen (``tests/commands/test_reproduce.py``)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY_ID, TINY_NAME, direct_probabilities
from nnunet_mt.evaluation.choice import CONTROLS
from nnunet_mt.runner.methods import METHODS
from nnunet_mt.trainers import mean_teacher_variants as mv
from nnunet_mt.trainers.nnUNetTrainerMeanTeacher import nnUNetTrainerMeanTeacher, nnUNetTrainerMeanTeacher_tiny
from nnunet_mt.trainers.variant_names import (RENAMED_METHODS, VARIANT_METHODS, VARIANT_TRAINERS, current_method_name,
                                              method_name)
from nnunet_mt.utils.ext_trainer import trainers_dir

VARIANTS = sorted(cls.__name__ for cls in mv.VARIANTS.values())
#: what a user types for each trainer, in the runner's order
TYPED = {
    "nnUNetTrainerMeanTeacherReleased": "MeanTeacher-released",
    "nnUNetTrainerMeanTeacherReleasedBeta1": "MeanTeacher-released-beta1",
    "nnUNetTrainerMeanTeacherReleasedGram": "MeanTeacher-released-gram",
    "nnUNetTrainerMeanTeacherReleasedShortSchedule": "MeanTeacher-released-short-schedule",
    "nnUNetTrainerMeanTeacherSquared": "MeanTeacher-squared",
    "nnUNetTrainerMeanTeacherMSE": "MeanTeacher-mse",
    "nnUNetTrainerMeanTeacherKL": "MeanTeacher-kl",
    "nnUNetTrainerMeanTeacherKLConfident": "MeanTeacher-kl-confident",
    "nnUNetTrainerMeanTeacherNoConsistency": "MeanTeacher-no-consistency",
    "nnUNetTrainerMeanTeacherNoConsistencyAnnotatedBN": "MeanTeacher-no-consistency-annotated-bn",
    "nnUNetTrainerMeanTeacherDeterministicTeacher": "MeanTeacher-deterministic-teacher",
}


@pytest.mark.parametrize("trainer, typed", [*TYPED.items(), ("nnUNetTrainerMeanTeacher", "MeanTeacher")])
def test_a_method_name_is_its_trainer_class_name_in_words(trainer, typed):
    assert method_name(trainer) == typed


def test_method_name_refuses_other_trainers():
    with pytest.raises(ValueError, match="nnUNetTrainerDeepMedic: not a mean-teacher trainer"):
        method_name("nnUNetTrainerDeepMedic")


def test_the_variants_table_is_what_users_type_and_every_class_of_the_module():
    assert VARIANT_METHODS == {typed: trainer for trainer, typed in TYPED.items()}
    assert list(VARIANT_METHODS) == list(TYPED.values())  # the runner's order
    defined = {name for name, cls in vars(mv).items() if isinstance(cls, type) and cls.__module__ == mv.__name__
               and issubclass(cls, nnUNetTrainerMeanTeacher) and not name.endswith("_tiny")}
    assert defined == set(VARIANT_TRAINERS)


@pytest.mark.parametrize("method", list(TYPED.values()))
def test_every_name_resolves_to_its_trainer_class_in_the_runner_and_in_nnunet(method):
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    cls = mv.VARIANTS[method]
    assert issubclass(cls, nnUNetTrainerMeanTeacher) and method_name(cls.__name__) == method
    assert METHODS[method] == (cls.__name__, "nnUNetTrainerDeepMedic")
    for name in (cls.__name__, f"{cls.__name__}_tiny"):  # what nnUNetv2_train -tr finds
        assert recursive_find_python_class(trainers_dir(), name, "nnunet_mt.trainers") is getattr(mv, name)


def test_old_names_map_to_methods_and_the_controls_are_the_variants_without_consistency():
    assert RENAMED_METHODS == {"MeanTeacher-beta0": "MeanTeacher-no-consistency",
                               "MeanTeacher-beta0-annotated-bn": "MeanTeacher-no-consistency-annotated-bn"}
    assert all(old not in METHODS and new in METHODS for old, new in RENAMED_METHODS.items())
    assert current_method_name("MeanTeacher-beta0") == "MeanTeacher-no-consistency"
    assert current_method_name("MeanTeacher-kl") == "MeanTeacher-kl"
    assert set(CONTROLS) == {m for m, cls in mv.VARIANTS.items() if cls.consistency_scale == 0}


@pytest.mark.parametrize("name", VARIANTS)
def test_tiny_twin_has_the_variants_settings_on_the_tiny_network(name):
    full, tiny = getattr(mv, name), getattr(mv, f"{name}_tiny")
    assert issubclass(tiny, nnUNetTrainerMeanTeacher_tiny) and tiny.deepmedic_kwargs == {"filters": (8,) * 8,
                                                                                          "fc_filters": (16, 16)}
    for attr in ("consistency", "consistency_kwargs", "consistency_scale", "constant_beta",
                 "consistency_on_all_samples", "similarity_scale", "unannotated_in_batch_statistics",
                 "ema_decay_after"):
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

"""The mean teacher's variants by name, without importing them (torch, nnU-Net's trainers): the runner lists
them as methods when it parses its command line, and the screen's choice rule reads their names from CSV files.

A variant's runner method is its trainer class's name, mechanically (:func:`method_name`):
``nnUNetTrainerMeanTeacherKLConfident`` is ``MeanTeacher-kl-confident``. The classes themselves are in
:mod:`nnunet_mt.trainers.mean_teacher_variants`, which builds its table from :data:`VARIANT_TRAINERS`.
"""
from __future__ import annotations

import re

PREFIX = "nnUNetTrainerMeanTeacher"

#: the variants' trainer classes, in the runner's order
VARIANT_TRAINERS = (
    "nnUNetTrainerMeanTeacherReleased",
    "nnUNetTrainerMeanTeacherReleasedBeta1",
    "nnUNetTrainerMeanTeacherReleasedGram",
    "nnUNetTrainerMeanTeacherReleasedShortSchedule",
    "nnUNetTrainerMeanTeacherSquared",
    "nnUNetTrainerMeanTeacherMSE",
    "nnUNetTrainerMeanTeacherKL",
    "nnUNetTrainerMeanTeacherKLConfident",
    "nnUNetTrainerMeanTeacherNoConsistency",
    "nnUNetTrainerMeanTeacherNoConsistencyAnnotatedBN",
    "nnUNetTrainerMeanTeacherDeterministicTeacher",
)

#: method names that result files and work folders written before the rename hold -> the name now
RENAMED_METHODS = {
    "MeanTeacher-beta0": "MeanTeacher-no-consistency",
    "MeanTeacher-beta0-annotated-bn": "MeanTeacher-no-consistency-annotated-bn",
}


def method_name(trainer: str) -> str:
    """The runner's name of a mean-teacher trainer: ``MeanTeacher``, then the rest of the class name in lower
    case with a hyphen between its words (a run of capitals is one word, a digit stays with its word):
    ``nnUNetTrainerMeanTeacherKLConfident`` -> ``MeanTeacher-kl-confident``, ``...ReleasedBeta1`` ->
    ``MeanTeacher-released-beta1``."""
    if not trainer.startswith(PREFIX):
        raise ValueError(f"{trainer}: not a mean-teacher trainer (its name starts with {PREFIX})")
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", trainer[len(PREFIX):]).lower()
    return "MeanTeacher" + (f"-{words}" if words else "")


#: runner method name -> trainer class name, for every variant
VARIANT_METHODS = {method_name(trainer): trainer for trainer in VARIANT_TRAINERS}


def current_method_name(name: str) -> str:
    """A method name as written now: a name read from an older file mapped to its new one, any other unchanged."""
    return RENAMED_METHODS.get(name, name)

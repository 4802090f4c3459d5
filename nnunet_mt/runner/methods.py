"""The runner's methods: each display name (``--methods``) is a trainer and the supervised trainer of the
model it starts from; the mean teacher's consistency variants are methods ``MeanTeacher-<name>``."""
from __future__ import annotations

from nnunet_mt.source_dataset import ReproduceError

#: display name -> (trainer, trainer of the supervised init model it starts from)
METHODS: dict[str, tuple[str, str]] = {
    "DeepMedic": ("nnUNetTrainerDeepMedic", "nnUNetTrainerDeepMedic"),
    "DeepMedic-UDA": ("nnUNetTrainerDeepMedicUDA", "nnUNetTrainerDeepMedic"),
    "DeepMedic-EN": ("nnUNetTrainerDeepMedicEN", "nnUNetTrainerDeepMedic"),
    "MeanTeacher": ("nnUNetTrainerMeanTeacher", "nnUNetTrainerDeepMedic"),
    "PiModel": ("nnUNetTrainerPiModel", "nnUNetTrainerDeepMedic"),
    "PseudoLabel": ("nnUNetTrainerDeepMedicPseudoLabel", "nnUNetTrainerDeepMedic"),
    "nnUNet": ("nnUNetTrainerUNet", "nnUNetTrainerUNet"),
    "MeanTeacherUNet": ("nnUNetTrainerMeanTeacherUNet", "nnUNetTrainerUNet"),
}
#: the mean teacher's consistency variants and controls (trainers/mean_teacher_variants.py), as methods
#: ``MeanTeacher-<name>``; ``MeanTeacher`` itself is the paper's Eq. 1
MEAN_TEACHER_VARIANTS = {
    "released": "nnUNetTrainerMeanTeacherReleased",
    "released-beta1": "nnUNetTrainerMeanTeacherReleasedBeta1",
    "released-gram": "nnUNetTrainerMeanTeacherReleasedGram",
    "squared": "nnUNetTrainerMeanTeacherSquared",
    "mse": "nnUNetTrainerMeanTeacherMSE",
    "kl": "nnUNetTrainerMeanTeacherKL",
    "kl-confident": "nnUNetTrainerMeanTeacherKLConfident",
    "beta0": "nnUNetTrainerMeanTeacherNoConsistency",
    "beta0-annotated-bn": "nnUNetTrainerMeanTeacherNoConsistencyAnnotatedBN",
    "deterministic-teacher": "nnUNetTrainerMeanTeacherDeterministicTeacher",
}
METHODS.update({f"MeanTeacher-{k}": (v, "nnUNetTrainerDeepMedic") for k, v in MEAN_TEACHER_VARIANTS.items()})
#: the paper's four
DEFAULT_METHODS = ["DeepMedic", "DeepMedic-UDA", "DeepMedic-EN", "MeanTeacher"]
#: methods that use no unannotated scans
SUPERVISED_METHODS = {"DeepMedic", "nnUNet"}


def check_methods(methods: list[str]) -> None:
    """Every name is a method, none twice."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ReproduceError(f"unknown method(s) {', '.join(unknown)}; valid: {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        raise ReproduceError(f"--methods lists a method twice: {' '.join(methods)}")


def check_trainers(methods: list[str], suffix: str) -> None:
    """Every trainer the methods need exists (a wrong ``--trainer-suffix`` stops here, before any preprocessing)."""
    from nnunet_mt.cli import trainers_dir
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    needed = sorted({name + suffix for m in methods for name in METHODS[m]})
    missing = [t for t in needed if recursive_find_python_class(trainers_dir(), t, "nnunet_mt.trainers") is None]
    if missing:
        raise ReproduceError(f"no trainer class {', '.join(missing)} in {trainers_dir()} (--trainer-suffix "
                             f"{suffix!r}; the plugin's variants are _tiny, _demo, _5epochs, _50epochs, and not every "
                             f"trainer has each)")

"""The runner's methods: each display name (``--methods``) is a trainer and the supervised trainer of the
model it starts from; the mean teacher's consistency variants are named after their trainer classes."""
from __future__ import annotations

from nnunet_mt.runner.source_dataset import ReproduceError
from nnunet_mt.trainers.variant_names import RENAMED_METHODS, VARIANT_METHODS

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
#: the mean teacher's consistency variants and controls, each named after its trainer class
#: (``nnUNetTrainerMeanTeacherKLConfident`` is ``MeanTeacher-kl-confident``: trainers/variant_names.py)
METHODS.update({method: (trainer, "nnUNetTrainerDeepMedic") for method, trainer in VARIANT_METHODS.items()})
#: the paper's four
DEFAULT_METHODS = ["DeepMedic", "DeepMedic-UDA", "DeepMedic-EN", "MeanTeacher"]
#: methods that use no unannotated scans
SUPERVISED_METHODS = {"DeepMedic", "nnUNet"}


def check_methods(methods: list[str]) -> None:
    """Every name is a method, none twice. A name from before a rename stops with the name now."""
    renamed = [m for m in methods if m in RENAMED_METHODS]
    if renamed:
        raise ReproduceError(
            "; ".join(f"{m} is now called {RENAMED_METHODS[m]}" for m in renamed) + " (the same trainer: an existing "
            "work folder's training is reused, its predictions and diagnostics are made again under the new name)")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ReproduceError(f"unknown method(s) {', '.join(unknown)}; valid: {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        raise ReproduceError(f"--methods lists a method twice: {' '.join(methods)}")


def check_trainers(methods: list[str], suffix: str) -> None:
    """Every trainer the methods need exists (a wrong ``--trainer-suffix`` stops here, before any preprocessing)."""
    from nnunet_mt.utils.ext_trainer import trainers_dir
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    needed = sorted({name + suffix for m in methods for name in METHODS[m]})
    missing = [t for t in needed if recursive_find_python_class(trainers_dir(), t, "nnunet_mt.trainers") is None]
    if missing:
        raise ReproduceError(f"no trainer class {', '.join(missing)} in {trainers_dir()} (--trainer-suffix "
                             f"{suffix!r}; the plugin's variants are _tiny, _demo, _5epochs, _50epochs, and not every "
                             f"trainer has each)")

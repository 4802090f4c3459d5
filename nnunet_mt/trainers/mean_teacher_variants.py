"""Mean-teacher variants: each changes only the consistency (or, for the controls, switches it off).

``nnUNetv2_train DATASET 3d_fullres FOLD -tr <name> -pretrained_weights <supervised checkpoint>``, as for
:class:`~nnunet_mt.trainers.nnUNetTrainerMeanTeacher.nnUNetTrainerMeanTeacher` (the paper's Eq. 1). Every
variant is that trainer with a few class attributes of
:class:`~nnunet_mt.trainers.nnUNetTrainerMeanTeacher.MeanTeacherMixin` changed; the losses are the pure
functions of :mod:`nnunet_mt.training.mean_teacher`. The runner names each after its class
(:mod:`nnunet_mt.trainers.variant_names`): ``nnUNetTrainerMeanTeacherKLConfident`` is ``MeanTeacher-kl-confident``.

Consistencies:

* ``Released``: the authors' released code (``sophie0206/MeanTeacher-DeepMedic``): Dice against the
  teacher's argmax, pooled over batch and voxels, on all 16 samples, eps 1e-5; beta still ramps up.
  ``ReleasedBeta1``: the same with the code's constant beta = 1. ``ReleasedGram``: plus its
  similarity-preserving term on the first 1^3 layer, scale 1e4.
* ``Squared``: Eq. 1 with V-Net's squared denominator, per patch (zero gradient at s = t).
* ``MSE``: Tarvainen and Valpola's squared error of the probabilities, weight 100 (CuriousAI's
  consistency weight for CIFAR-10), since the squared error is about 1 % of the cross-entropy.
* ``KL``: cross-entropy against the teacher's probabilities (KL up to a constant), weight 1;
  ``KLConfident`` keeps only voxels where the teacher's largest probability is >= 0.95 (FixMatch's
  threshold).

Controls, which localise what makes the teacher over-segment:

* ``NoConsistency``: beta w = 0: the same 8 + 8 batch, noise and EMA teacher, but no consistency term
  (Lc is still computed and logged). If the predicted volume grows here too, the cause is the shared
  machinery, not the loss.
* ``NoConsistencyAnnotatedBN``: the same, with the unannotated patches kept out of the BatchNorm
  statistics (both networks normalise with the annotated half's).

Schedule (item 5's next candidate after the screen, on the chosen consistency):

* ``ReleasedShortSchedule``: ``Released`` with the paper's schedules scaled to a short run: ramp-up 100
  steps instead of 400, and EMA decay 0.99 throughout instead of 0.999 after the ramp-up, so that the
  teacher scored at steps 600-1000 is an average of its last ~100 steps, not of its ramp-up.

Protocol:

* ``DeterministicTeacher``: Eq. 1 with the teacher's dropout off (the plugin's behaviour before the
  teacher kept its dropout as both references do): the student's dropout is then the consistency's main
  source of disagreement.

Each has a ``_tiny`` twin (narrow network, a few steps) for the tests and ``--trainer-suffix _tiny``.
"""
from __future__ import annotations

from nnunet_mt.trainers.nnUNetTrainerMeanTeacher import nnUNetTrainerMeanTeacher, nnUNetTrainerMeanTeacher_tiny
from nnunet_mt.trainers.variant_names import VARIANT_METHODS


class nnUNetTrainerMeanTeacherReleased(nnUNetTrainerMeanTeacher):
    """The released code's consistency: argmax target, pooled Dice, all 16 samples; beta ramps up."""

    consistency = "released"
    consistency_kwargs = {"eps": 1e-5}
    consistency_on_all_samples = True


class nnUNetTrainerMeanTeacherReleasedBeta1(nnUNetTrainerMeanTeacherReleased):
    """The released code's consistency with its constant beta = 1 (its ramp is built but unused)."""

    constant_beta = True


class nnUNetTrainerMeanTeacherReleasedGram(nnUNetTrainerMeanTeacherReleased):
    """The released consistency plus the code's similarity-preserving term (scale 1e4)."""

    similarity_scale = 1e4


class nnUNetTrainerMeanTeacherReleasedShortSchedule(nnUNetTrainerMeanTeacherReleased):
    """The released consistency with the schedules scaled to a short run: ramp-up 100, EMA decay 0.99 throughout."""

    rampup_length = 100
    ema_decay_after = 0.99


class nnUNetTrainerMeanTeacherSquared(nnUNetTrainerMeanTeacher):
    """Eq. 1 with V-Net's squared denominator, per patch."""

    consistency = "squared"


class nnUNetTrainerMeanTeacherMSE(nnUNetTrainerMeanTeacher):
    """The original mean teacher's squared error of the probabilities, weight 100."""

    consistency = "mse"
    consistency_scale = 100.0


class nnUNetTrainerMeanTeacherKL(nnUNetTrainerMeanTeacher):
    """KL divergence of the student from the teacher's probabilities, every voxel, weight 1."""

    consistency = "kl"


class nnUNetTrainerMeanTeacherKLConfident(nnUNetTrainerMeanTeacherKL):
    """KL on the voxels where the teacher is confident (largest probability >= 0.95)."""

    consistency_kwargs = {"confidence": 0.95}


class nnUNetTrainerMeanTeacherNoConsistency(nnUNetTrainerMeanTeacher):
    """Control: the mean teacher's batch, noise and EMA teacher without the consistency term (beta w = 0)."""

    consistency_scale = 0.0


class nnUNetTrainerMeanTeacherNoConsistencyAnnotatedBN(nnUNetTrainerMeanTeacherNoConsistency):
    """Control: as NoConsistency, with BatchNorm statistics from the annotated patches only."""

    unannotated_in_batch_statistics = False


class nnUNetTrainerMeanTeacherDeterministicTeacher(nnUNetTrainerMeanTeacher):
    """Eq. 1 with the teacher's forward free of dropout (input noise its only randomness)."""

    teacher_dropout = False


#: runner method name -> variant, in the order of ``variant_names.VARIANT_TRAINERS`` (every class above is there)
VARIANTS = {method: globals()[trainer] for method, trainer in VARIANT_METHODS.items()}


def _variant_attributes(variant: type) -> dict:
    """The class attributes a variant sets on the way down from nnUNetTrainerMeanTeacher."""
    attributes = {}
    for cls in reversed(variant.__mro__[:variant.__mro__.index(nnUNetTrainerMeanTeacher)]):
        attributes.update({k: v for k, v in vars(cls).items() if not k.startswith("__")})
    return attributes


def _tiny_twin(variant: type) -> type:
    name = f"{variant.__name__}_tiny"
    doc = f"For tests: {variant.__name__} on nnUNetTrainerMeanTeacher_tiny's narrow network and budget."
    return type(name, (nnUNetTrainerMeanTeacher_tiny,), {**_variant_attributes(variant), "__doc__": doc,
                                                          "__module__": __name__})


# nnU-Net finds trainers by name among a module's attributes, so the twins are module globals
for _variant in VARIANTS.values():
    globals()[f"{_variant.__name__}_tiny"] = _tiny_twin(_variant)
del _variant

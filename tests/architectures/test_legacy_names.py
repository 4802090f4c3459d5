"""Plans written by earlier versions name DenseDeepMedic in ``deepmedic.py``, where it no longer is: the DeepMedic
trainers' ``build_network_architecture`` (what ``nnUNetv2_train`` and ``nnUNetv2_predict`` build the network with)
maps the name, and ``deepmedic.py`` no longer imports ``dense_inference.py`` to answer it."""
from __future__ import annotations

import pydoc
import subprocess
import sys

import pytest
import torch

from nnunet_mt.architectures.dense_inference import DenseDeepMedic
from nnunet_mt.architectures.legacy_names import LEGACY_CLASS_NAMES, current_class_name, current_configuration

OLD = "nnunet_mt.architectures.deepmedic.DenseDeepMedic"
NEW = "nnunet_mt.architectures.dense_inference.DenseDeepMedic"
TINY = {"filters": [6] * 8, "fc_filters": [12, 12], "nnunet_window": True, "window_region": "nonzero"}


def _plans(class_name: str) -> dict:
    return {"dataset_name": "Dataset999_X", "plans_name": "nnUNetPlans", "transpose_forward": [0, 1, 2],
            "transpose_backward": [0, 1, 2], "image_reader_writer": "SimpleITKIO", "label_manager": "LabelManager",
            "configurations": {"3d_fullres": {"patch_size": [37, 75, 75], "spacing": [1, 1, 1], "architecture": {
                "network_class_name": class_name, "arch_kwargs": dict(TINY), "_kw_requires_import": []}}}}


def test_current_class_name_maps_the_old_name_and_keeps_every_other():
    assert current_class_name(OLD) == NEW
    assert current_class_name(NEW) == NEW
    unet = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    assert current_class_name(unet) == unet
    for old, new in LEGACY_CLASS_NAMES.items():
        assert pydoc.locate(old) is None, f"{old} resolves: the entry is not needed"
        assert pydoc.locate(new) is not None and current_class_name(new) == new


def test_current_configuration_renames_a_copy_and_leaves_a_current_one_alone():
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    old = PlansManager(_plans(OLD)).get_configuration("3d_fullres")
    mapped = current_configuration(old)
    assert mapped.network_arch_class_name == NEW and old.network_arch_class_name == OLD  # the plans stay as read
    assert mapped.network_arch_init_kwargs == TINY and mapped.patch_size == [37, 75, 75]
    new = PlansManager(_plans(NEW)).get_configuration("3d_fullres")
    assert current_configuration(new) is new


def test_new_plans_name_where_the_class_lives():
    from nnunet_mt.trainers.nnUNetTrainerDeepMedic import DEEPMEDIC_CLASS

    assert DEEPMEDIC_CLASS == NEW and pydoc.locate(DEEPMEDIC_CLASS) is DenseDeepMedic


@pytest.mark.parametrize("name", [OLD, NEW])
def test_the_trainers_build_dense_deepmedic_from_old_and_new_plans(name):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_mt.trainers.mean_teacher_variants import nnUNetTrainerMeanTeacherKL
    from nnunet_mt.trainers.nnUNetTrainerDeepMedic import nnUNetTrainerDeepMedic

    pm = PlansManager(_plans(name))
    for trainer in (nnUNetTrainerDeepMedic, nnUNetTrainerMeanTeacherKL):  # every DeepMedic trainer inherits it
        net = trainer.build_network_architecture(pm, pm.get_configuration("3d_fullres"), 2, 2,
                                                 enable_deep_supervision=False)
        assert type(net) is DenseDeepMedic and net.nnunet_window
        assert net(torch.zeros(1, 2, 51, 51, 51)).shape == (1, 2, 3, 3, 3)
    if name == OLD:  # what nnU-Net itself makes of the old name: nothing
        with pytest.raises(ImportError, match="could not be found"), pytest.warns(UserWarning, match="not found"):
            nnUNetTrainer.build_network_architecture(pm, pm.get_configuration("3d_fullres"), 2, 2, False)


def test_deepmedic_imports_no_dense_inference_and_no_longer_answers_the_old_name():
    code = ("import sys; from nnunet_mt.architectures import deepmedic; "
            "assert 'nnunet_mt.architectures.dense_inference' not in sys.modules, 'it imported dense_inference'; "
            "assert not hasattr(deepmedic, 'DenseDeepMedic')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

"""nnunet_mt_env: the nnUNet_extTrainer line."""
import os

from nnunet_mt.cli import ext_trainer_value, trainers_dir


def test_ext_trainer_value_adds_the_plugin_once_and_keeps_other_folders():
    other = "/opt/my_trainers"
    value = ext_trainer_value(os.pathsep.join([other, trainers_dir()]))
    assert value.split(os.pathsep) == [trainers_dir(), other]
    assert ext_trainer_value(None) == trainers_dir()
    assert os.path.isfile(os.path.join(trainers_dir(), "nnUNetTrainerDeepMedic.py"))

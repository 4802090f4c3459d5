"""nnunet_mt_env: the nnUNet_extTrainer line."""
import os

from nnunet_mt.utils.ext_trainer import ext_trainer_value, trainers_dir


def test_ext_trainer_value_adds_the_plugin_once_and_keeps_other_folders():
    other = "/opt/my_trainers"
    value = ext_trainer_value(os.pathsep.join([other, trainers_dir()]))
    assert value.split(os.pathsep) == [trainers_dir(), other]
    assert ext_trainer_value(None) == trainers_dir()
    assert os.path.isfile(os.path.join(trainers_dir(), "nnUNetTrainerDeepMedic.py"))


def test_nnunet_mt_env_prints_the_line_and_answers_help(capsys):
    import pytest

    from nnunet_mt.commands.env import print_env

    print_env([])
    assert capsys.readouterr().out.startswith(f"export nnUNet_extTrainer={trainers_dir()}")
    with pytest.raises(SystemExit) as info:
        print_env(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: nnunet_mt_env" in out and "export" not in out.split("usage")[0]


def test_the_tests_remove_their_temporary_folders_after_a_passing_session(pytestconfig):
    # pytest.ini: a passing session deletes its basetemp (the tiny nnU-Net folders, trainings, predictions)
    assert pytestconfig.getini("tmp_path_retention_policy") == "failed"

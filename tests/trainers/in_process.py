"""Plugin trainers built in the test process on the tiny dataset (nnU-Net reads its folders when used)."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from conftest import TINY_NAME
from test_plugin_trainer import plugin_trainers


@pytest.fixture(scope="module")
def make_trainer(tiny_nnunet, tmp_path_factory):
    """test_plugin_trainer's ``trainer_env`` for a whole module: builds plugin trainers by name in this process."""
    folder = tiny_nnunet.preprocessed / TINY_NAME
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    trainers = {cls.__name__: cls for cls in plugin_trainers()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("nnUNet_preprocessed", str(tiny_nnunet.preprocessed))
        mp.setenv("nnUNet_results", str(tmp_path_factory.mktemp("results")))
        mp.setenv("nnUNet_compile", "false")
        mp.setenv("nnUNet_n_proc_DA", "0")

        def make(name):
            return trainers[name](dict(copy.deepcopy(plans), continue_training=False), "3d_fullres", 0,
                                  dataset_json, torch.device("cpu"))
        yield make

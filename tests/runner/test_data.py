"""The supervised stages' plans: a copy of nnU-Net's under another name."""
from __future__ import annotations

import json

from nnunet_mt.runner.data import write_init_plans
from nnunet_mt.runner.layout import INIT_PLANS

def test_init_plans_copy(tmp_path):
    plans = {"dataset_name": "Dataset500_X_n3", "plans_name": "nnUNetPlans",
             "configurations": {"3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres", "patch_size": [8, 8, 8]}}}
    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(plans))
    out = write_init_plans(tmp_path)
    assert out == tmp_path / f"{INIT_PLANS}.json"
    init = json.loads(out.read_text())
    assert init["plans_name"] == INIT_PLANS
    assert init["configurations"] == plans["configurations"]  # data_identifier (preprocessed data) shared
    assert json.loads((tmp_path / "nnUNetPlans.json").read_text()) == plans

"""The runner's budget variables: typed parsing, clear errors, and the round trip through the environment."""
from __future__ import annotations

import pytest

from nnunet_mt.training.budget import apply_budget, budget_from_env, env_for_budget


def test_round_trip_of_every_variable():
    env = env_for_budget(epochs=3, iterations_per_epoch=50, val_iterations=2, rampup=400, lr=1e-3,
                         snapshot_every=2)
    assert env == {"nnUNet_mt_epochs": "3", "nnUNet_mt_iterations_per_epoch": "50", "nnUNet_mt_val_iterations": "2",
                   "nnUNet_mt_rampup": "400", "nnUNet_mt_lr": "0.001", "nnUNet_mt_snapshot_every": "2"}
    budget = budget_from_env(env)
    assert budget == {"num_epochs": 3, "num_iterations_per_epoch": 50, "num_val_iterations_per_epoch": 2,
                      "rampup_length": 400, "initial_lr": 0.001, "snapshot_every": 2}
    assert isinstance(budget["initial_lr"], float) and isinstance(budget["num_epochs"], int)


def test_unset_leaves_the_trainer_alone():
    assert env_for_budget() == {}
    trainer = type("T", (), {"initial_lr": 1e-4, "num_epochs": 300})()
    assert apply_budget(trainer, {"nnUNet_mt_lr": "", "nnUNet_mt_epochs": "7"}) == {"num_epochs": 7}
    assert trainer.initial_lr == 1e-4 and trainer.num_epochs == 7


@pytest.mark.parametrize("name, raw, kind", [("nnUNet_mt_lr", "0", "number"), ("nnUNet_mt_lr", "-1e-3", "number"),
                                             ("nnUNet_mt_lr", "nan", "number"), ("nnUNet_mt_lr", "fast", "number"),
                                             ("nnUNet_mt_epochs", "1.5", "integer"),
                                             ("nnUNet_mt_snapshot_every", "0", "integer")])
def test_bad_values_name_the_variable(name, raw, kind):
    with pytest.raises(ValueError) as exc:
        budget_from_env({name: raw})
    assert f"{name}={raw!r}" in str(exc.value) and f"positive {kind}" in str(exc.value)

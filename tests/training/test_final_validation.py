"""``nnUNet_mt_final_validation``: unset or 1 runs nnU-Net's end-of-training validation, 0 skips it and says
so; anything else is an error naming the value."""
from __future__ import annotations

import pytest

from nnunet_mt.training.final_validation import final_validation_enabled


@pytest.mark.parametrize("value, expected", [(None, True), ("", True), ("1", True), ("true", True),
                                             ("0", False), ("False", False), (" 0 ", False)])
def test_values(value, expected):
    environ = {} if value is None else {"nnUNet_mt_final_validation": value}
    assert final_validation_enabled(environ) is expected


# what a trainer does with the setting: tests/trainers/test_plugin_trainer.py


@pytest.mark.parametrize("value", ["no", "2", "yes"])
def test_other_values_are_errors_naming_the_value(value):
    with pytest.raises(ValueError, match=f"nnUNet_mt_final_validation='{value}': expected 0 or 1"):
        final_validation_enabled({"nnUNet_mt_final_validation": value})

"""``nnUNet_mt_final_validation``: unset or 1 runs nnU-Net's end-of-training validation, 0 skips it and says
so; anything else stops the trainer at its start, naming the value."""
from __future__ import annotations

import pytest

from nnunet_mt.training.final_validation import OptionalFinalValidationMixin, final_validation_enabled


@pytest.mark.parametrize("value, expected", [(None, True), ("", True), ("1", True), ("true", True),
                                             ("0", False), ("False", False), (" 0 ", False)])
def test_values(value, expected):
    environ = {} if value is None else {"nnUNet_mt_final_validation": value}
    assert final_validation_enabled(environ) is expected


class _Validating:
    def __init__(self, *args, **kwargs):
        self.validated, self.lines, self.output_folder = [], [], "/results/fold_0"

    def perform_actual_validation(self, save_probabilities=False):
        self.validated.append(save_probabilities)

    def print_to_log_file(self, *args):
        self.lines.append(" ".join(map(str, args)))


class _Trainer(OptionalFinalValidationMixin, _Validating):
    pass


def test_skip_is_logged_and_run_is_passed_on(monkeypatch):
    monkeypatch.setenv("nnUNet_mt_final_validation", "0")
    t = _Trainer()
    t.perform_actual_validation(True)
    assert t.validated == [] and "final validation skipped (nnUNet_mt_final_validation=0)" in t.lines[0]
    monkeypatch.setenv("nnUNet_mt_final_validation", "1")
    t.perform_actual_validation(True)
    assert t.validated == [True]


def test_bad_value_stops_the_trainer_at_its_start(monkeypatch):
    monkeypatch.setenv("nnUNet_mt_final_validation", "no")
    with pytest.raises(ValueError, match=r"nnUNet_mt_final_validation='no': expected 0 or 1"):
        _Trainer()

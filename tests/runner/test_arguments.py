"""The runner's number options: a bad value is refused naming it."""
from __future__ import annotations

import argparse

import pytest

from nnunet_mt.runner.arguments import non_negative_int, positive_float, positive_int


def test_numbers_in_range_are_read():
    assert positive_int("3") == 3 and non_negative_int("0") == 0
    assert positive_float("1e-3") == pytest.approx(0.001)


@pytest.mark.parametrize("parse, text, what", [
    (positive_int, "0", "a positive integer"), (positive_int, "2.5", "a positive integer"),
    (non_negative_int, "-1", "an integer >= 0"), (positive_float, "0", "a positive number"),
    (positive_float, "nan", "a positive number"), (positive_float, "inf", "a positive number"),
    (positive_float, "-1e-4", "a positive number"), (positive_float, "fast", "a positive number")])
def test_bad_numbers_are_refused_naming_the_value(parse, text, what):
    with pytest.raises(argparse.ArgumentTypeError, match=f"expected {what}, got {text}$"):
        parse(text)

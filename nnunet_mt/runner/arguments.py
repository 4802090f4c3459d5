"""Command-line pieces the orchestrators on a source dataset share (``nnunet_mt_reproduce``,
``nnunet_mt_schedule``): number types that name a bad value, and ``-d`` / ``--workdir`` / ``--raw``."""
from __future__ import annotations

import argparse
import math
import os
import textwrap
from pathlib import Path

from nnunet_mt.runner.source_dataset import ReproduceError, SourceDataset, find_dataset_folder, read_source


def _number(text: str, kind: type, minimum: float, exclusive: bool, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}") from None
    if not math.isfinite(value) or value < minimum or (exclusive and value == minimum):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, 1, False, "a positive integer")


def non_negative_int(text: str) -> int:
    return _number(text, int, 0, False, "an integer >= 0")


def positive_float(text: str) -> float:
    return _number(text, float, 0.0, True, "a positive number")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written; an option's help wrapped without breaking a hyphenated word, so the method
    names ``--methods`` lists (``MeanTeacher-no-consistency``) can be copied as printed."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def source_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with the options every orchestrator on a source dataset shares: -d, --workdir, --raw."""
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    p.add_argument("-d", dest="dataset", required=True, help="source dataset ID or name (e.g. 501 or Dataset501_X)")
    p.add_argument("--workdir", type=Path, required=True, help="everything this command writes goes here")
    p.add_argument("--raw", type=Path, default=None, help="nnU-Net raw folder holding the source (default $nnUNet_raw)")
    return p


def source_of(args: argparse.Namespace) -> SourceDataset:
    """The source dataset ``-d`` in ``--raw`` (or ``$nnUNet_raw``)."""
    raw = args.raw or (Path(os.environ["nnUNet_raw"]) if os.environ.get("nnUNet_raw") else None)
    if raw is None:
        raise ReproduceError("set nnUNet_raw or pass --raw (the nnU-Net raw folder holding the source dataset)")
    return read_source(find_dataset_folder(raw, args.dataset))

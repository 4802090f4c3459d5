"""The command line every public-dataset converter shares: ``-i``, its own on/off flags and the common options."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

from nnunet_mt.dataset_conversion import help_text
from nnunet_mt.dataset_conversion.convert_folder import DatasetConversionError
from nnunet_mt.dataset_conversion.errors import reported_on_stderr
from nnunet_mt.dataset_conversion.public.cases import Options
from nnunet_mt.dataset_conversion.public.summary import Summary
from nnunet_mt.dataset_conversion.staging import sigterm_as_exit


def _add_common_arguments(parser: argparse.ArgumentParser, *, default_name: str) -> None:
    parser.add_argument("-d", "--dataset-id", required=True, type=int, help="nnU-Net dataset id (0..999)")
    parser.add_argument("-n", "--dataset-name", default=default_name, help=f"dataset name (default {default_name})")
    parser.add_argument("--raw-root", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    parser.add_argument("--annotated", type=int, default=None, metavar="N",
                        help="keep the labels of only N annotated cases (drawn with --seed); the other annotated "
                             "cases go to imagesUnlabeled/ and their labels are listed in --hidden-labels-file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --annotated draw (default 0)")
    parser.add_argument("--hidden-labels-file", default=None,
                        help="where to list the hidden labels (default <raw root>/Dataset###_Name.hidden_labels.json,"
                             " outside the dataset folder)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="skip cases with a problem (listed in the summary) instead of stopping")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing dataset written from other sources or options")


def command_line(argv: Sequence[str] | None, *, prog: str, description: str, input_help: str,
                 convert_input: Callable[..., Summary], default_name: str, example: str, several_inputs: bool = False,
                 flags: Mapping[str, str] | None = None) -> None:
    """The ``main`` of every converter: ``-i``, the converter's own on/off ``flags`` (flag -> help, passed to
    ``convert_input(input, options, **flags)`` as keywords) and the common options; prints the summary on stdout,
    or the error on stderr and exits with status 2. ``example``: the arguments of the example in the help (with
    ``-d``)."""
    parser = help_text.parser(prog, description, example=example, default_name=default_name)
    parser.add_argument("-i", "--input", required=True, nargs="+" if several_inputs else None, help=input_help)
    keywords = [parser.add_argument(flag, action="store_true", help=text).dest for flag, text in (flags or {}).items()]
    _add_common_arguments(parser, default_name=default_name)
    args = parser.parse_args(argv)
    with reported_on_stderr(prog):
        raw_root = args.raw_root or os.environ.get("nnUNet_raw")
        if not raw_root:
            raise DatasetConversionError(["no output folder: pass --raw-root or set the nnUNet_raw environment "
                                          "variable"], context="invalid arguments")
        options = Options(raw_root=Path(raw_root), dataset_id=args.dataset_id, dataset_name=args.dataset_name,
                          overwrite=args.overwrite, skip_invalid=args.skip_invalid, annotated=args.annotated,
                          seed=args.seed,
                          hidden_labels_file=Path(args.hidden_labels_file) if args.hidden_labels_file else None)
        with sigterm_as_exit():  # a terminated run removes its staging folder itself
            summary = convert_input(args.input, options, **{key: getattr(args, key) for key in keywords})
    print(summary.format())
"""What every converter's ``--help`` ends with: one example command, the dataset folder it writes, the exit statuses
and what a rerun does, the first questions of a new user, answered the same way by every converter."""
from __future__ import annotations

import argparse
import re
import textwrap

_WIDTH = 100

EXIT_STATUSES = (
    ("0", "written, or found up to date (nothing written)"),
    ("2", "refused: the problems are listed on stderr, each naming its file, and nothing is written; or the output "
          "could not be written (one line saying what was written and what was left)"),
    ("1", "a bug: please report it with the traceback"),
)

RERUN = ("The same command run again finds the dataset up to date and writes nothing; a file of it changed or deleted "
         "since is said and the dataset written again. Other sources or options are refused, saying what differs, "
         "unless --overwrite is given, which replaces the dataset and every file written with it.")


def parser(prog: str, description: str, *, example: str, default_name: str = "") -> argparse.ArgumentParser:
    """An argument parser whose help ends with the example ``prog example`` (whose ``-d``, and ``-n`` or else
    ``default_name``, name the dataset written), the dataset it writes, the exit statuses and the rerun."""
    number, name = re.search(r"(?:^| )-d (\d+)", example), re.search(r"(?:^| )-n (\S+)", example)
    dataset = f"Dataset{int(number[1]):03d}_{name[1] if name else default_name}"
    indent = " " * 6
    statuses = "\n".join(textwrap.fill(text, _WIDTH, initial_indent=f"  {code}   ", subsequent_indent=indent)
                         for code, text in EXIT_STATUSES)
    epilog = "\n\n".join([
        f"example:\n  {prog} {example}",
        textwrap.fill(f"writes $nnUNet_raw/{dataset}/ for that example (DatasetXXX_Name: XXX from -d, Name from -n; "
                      f"--raw-root instead of $nnUNet_raw).", _WIDTH),
        f"exit status:\n{statuses}",
        textwrap.fill(RERUN, _WIDTH),
    ])
    return argparse.ArgumentParser(prog=prog, description=textwrap.fill(description, _WIDTH), epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)

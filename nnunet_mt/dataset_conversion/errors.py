"""What a conversion that cannot be done raises: every problem with its file, or the one line of an output that
could not be written. The command lines print either on stderr and exit with status 2, never a traceback."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence


class DatasetConversionError(ValueError):
    """Raised when the inputs cannot be converted; the message lists every problem with its file path."""

    def __init__(self, problems: Sequence[str], *, context: str = "cannot convert dataset") -> None:
        self.problems: list[str] = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{context}: {len(self.problems)} problem(s) found:\n{lines}")


class OutputError(DatasetConversionError):
    """The output could not be written, or the dataset an overwrite replaces not deleted: one line naming the
    dataset, the reason and the file met, and what was written and what was left."""

    def __init__(self, message: str) -> None:
        self.problems = [message]
        ValueError.__init__(self, message)


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


@contextmanager
def writing(dataset_dir: Path) -> Iterator[None]:
    """Turn an OSError met while writing ``dataset_dir`` (a read-only or full disk) into an :class:`OutputError`.

    Meant around a writer that builds the dataset in a staging folder and removes it on failure, so that nothing was
    written: the message says so, and that an existing dataset is as it was."""
    existed = dataset_dir.exists()
    try:
        yield
    except OutputError:
        raise
    except OSError as error:
        met = f" ({error.filename})" if error.filename else ""
        kept = f", {dataset_dir} is as it was" if existed else ""
        raise OutputError(f"cannot write {dataset_dir}: {_reason(error)}{met}; nothing was written{kept}") from error


class OldDatasetLeft(OutputError):
    """An overwrite put the new dataset in place but could not delete the one it replaces."""

    def __init__(self, dataset_dir: Path, backup: Path, error: OSError) -> None:
        super().__init__(f"wrote {dataset_dir}, but could not delete the dataset it replaces ({_reason(error)}): it is "
                         f"left in {backup}; delete it by hand")


@contextmanager
def reported_on_stderr(prog: str) -> Iterator[None]:
    """Around a command line's work: a :class:`DatasetConversionError`, or an OSError the checks did not foresee (a
    source folder that cannot be read, say), printed on stderr as ``prog: error: ...`` with exit status 2 instead
    of a traceback."""
    try:
        yield
    except DatasetConversionError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        print(f"{prog}: error: {where}{_reason(error)}", file=sys.stderr)
        sys.exit(2)

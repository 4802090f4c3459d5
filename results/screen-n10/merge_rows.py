"""Put one method's new screening rows into a screening CSV, keeping every other method's rows as they are.

    python merge_rows.py NEW_CSV OUT_CSV METHOD

``run.sh``'s last step for each method. The code that writes the rows (``choice --write``) writes those of
every method whose diagnostics are in the work folder: in a fresh work folder (every new machine) that is the
one method just trained, in an old one it may include methods trained from another start or code. Only
METHOD's rows are taken from NEW_CSV; they replace METHOD's rows in OUT_CSV (at the place of the first one,
or at the end), and the other lines of OUT_CSV are kept byte for byte. OUT_CSV is created if it is missing
and replaced atomically. Standard library only, so that it runs beside any frozen ``CODE``.

Exit status 1, with OUT_CSV untouched, when NEW_CSV holds no row of METHOD or the two files' columns differ.
"""
from __future__ import annotations

import csv
import os
import sys
import tempfile
from pathlib import Path


def _lines(path: Path) -> tuple[str, list[tuple[str, str]]]:
    """The header line and (method, line) of each row, lines with their line ends."""
    with open(path, newline="") as f:
        lines = f.read().splitlines(keepends=True)
    if not lines:
        raise SystemExit(f"{path}: empty, not a screening CSV")
    columns = next(csv.reader([lines[0]]))
    if "method" not in columns:
        raise SystemExit(f"{path}: no 'method' column in its header {columns}")
    at = columns.index("method")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = next(csv.reader([line]), [])
        if len(fields) != len(columns):
            raise SystemExit(f"{path}, line {number}: {len(fields)} fields, its header has {len(columns)}")
        rows.append((fields[at], line))
    return lines[0], rows


def merge(new: Path, out: Path, method: str) -> int:
    """Replace ``method``'s rows of ``out`` with those of ``new``; returns how many rows were put in."""
    new_header, new_rows = _lines(new)
    put = [line if line.endswith("\n") else line + "\n" for m, line in new_rows if m == method]
    if not put:
        found = sorted({m for m, _ in new_rows})
        raise SystemExit(f"{new}: no row of {method} (its rows are of: {', '.join(found) or 'no method'}); "
                         f"{out} is left as it was")
    if out.exists():
        header, rows = _lines(out)
        if header.rstrip("\r\n") != new_header.rstrip("\r\n"):
            raise SystemExit(f"{out}: its columns ({header.strip()}) differ from {new}'s ({new_header.strip()}); "
                             f"{out} is left as it was")
    else:
        header, rows = new_header, []
    kept = [line for m, line in rows if m != method]
    first = next((i for i, (m, _) in enumerate(rows) if m == method), None)
    at = len(kept) if first is None else sum(1 for m, _ in rows[:first] if m != method)
    if kept and not kept[-1].endswith("\n"):
        kept[-1] += "\n"
    if not header.endswith("\n"):
        header += "\n"
    text = header + "".join(kept[:at] + put + kept[at:])
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(put)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(f"usage: python {sys.argv[0]} NEW_CSV OUT_CSV METHOD")
    new_csv, out_csv, name = sys.argv[1:]
    count = merge(Path(new_csv), Path(out_csv), name)
    print(f"{out_csv}: {count} row(s) of {name} put in")

"""Listing a release's folders with links followed: a linked folder is entered and a linked file read as if it lay
there; a link that cannot be followed is a problem naming the link and its target.

Users assemble releases from links (a site folder kept on another disk, a derivatives folder shared between
copies). ``Path.rglob`` before Python 3.13 does not enter linked folders, and ``Path.is_file()`` is False for a
dangling link, so a scan built on them dropped those cases, or their masks, without a word. Here every entry of a
folder is either followed or reported: a dangling link, a chain of links that loops, or a linked folder that leads
back to a folder it lies in (walking it would never end) is a problem of the case ``case_of(link)`` names (skippable
with ``--skip-invalid``), or of the whole conversion when it names none.
"""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Callable

from nnunet_mt.dataset_conversion.public.cases import Discovery

CaseOf = Callable[[Path], "str | None"]
_BIDS_SUBJECT = re.compile(r"^sub-([a-z0-9]+)", re.IGNORECASE)


def broken_link(path: Path) -> str | None:
    """Why the link ``path`` cannot be followed, naming it and its target; None when it can, or is no link."""
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
    except OSError as error:
        target = os.readlink(path)
        resolved = Path(os.path.normpath(path.parent / target))
        shown = target if str(resolved) == target else f"{target} ({resolved})"
        if error.errno == errno.ELOOP:
            return f"{path}: link to {shown} loops (following it leads back to a link on the way); point it at the " \
                   f"file or folder meant"
        if error.errno == errno.ENOENT:
            return f"{path}: dangling link to {shown}, which does not exist; point it at the file or folder meant, " \
                   f"or remove it"
        return f"{path}: link to {shown} cannot be followed ({error.strerror})"
    return None


def list_folder(folder: Path, case_of: CaseOf, discovery: Discovery) -> tuple[list[Path], list[Path]]:
    """(sub-folders, files) of ``folder``, each sorted, linked ones included; links that cannot be followed are
    problems (see the module)."""
    folders, files = [], []
    for entry in sorted(folder.iterdir()):
        problem = broken_link(entry)
        if problem is not None:
            discovery.problem_of(case_of(entry), problem)
        elif entry.is_dir():
            folders.append(entry)
        elif entry.is_file():
            files.append(entry)
    return folders, files


def walk_files(root: Path, case_of: CaseOf, discovery: Discovery) -> list[Path]:
    """Every file below ``root``, sorted, linked folders entered (each once per way it is reached); a linked folder
    that leads back to one it lies in is a problem and is not entered."""
    files: list[Path] = []

    def visit(folder: Path, ancestors: tuple[str, ...]) -> None:
        folders, found = list_folder(folder, case_of, discovery)
        files.extend(found)
        for sub in folders:
            real = os.path.realpath(sub)
            if real in ancestors:
                link = f"link to {os.readlink(sub)}" if sub.is_symlink() else "folder"
                discovery.problem_of(case_of(sub), f"{sub}: {link} leads back to {real}, a folder it lies in (a "
                                                   f"loop); not followed: point it elsewhere or remove it")
                continue
            visit(sub, (*ancestors, real))

    visit(root, (os.path.realpath(root),))
    return sorted(files)


def child_dir(parent: Path, name: str, discovery: Discovery | None = None) -> Path | None:
    """The sub-folder of ``parent`` called ``name`` in any letter case, or None; with ``discovery``, a link of that
    name that cannot be followed is a problem of the conversion (the folder would otherwise look absent)."""
    if not parent.is_dir():
        return None
    for entry in sorted(parent.iterdir()):
        if entry.name.lower() != name.lower():
            continue
        problem = broken_link(entry)
        if problem is not None and discovery is not None:
            discovery.global_problems.append(problem)
        elif entry.is_dir():
            return entry
    return None


def bids_subject(path: Path, root: Path) -> str | None:
    """The subject (``sub-<id>``: ``<id>`` in lower case) of the first part of ``path`` below ``root`` that names one,
    folder (``sub-r001s001/``) or file (``sub-r001s001_ses-1_...``); None when no part does."""
    for part in path.relative_to(root).parts:
        match = _BIDS_SUBJECT.match(part)
        if match:
            return match.group(1).lower()
    return None

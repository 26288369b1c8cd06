"""Path helpers shared by the format readers and writers: natural sorting, checked existence, output folders."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from shared.errors import InputError

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders embedded numbers by value: frame_2 < frame_10 (case-insensitive)."""
    parts = _DIGITS.split(name.lower())
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p != "")


def natural_sorted(paths: Iterable[Path]) -> list[Path]:
    """Paths sorted by `natural_key` of their file names."""
    return sorted(paths, key=lambda p: (natural_key(p.name), p.name))


def require_file(path: Path, what: str) -> Path:
    """Return `path` if it is an existing file, else raise InputError naming it."""
    if not path.exists():
        raise InputError(f"{what} {str(path)!r} does not exist.")
    if not path.is_file():
        raise InputError(f"{what} {str(path)!r} is not a file.")
    return path


def require_dir(path: Path, what: str) -> Path:
    """Return `path` if it is an existing folder, else raise InputError naming it."""
    if not path.exists():
        raise InputError(f"{what} {str(path)!r} does not exist.")
    if not path.is_dir():
        raise InputError(f"{what} {str(path)!r} is not a folder.")
    return path


def is_hidden(path: Path, root: Path | None = None) -> bool:
    """Whether `path` (or, below `root`, any folder on its way) is hidden: a dot name, as macOS's `._name`
    companions and `.git` have."""
    parts = path.relative_to(root).parts if root is not None else (path.name,)
    return any(p.startswith(".") for p in parts)


def files_with_suffix(folder: Path, suffix: str) -> list[Path]:
    """Files in `folder` whose suffix is `suffix` (case-insensitive), naturally sorted; hidden files (macOS's
    `._name` companions) left out."""
    return natural_sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == suffix and not is_hidden(p)
    )


def prepare_output_folder(path: str | Path, what: str) -> Path:
    """Create `path` (and its parents) if missing and check it can be written; InputError naming it otherwise.

    Call it before long work, so a mistyped output never costs the user the work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {str(path)!r} is a file, not a folder: give a folder to write into.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"Cannot create {what.lower()} {str(path)!r}: {exc.strerror or exc}.") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"{what} {str(path)!r} is not writable: choose another folder or fix its permissions.")
    return path


def prepare_output_file(path: str | Path, what: str) -> Path:
    """Create the parent folder of the file `path` if missing and check it can be written (see
    prepare_output_folder); InputError if `path` is a folder."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {str(path)!r} is a folder: give a file name, e.g. {str(path / 'out')!r}.")
    prepare_output_folder(path.parent, f"The folder of the {what.lower()}")
    return path

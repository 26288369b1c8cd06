"""What every `tessera4d` sub-command module shares: the consoles, the one-line failure, the device choice, the
clean-up of an output folder a failed run made.

backend.cli imports the sub-command modules at its end, so these reach back into it lazily.
"""

from __future__ import annotations

from pathlib import Path

import typer


def fail(message: str) -> typer.Exit:
    """Print `error: message` in red on stderr; the Exit(1) to raise."""
    from .cli import _fail

    return _fail(message)


def consoles():
    """(console, err_console) of the CLI."""
    from .cli import console, err_console

    return console, err_console


def pick_device(device: str) -> str:
    """`device` checked against this machine (InputError if it has no such device), or for "auto"/"" the first
    GPU, else the CPU."""
    from .jobs import check_device, resolve_devices

    if device and device != "auto":
        return check_device(device)
    return resolve_devices()[0]


def drop_if_empty(folder: Path, made: bool) -> None:
    """Remove `folder` when this run made it (`made`) and left it empty: a failed run leaves nothing behind."""
    if made and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()

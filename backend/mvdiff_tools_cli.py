"""`tessera4d mvdiff convert-animate3d|train` and `tessera4d dataset render`."""

from __future__ import annotations

import typer

dataset_app = typer.Typer(
    help="Training data for the multi-view video model, rendered with Blender.", no_args_is_help=True
)


def register(mvdiff_app: typer.Typer) -> None:
    """Add convert-animate3d and train to `tessera4d mvdiff`."""

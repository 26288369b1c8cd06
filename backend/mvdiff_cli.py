"""`tessera4d mvdiff …`: the multi-view video diffusion model (init-tiny, sample) — see backend/mvdiff."""

from __future__ import annotations

import typer

mvdiff_app = typer.Typer(
    help="Multi-view video diffusion: model folders, sampling, conversion, training.", no_args_is_help=True
)

"""`tessera4d mvdiff convert-animate3d|train` and `tessera4d dataset render`.

    tessera4d mvdiff convert-animate3d SRC DST [--allow-pickle]
    tessera4d mvdiff train DATA --checkpoint DIR --out DIR [--steps N] [--lr 1e-4] [--batch 1] [--resume]
    tessera4d dataset render ASSET... --out DIR [--views 4] [--frames 16] [--size 256] [--elevation 15]

Heavy modules (torch, diffusers) are imported inside the commands so that `tessera4d --help` stays fast. Errors
are one line on stderr and exit status 1, like the other commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from shared.errors import TesseraError

from .cli_common import consoles as _consoles
from .cli_common import fail as _fail

dataset_app = typer.Typer(
    help="Training data for the multi-view video model, rendered with Blender.", no_args_is_help=True
)


def _bar(err_console) -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"))
    return Progress(*columns, TimeElapsedColumn(), console=err_console, transient=True)


def convert_animate3d(
    src: Annotated[Path, typer.Argument(help="Folder with Animate3D's published parts (see the error for the list).")],
    dst: Annotated[Path, typer.Argument(help="New model folder to write.")],
    allow_pickle: Annotated[
        bool, typer.Option(help="Load .ckpt files with the full unpickler (can run code: trusted files only).")
    ] = False,
) -> None:
    """Convert Animate3D (MVDream SD1.5 + AnimateDiff adapter + animate3d_motion_modules.ckpt) into a model folder."""
    from .mvdiff.convert import convert_with_report

    console, err_console = _consoles()
    try:
        with _bar(err_console) as bar:
            task = bar.add_task("convert", total=1.0)
            report = convert_with_report(
                src,
                dst,
                allow_pickle=allow_pickle,
                progress=lambda stage, f, msg: bar.update(task, completed=f, description=f"{stage}: {msg}"),
            )
    except TesseraError as exc:
        raise _fail(exc.message) from None
    except OSError as exc:
        raise _fail(f"Cannot write {exc.filename or dst}: {exc.strerror or exc}") from None
    console.print(f"{dst}: {report.summary()}", highlight=False)


def train(
    data: Annotated[Path, typer.Argument(help="Folder of clips from `tessera4d dataset render` (or one clip).")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Model folder to fine-tune.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for checkpoints and the fine-tuned model.")],
    steps: Annotated[int, typer.Option(min=1, help="Total optimisation steps (a resumed run counts on).")] = 1000,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-4,
    batch: Annotated[int, typer.Option(min=1, help="Clips per step.")] = 1,
    frames: Annotated[int, typer.Option(min=0, help="Frames per training window (0: the model's max).")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    save_every: Annotated[int, typer.Option(min=1, help="Checkpoint every N steps (and at the end).")] = 200,
    seed: Annotated[int, typer.Option(help="Seed for the data order, noise and timesteps.")] = 0,
    gradient_checkpointing: Annotated[
        bool, typer.Option(help="Recompute activations in the backward pass: less GPU memory, slower.")
    ] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1... (default: the first GPU, else the CPU).")] = "auto",
) -> None:
    """Fine-tune the motion-module and view/I2V parameters on rendered multi-view videos."""
    from .mvdiff.train import train as run_training

    console, err_console = _consoles()
    try:
        with _bar(err_console) as bar:
            task = bar.add_task("train", total=1.0)
            result = run_training(
                data,
                checkpoint,
                out,
                steps=steps,
                lr=lr,
                batch=batch,
                frames=frames or None,
                resume=resume,
                save_every=save_every,
                seed=seed,
                gradient_checkpointing=gradient_checkpointing,
                device=None if device == "auto" else device,
                progress=lambda stage, f, msg: bar.update(task, completed=f, description=f"{stage}: {msg}"),
            )
    except TesseraError as exc:
        raise _fail(exc.message) from None
    except OSError as exc:
        raise _fail(f"Cannot write {exc.filename or out}: {exc.strerror or exc}") from None
    last = f", last loss {result.losses[-1]:.4f}" if result.losses else ""
    console.print(
        f"{result.step} steps ({result.trainable_parameters:,} trainable parameters) in {result.seconds:.1f} s"
        f"{last} → {out}\n{result.eval_kind} loss (fixed noise): {result.eval_before:.4f} before, "
        f"{result.eval_after:.4f} after",
        highlight=False,
    )


def render(
    assets: Annotated[list[Path], typer.Argument(help=".blend, .glb, .gltf or .fbx files with animation.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for one clip folder per asset.")],
    views: Annotated[int, typer.Option(min=1, help="Cameras in the ring (the model's views).")] = 4,
    frames: Annotated[int, typer.Option(min=2, help="Frames spread over each animation.")] = 16,
    size: Annotated[int, typer.Option(min=16, help="Image size in pixels (multiple of 8).")] = 256,
    elevation: Annotated[float, typer.Option(help="Camera elevation in degrees.")] = 15.0,
    prompt: Annotated[str | None, typer.Option(help="Caption for every asset (default: from the file name).")] = None,
) -> None:
    """Render animated assets with Blender from a fixed camera ring, with alpha, in the layout `mvdiff train` reads."""
    from .mvdiff.dataset import render_assets

    console, err_console = _consoles()
    try:
        with _bar(err_console) as bar:
            task = bar.add_task("render", total=1.0)
            summary = render_assets(
                assets,
                out,
                views=views,
                frames=frames,
                size=size,
                elevation=elevation,
                prompt=prompt,
                progress=lambda stage, f, msg: bar.update(task, completed=f, description=f"{stage}: {msg}"),
            )
    except TesseraError as exc:
        raise _fail(exc.message) from None
    except OSError as exc:
        raise _fail(f"Cannot write {exc.filename or out}: {exc.strerror or exc}") from None
    console.print(
        f"{len(summary.rendered)} of {len(assets)} assets rendered ({views} views × {frames} frames, {size}²) "
        f"in {summary.seconds:.1f} s → {out}",
        highlight=False,
    )
    for reason in summary.failed.values():
        err_console.print(f"[yellow]failed:[/] {reason}", highlight=False)
    if not summary.rendered:
        raise typer.Exit(1)


dataset_app.command("render")(render)


def register(mvdiff_app: typer.Typer) -> None:
    """Add convert-animate3d and train to `tessera4d mvdiff`."""
    mvdiff_app.command("convert-animate3d")(convert_animate3d)
    mvdiff_app.command("train")(train)

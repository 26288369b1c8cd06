"""`tessera4d mvdiff …`: the multi-view video diffusion model (init-tiny, sample) — see backend/mvdiff.

    tessera4d mvdiff init-tiny DIR [--views 4] [--frames 4] [--resolution 32]
    tessera4d mvdiff sample --checkpoint DIR --images IMG_DIR_OR_PNGS --prompt TEXT --out DIR [--frames 16]
                            [--steps 25] [--guidance 7.5] [--seed 0] [--elevation 15] [--allow-untrained]

Heavy modules (torch, diffusers) are imported inside the commands so that `tessera4d --help` stays fast. Errors
are one line on stderr and exit status 1, like the other commands. `convert-animate3d` and `train` are added by
backend/mvdiff_tools_cli.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from shared.errors import InputError, TesseraError

from .cli_common import consoles as _console
from .cli_common import fail as _fail
from .cli_common import pick_device as _device

mvdiff_app = typer.Typer(
    help="Multi-view video diffusion: model folders, sampling, conversion, training.", no_args_is_help=True
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_paths(images: list[Path], views: int) -> list[Path]:
    """One image per view: a folder's images in name order, or the files as given."""
    if len(images) == 1 and images[0].is_dir():
        paths = sorted(p for p in images[0].iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        where = f"folder {images[0]}"
    else:
        paths = list(images)
        where = "--images"
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"Image file(s) not found: {', '.join(missing)}.")
    if len(paths) != views:
        raise InputError(
            f"The model has {views} views, so it needs {views} condition images (view 0 seen from +X at azimuth 0, "
            f"then every {360 // views}° around to the camera's right); {where} gave {len(paths)}."
        )
    return paths


def read_condition_image(path: Path, size: int) -> np.ndarray:
    """(size, size, 3) float32 in [0, 1]; transparency is composited over white (the renders' background)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgba = image.convert("RGBA")
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"Cannot read image {path}: {exc}") from None
    if rgba.size != (size, size):
        rgba = rgba.resize((size, size), Image.Resampling.BICUBIC)
    pixels = np.asarray(rgba, dtype=np.float32) / 255.0
    alpha = pixels[..., 3:]
    return np.clip(pixels[..., :3] * alpha + (1.0 - alpha), 0.0, 1.0)


def write_frames(out: Path, frames: np.ndarray) -> int:
    """Write (V, F, H, W, 3) frames as out/view_V/frame_FFFF.png; returns the number of files."""
    from PIL import Image

    count = 0
    for v, view in enumerate(frames):
        folder = out / f"view_{v}"
        folder.mkdir(parents=True, exist_ok=True)
        for f, frame in enumerate(view):
            Image.fromarray(np.round(np.clip(frame, 0, 1) * 255).astype(np.uint8)).save(folder / f"frame_{f:04d}.png")
            count += 1
    return count


@mvdiff_app.command("init-tiny")
def init_tiny_command(
    folder: Annotated[Path, typer.Argument(help="New, empty folder for the model.")],
    views: Annotated[int, typer.Option(min=1, help="Views the model generates together.")] = 4,
    frames: Annotated[int, typer.Option(min=1, help="Frames the model is meant for (tessera_model.json).")] = 4,
    resolution: Annotated[int, typer.Option(min=8, help="Image size in pixels (a multiple of 8).")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
) -> None:
    """Write a tiny random-weight model for tests. Its output is noise: it is marked untrained."""
    from .mvdiff.checkpoint import write_tiny

    console, _ = _console()
    try:
        write_tiny(folder, views=views, frames=frames, resolution=resolution, seed=seed)
    except TesseraError as exc:
        raise _fail(exc.message) from None
    except OSError as exc:
        raise _fail(f"Cannot write {exc.filename or folder}: {exc.strerror or exc}") from None
    console.print(
        f"Wrote a tiny random model ({views} views, {resolution} px) to {folder}. It is for tests only: "
        "sampling refuses it unless --allow-untrained.",
        highlight=False,
    )


@mvdiff_app.command("sample")
def sample_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Model folder (convert-animate3d / init-tiny).")],
    images: Annotated[
        list[Path],
        typer.Option("--images", help="Folder of the V condition renders (name order = view order), or V files."),
    ],
    prompt: Annotated[str, typer.Option("--prompt", help="What the object does, e.g. 'a horse gallops'.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for view_V/frame_FFFF.png.")],
    frames: Annotated[int, typer.Option(min=1, help="Frames to generate (frame 0 = the condition images).")] = 16,
    steps: Annotated[int, typer.Option(min=1, help="DDIM steps.")] = 25,
    guidance: Annotated[float, typer.Option(min=1.0, help="Classifier-free guidance scale.")] = 7.5,
    negative_prompt: Annotated[str, typer.Option(help="What to steer away from.")] = "",
    seed: Annotated[int, typer.Option(help="Noise seed: the same seed gives the same video.")] = 0,
    free_init: Annotated[
        int, typer.Option(min=1, help="Sampling passes with FreeInit (1: off; Animate3D uses 3: 3× the time).")
    ] = 1,
    elevation: Annotated[float, typer.Option(help="Camera elevation of the condition renders, degrees.")] = 15.0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1... (default: the first GPU, else the CPU).")] = "auto",
    allow_untrained: Annotated[
        bool, typer.Option("--allow-untrained", help="Run a random test model anyway (its output is noise).")
    ] = False,
) -> None:
    """Animate an object: V renders of it (frame 0) + a prompt → V views × F frames of it moving."""
    import torch

    from .mvdiff.cameras import mvdream_cameras
    from .mvdiff.checkpoint import load_pipeline

    console, err_console = _console()
    started = time.perf_counter()
    try:
        pipe = load_pipeline(checkpoint, device=_device(device), allow_untrained=allow_untrained)
        views = pipe.num_views
        size = int(pipe.model_info["resolution"])
        paths = image_paths(images, views)
        condition = np.zeros((views, frames, size, size, 3), np.float32)
        condition[:, 0] = np.stack([read_condition_image(p, size) for p in paths])
        mask = np.zeros((views, frames), bool)
        mask[:, 0] = True
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"))
        with Progress(*columns, TimeElapsedColumn(), console=err_console, transient=True) as bar:
            task = bar.add_task("sampling", total=steps * free_init)
            result = pipe(
                prompt,
                condition,
                mask,
                mvdream_cameras(views, elevation_deg=elevation),
                num_frames=frames,
                num_inference_steps=steps,
                guidance_scale=guidance,
                negative_prompt=negative_prompt,
                seed=seed,
                callback=lambda step, total, preview: bar.update(task, completed=step),
                allow_untrained=allow_untrained,
                free_init_iterations=free_init,
            )
        written = write_frames(out, result.frames)
    except TesseraError as exc:
        raise _fail(exc.message) from None
    except torch.cuda.OutOfMemoryError:
        raise _fail(f"Out of GPU memory sampling {frames} frames; try fewer --frames or run on a larger GPU.") from None
    except OSError as exc:
        raise _fail(f"Cannot write {exc.filename or out}: {exc.strerror or exc}") from None
    note = "" if result.trained else " (random test weights: the frames are noise)"
    console.print(
        f"Wrote {written} frames ({views} views × {frames}) to {out} in {time.perf_counter() - started:.1f} s{note}.",
        highlight=False,
    )

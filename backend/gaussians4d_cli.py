"""`tessera4d fit4d`, `render4d`, `export4d`: fit 4D Gaussians to a D-NeRF folder, render and export the model.

    tessera4d fit4d DATA_DIR --out MODEL_DIR [--preset fast|quality] [--iterations N] [--rest-mesh mesh.obj]
    tessera4d render4d MODEL_DIR --cameras DATA_DIR/transforms_test.json --out DIR
    tessera4d export4d MODEL_DIR [--ply DIR] [--mesh seq.npz] [--pc2 anim.pc2] [--rest-mesh mesh.obj] [--frames N]

Heavy modules (torch) are imported inside the commands so that `tessera4d --help` stays fast. Errors are one
line on stderr and exit status 1, like `tessera4d rig`. `register(app)` adds the commands to the main app.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from shared.errors import InputError, TesseraError

from .cli_common import consoles as _console
from .cli_common import drop_if_empty
from .cli_common import fail as _fail
from .cli_common import pick_device as _device


def fit4d(
    data_dir: Annotated[Path, typer.Argument(help="D-NeRF folder: transforms_train.json (+ _test) and images.")],
    out: Annotated[Path, typer.Option("--out", help="Model folder to write.")],
    preset: Annotated[str, typer.Option(help="fast (CPU, ≤128 px) or quality (GPU, ≤512 px).")] = "fast",
    iterations: Annotated[
        int | None, typer.Option(min=1, help="Optimisation steps (default: the preset's; fast: 300 with --rest-mesh).")
    ] = None,
    rest_mesh: Annotated[
        Path | None,
        typer.Option(
            help="OBJ of the object in the capture's coordinates (from Blender: Forward Axis Y, Up Axis Z): one "
            "Gaussian per vertex, the mesh follows the motion (placed at each time from the alpha masks first, when "
            "the images have them)."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1... (default: the first GPU, else the CPU).")] = "auto",
    sh_degree: Annotated[
        int,
        typer.Option(
            min=0,
            max=3,
            help="View-dependent colour (shine): SH bands above the base colour, 0–3, written to the PLY frames' "
            "f_rest. 0 (the default) for matte or flat-lit captures.",
        ),
    ] = 0,
    color_motion: Annotated[
        bool,
        typer.Option(
            "--color-motion",
            help="Let each Gaussian's colour change over time, for lit captures whose shading moves as parts turn "
            "(not for flat-lit ones, such as Blender's capture: there it can overfit the training views).",
        ),
    ] = False,
) -> None:
    """Fit 4D Gaussians to a multi-view video; prints held-out PSNR/SSIM when transforms_test.json (or _val) exists."""
    from .formats.paths import prepare_output_folder
    from .gaussians4d.fit import PRESETS, evaluate, fit, fit_warnings
    from .gaussians4d.store import save_model
    from .plugins.gaussians4d import held_out_split, load_video_folder, output_times, read_rest_mesh, write_times

    console, err_console = _console()
    made_out = not out.exists()
    try:
        if preset not in PRESETS:
            raise InputError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}.")
        chosen_device = _device(device)
        prepare_output_folder(out, "Model folder")
        video, test, notes = load_video_folder(data_dir)
        mesh = read_rest_mesh(rest_mesh) if rest_mesh is not None else None
        for note in (*notes, *fit_warnings(video, mesh, chosen_device, preset)):
            err_console.print(f"warning: {note}", style="yellow", highlight=False)
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"))
        with Progress(*columns, TimeElapsedColumn(), console=err_console, transient=True) as bar:
            task = bar.add_task("fit", total=1.0)
            result = fit(
                video,
                preset=preset,
                iterations=iterations,
                rest_mesh=mesh,
                progress=lambda stage, f, msg: bar.update(task, completed=f, description=f"{stage}: {msg}"),
                device=chosen_device,
                sh_degree=sh_degree,
                color_motion=color_motion,
            )
            bar.update(task, completed=1.0)
        model = result.model.cpu()
        save_model(out, result)
        write_times(out, output_times(0, video.time_values()))
        scores = evaluate(model, test, background=result.background) if test is not None else None
    except TesseraError as exc:
        drop_if_empty(out, made_out)
        raise _fail(exc.message) from None
    except OSError as exc:
        drop_if_empty(out, made_out)
        raise _fail(f"Cannot write {exc.filename or out}: {exc.strerror or exc}") from None
    line = (
        f"{len(video)} images ({video.describe()}): "
        f"{len(model)} Gaussians, {result.iterations} steps in {result.seconds:.1f} s → {out}"
    )
    if scores is not None:
        line += f"\nheld-out ({len(test)} images): PSNR {scores['psnr']:.2f} dB, SSIM {scores['ssim']:.4f}"
    elif held_out_split(data_dir) is None:
        line += "\nno transforms_test.json (nor transforms_val.json): no held-out score"
    console.print(line, highlight=False)


def _camera_entries(path: Path, at_time: float | None):
    """(file_paths, c2w (C,4,4), times (C,), per-entry intrinsics, the images' (w, h) or None) of a transforms
    json, checked as a fit's (data.parse_entries); `at_time` replaces every entry's time. The size is the json's
    "w"/"h", else the first entry's image when it is there; renders need no images."""
    from .gaussians4d.data import image_path, parse_entries

    if path.is_dir():
        example = path / "transforms_test.json"
        raise InputError(f"--cameras {str(path)!r} is a folder; give the json itself, e.g. {example}.")
    if not path.is_file():
        raise InputError(f"Camera file {str(path)!r} does not exist; give a transforms_*.json.")
    try:
        meta = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read {path.name}: {exc}") from None
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames:
        raise InputError(f"{path.name} has no 'frames' list (file_path, time, transform_matrix per entry).")
    if at_time is not None:
        frames = [{**f, "time": at_time} if isinstance(f, dict) else f for f in frames]
    elif any(isinstance(f, dict) and "time" not in f for f in frames):
        i = next(i for i, f in enumerate(frames) if isinstance(f, dict) and "time" not in f)
        raise InputError(
            f"{path.name}: entry {i} has no 'time', and each entry is rendered at its time in [0, 1]: add the "
            "times, or give --time T to render every entry at one time."
        )
    names, c2w, times, intrinsics = parse_entries(path, meta, frames)
    first = intrinsics[0]  # w/h at the top level or in the entries (nerfstudio writes them per entry)
    size = (round(first["w"]), round(first["h"])) if "w" in first and "h" in first else None
    if size is None:
        image = image_path(path.parent, names[0])
        if image is not None:
            from PIL import Image

            with Image.open(image) as im:
                size = im.size
    return names, c2w, times, intrinsics, size


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff", ".bmp", ".webp")
_DRIVE = re.compile(r"^[A-Za-z]:/")  # a Windows drive, after backslashes became slashes


def _png_paths(out: Path, file_paths: list[str], json_name: str) -> list[Path]:
    """out / file_path as PNG for every entry: an image suffix is replaced by .png, any other name keeps its
    dots (frame.001 → frame.001.png); absolute paths and paths leaving the folder keep the part below the
    folder they all share (/data/shot/cam00/0000.png → cam00/0000.png). InputError when two entries would write
    the same file."""
    rels = [Path(_DRIVE.sub("/", p.replace("\\", "/"))) for p in file_paths]  # C:/shot/... is absolute too
    outside = [r for r in rels if r.is_absolute() or ".." in r.parts]
    try:
        shared = Path(os.path.commonpath([os.path.normpath(r.parent) for r in outside])) if outside else None
    except ValueError:  # absolute and relative ones mixed: keep their names
        shared = None
    paths, seen = [], {}
    for i, rel in enumerate(rels):
        if rel.is_absolute() or ".." in rel.parts:
            rel = Path(os.path.normpath(rel)).relative_to(shared) if shared is not None else Path(rel.name)
        rel = rel.with_suffix(".png") if rel.suffix.lower() in IMAGE_SUFFIXES else rel.with_name(rel.name + ".png")
        path = out / rel
        if path in seen:
            raise InputError(
                f"{json_name}: entries {seen[path]} and {i} would both be written to {path}: give them distinct "
                "file_path values."
            )
        seen[path] = i
        paths.append(path)
    return paths


def _refuse_overwriting_sources(paths: list[Path], names: list[str], cameras: Path) -> None:
    """InputError when a render would replace one of the capture's own images (--out the capture's folder): the
    held-out ground truth would be lost."""
    from .gaussians4d.data import image_path

    sources = {p.resolve() for p in (image_path(cameras.parent, n) for n in names) if p is not None}
    clash = next((p for p in paths if p.resolve() in sources), None)
    if clash is not None:
        raise InputError(
            f"Rendering into {clash.parent} would replace the capture's own image {clash}: give another --out "
            "(e.g. renders/)."
        )


def _render_size(size: str, found: tuple[int, int] | None, cameras: Path) -> tuple[int, int]:
    """(w, h) of the renders: --size, else the cameras' own image size."""
    if not size:
        if found is None:
            raise InputError(f"{cameras.name} has no w/h and its images are not there: give --size WxH.")
        return found
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise InputError(f"--size must look like 800x800, got {size!r}.") from None
    if w < 1 or h < 1:
        raise InputError(f"Image size must be positive, got {w}x{h}.")
    if found is not None and abs(w / h - found[0] / found[1]) > 0.01 * found[0] / found[1] + 1.0 / h:
        raise InputError(
            f"--size {w}x{h} has another shape than the cameras' {found[0]}×{found[1]} images: keep their aspect "
            f"ratio (e.g. {w}x{round(w * found[1] / found[0])})."
        )
    return w, h


def outside_captured_note(names: list[str], times: np.ndarray, captured: list[float] | None) -> str | None:
    """A note naming the entries whose time lies before the first or after the last captured time (more than
    half a percent of the clip away): the fit saw no images there, so the motion is guessed."""
    if not captured:
        return None
    first, last = captured
    outside = np.flatnonzero((times < first - 0.005) | (times > last + 0.005))
    if not len(outside):
        return None
    listed = ", ".join(f"{i} ('{names[i]}', time {float(times[i]):.3g})" for i in outside[:3])
    more = f" and {len(outside) - 3} more" if len(outside) > 3 else ""
    return (
        f"entries {listed}{more} are outside the times the model was fitted on ({first:.3g} to {last:.3g}): "
        "nothing was captured there, so their motion is guessed from the nearest fitted times and may drift. "
        "Capture those times too, or render within the fitted range."
    )


def render4d(
    model_dir: Annotated[Path, typer.Argument(help="Model folder (from `tessera4d fit4d`).")],
    cameras: Annotated[Path, typer.Option("--cameras", help="transforms_*.json: one render per entry (its time).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the PNGs, named after each entry's file_path.")],
    size: Annotated[
        str,
        typer.Option(
            help="WxH of the renders (default: the json's w/h, else its images' size; pixel intrinsics are scaled "
            "to it). Needed when the json has no w/h and its images are not next to it (e.g. 800x800)."
        ),
    ] = "",
    at_time: Annotated[
        float | None,
        typer.Option("--time", min=0.0, max=1.0, help="Render every entry at this time in [0, 1] instead of its own."),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda... (default: the first GPU, else the CPU).")] = "auto",
) -> None:
    """Render the model from each camera of a transforms json at the entry's time: one RGBA PNG per entry."""
    import torch
    from PIL import Image

    from .formats.paths import prepare_output_folder
    from .gaussians4d.data import entry_cameras
    from .gaussians4d.fit import render
    from .plugins.gaussians4d import load_fitted

    console, err_console = _console()
    started = time.perf_counter()
    written: list[Path] = []
    try:
        names, c2w, times, intrinsics, found = _camera_entries(cameras, at_time)
        w, h = _render_size(size, found, cameras)
        paths = _png_paths(out, names, cameras.name)
        _refuse_overwriting_sources(paths, names, cameras)
        reference = (found[1], found[0]) if found is not None else (h, w)
        cams = entry_cameras(c2w, intrinsics, reference, (h, w), cameras)
        model, meta = load_fitted(model_dir)
        model = model.to(_device(device))
        outside = outside_captured_note(names, times, meta.get("captured_times"))
        if outside:
            err_console.print(f"warning: {outside}", style="yellow", highlight=False)
        prepare_output_folder(out, "Output folder")
        for i, path in enumerate(paths):
            with torch.no_grad():
                rgb, alpha, _ = render(model, cams.subset(np.array([i])), float(times[i]), background=(0.0, 0.0, 0.0))
            rgb, alpha = rgb[0].cpu().numpy(), alpha[0].cpu().numpy()
            straight = np.where(alpha > 1e-6, rgb / np.maximum(alpha, 1e-6), 0.0)
            pixels = np.concatenate([straight, alpha], -1)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.round(np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8)).save(path)
            written.append(path)
    except TesseraError as exc:
        raise _fail(exc.message) from None
    except OSError as exc:
        raise _fail(f"Cannot write {exc.filename or out}: {exc.strerror or exc}") from None
    console.print(f"{len(written)} renders ({w}×{h}) in {time.perf_counter() - started:.1f} s → {out}", highlight=False)


def export4d(
    model_dir: Annotated[Path, typer.Argument(help="Model folder (from `tessera4d fit4d`).")],
    ply: Annotated[Path | None, typer.Option(help="Folder for one standard 3DGS PLY per frame.")] = None,
    mesh: Annotated[Path | None, typer.Option(help="Mesh sequence .npz (rest, faces, frames; one topology).")] = None,
    rest_mesh: Annotated[
        Path | None,
        typer.Option(
            help="Mesh file to write (.obj, .ply, .stl, .glb, .off): the mesh the animation moves, as triangles: "
            "the fit's own rest mesh (fitted with --rest-mesh), else the mesh of the Gaussians at t = 0."
        ),
    ] = None,
    pc2: Annotated[
        Path | None,
        typer.Option(
            help="PC2 point cache of the animated mesh (.pc2 added), one sample per frame from 0, in the rest mesh's "
            "vertex order: put it on your own mesh with a Mesh Cache modifier and its quads, UVs and materials stay "
            "(a fit without --rest-mesh: also write --rest-mesh, the mesh it animates)."
        ),
    ] = None,
    frames: Annotated[int, typer.Option(min=0, help="Frames over the clip; 0: the fit's captured times.")] = 0,
    mesh_resolution: Annotated[
        int, typer.Option(min=16, max=512, help="Voxels along the longest side for the mesh of the Gaussians.")
    ] = 96,
) -> None:
    """Export a fitted model: PLY per frame, an animated mesh of one topology (the fit's rest mesh moved, or a
    mesh of the Gaussians moved by their motion), the rest mesh as OBJ."""
    from .plugins.gaussians4d import export_model

    console, err_console = _console()
    if ply is None and mesh is None and rest_mesh is None and pc2 is None:
        raise _fail("Nothing to export: give --ply DIR, --mesh seq.npz, --pc2 anim.pc2 and/or --rest-mesh mesh.obj.")
    try:
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"))
        with Progress(*columns, TimeElapsedColumn(), console=err_console, transient=True) as bar:
            task = bar.add_task("export", total=1.0)
            result = export_model(
                model_dir,
                ply=ply,
                mesh=mesh,
                obj=rest_mesh,
                pc2=pc2,
                frames=frames,
                mesh_resolution=mesh_resolution,
                progress=lambda stage, f, msg: bar.update(task, completed=f, description=f"{stage}: {msg}"),
            )
    except TesseraError as exc:
        raise _fail(exc.message) from None
    except OSError as exc:
        raise _fail(f"Cannot write {exc.filename or model_dir}: {exc.strerror or exc}") from None
    console.print(f"{model_dir.name}: {result.summary()}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("fit4d")(fit4d)
    app.command("render4d")(render4d)
    app.command("export4d")(export4d)

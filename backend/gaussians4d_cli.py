"""`tessera4d fit4d`, `render4d`, `export4d`: fit 4D Gaussians to a D-NeRF folder, render and export the model.

    tessera4d fit4d DATA_DIR --out MODEL_DIR [--preset fast|quality] [--iterations N] [--rest-mesh mesh.obj]
    tessera4d render4d MODEL_DIR --cameras DATA_DIR/transforms_test.json --out DIR
    tessera4d export4d MODEL_DIR [--ply DIR] [--mesh seq.npz] [--rest-mesh mesh.obj] [--frames N]

Heavy modules (torch) are imported inside the commands so that `tessera4d --help` stays fast. Errors are one
line on stderr and exit status 1, like `tessera4d rig`. `register(app)` adds the commands to the main app.
"""

from __future__ import annotations

import json
import math
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
            help="OBJ of the object in the capture's coordinates: one Gaussian per vertex, the mesh follows the "
            "motion (placed at each time from the alpha masks first, when the images have them)."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1... (default: the first GPU, else the CPU).")] = "auto",
) -> None:
    """Fit 4D Gaussians to a multi-view video; prints held-out PSNR/SSIM when transforms_test.json exists."""
    from .gaussians4d.data import load_transforms
    from .gaussians4d.fit import PRESETS, evaluate, fit
    from .gaussians4d.store import save_model
    from .plugins.gaussians4d import BACKGROUND, output_times, read_rest_mesh, write_times

    console, err_console = _console()
    try:
        if preset not in PRESETS:
            raise InputError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}.")
        video = load_transforms(data_dir, "train")
        has_test = (data_dir / "transforms_test.json").is_file()
        test = load_transforms(data_dir, "test") if has_test else None
        mesh = read_rest_mesh(rest_mesh) if rest_mesh is not None else None
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"))
        with Progress(*columns, TimeElapsedColumn(), console=err_console, transient=True) as bar:
            task = bar.add_task("fit", total=1.0)
            result = fit(
                video,
                preset=preset,
                iterations=iterations,
                rest_mesh=mesh,
                progress=lambda stage, f, msg: bar.update(task, completed=f, description=f"{stage}: {msg}"),
                device=_device(device),
            )
            bar.update(task, completed=1.0)
        model = result.model.cpu()
        save_model(out, result)
        write_times(out, output_times(0, video.time_values()))
        scores = evaluate(model, test, background=BACKGROUND) if test is not None else None
    except TesseraError as exc:
        raise _fail(exc.message) from None
    except OSError as exc:
        raise _fail(f"Cannot write {exc.filename or out}: {exc.strerror or exc}") from None
    line = (
        f"{len(video)} images ({video.view_count()} views × {len(video.time_values())} times): "
        f"{len(model)} Gaussians, {result.iterations} steps in {result.seconds:.1f} s → {out}"
    )
    if scores is not None:
        line += f"\nheld-out ({len(test)} images): PSNR {scores['psnr']:.2f} dB, SSIM {scores['ssim']:.4f}"
    else:
        line += "\nno transforms_test.json: no held-out score"
    console.print(line, highlight=False)


def _camera_entries(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, list[dict], tuple[int, int] | None]:
    """(file_paths, c2w (C,4,4), times (C,), per-entry intrinsics, (w, h) or None) of a transforms json;
    images are not needed (their size is read from "w"/"h", else from the first entry's image if present)."""
    if not path.is_file():
        raise InputError(f"Camera file {str(path)!r} does not exist; give a transforms_*.json.")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read {path.name}: {exc}") from None
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames:
        raise InputError(f"{path.name} has no 'frames' list (file_path, time, transform_matrix per entry).")
    names, c2w, times, intrinsics = [], [], [], []
    for i, entry in enumerate(frames):
        try:
            names.append(str(entry["file_path"]))
            matrix = np.asarray(entry["transform_matrix"], np.float64)
            times.append(float(entry.get("time", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"{path.name}: entry {i} lacks a usable {exc} (needs file_path, transform_matrix)."
            ) from None
        if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
            raise InputError(f"{path.name}: entry {i} ({names[-1]}) has no finite 4×4 transform_matrix.")
        if not 0.0 <= times[-1] <= 1.0:
            raise InputError(f"{path.name}: entry {i} ({names[-1]}) has time {times[-1]} outside [0, 1].")
        c2w.append(matrix)
        keys = ("camera_angle_x", "fl_x", "fl_y", "cx", "cy")
        intrinsics.append({k: float(entry.get(k, meta.get(k))) for k in keys if entry.get(k, meta.get(k)) is not None})
        if not {"camera_angle_x", "fl_x"} & set(intrinsics[-1]):
            raise InputError(f"{path.name}: entry {i} has no camera_angle_x or fl_x (the focal length).")
    size = (int(meta["w"]), int(meta["h"])) if "w" in meta and "h" in meta else None
    if size is None:
        image = _image_file(path.parent, names[0])
        if image is not None:
            from PIL import Image

            with Image.open(image) as im:
                size = im.size
    return names, np.stack(c2w).astype(np.float32), np.asarray(times, np.float32), intrinsics, size


def _image_file(folder: Path, file_path: str) -> Path | None:
    for candidate in (folder / file_path, folder / f"{file_path}.png"):
        if candidate.is_file():
            return candidate
    return None


def _png_path(out: Path, file_path: str) -> Path:
    """out / file_path with .png; absolute paths and paths leaving the folder keep only their name."""
    rel = Path(file_path)
    if rel.is_absolute() or ".." in rel.parts:
        rel = Path(rel.name)
    return out / rel.with_suffix(".png")


def render4d(
    model_dir: Annotated[Path, typer.Argument(help="Model folder (from `tessera4d fit4d`).")],
    cameras: Annotated[Path, typer.Option("--cameras", help="transforms_*.json: one render per entry (its time).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the PNGs, named after each entry's file_path.")],
    size: Annotated[
        str, typer.Option(help="WxH, when the json has no w/h and its images are not next to it (e.g. 800x800).")
    ] = "",
    device: Annotated[str, typer.Option(help="cpu, cuda... (default: the first GPU, else the CPU).")] = "auto",
) -> None:
    """Render the model from each camera of a transforms json at the entry's time: one RGBA PNG per entry."""
    import torch
    from PIL import Image

    from .gaussians4d.cameras import cameras_from_nerf
    from .gaussians4d.fit import render
    from .plugins.gaussians4d import load_fitted

    console, _ = _console()
    started = time.perf_counter()
    written: list[Path] = []
    try:
        model, _meta = load_fitted(model_dir)
        names, c2w, times, intrinsics, found = _camera_entries(cameras)
        if size:
            try:
                w, h = (int(v) for v in size.lower().split("x"))
            except ValueError:
                raise InputError(f"--size must look like 800x800, got {size!r}.") from None
        elif found is not None:
            w, h = found
        else:
            raise InputError(f"{cameras.name} has no w/h and its images are not there: give --size WxH.")
        if w < 1 or h < 1:
            raise InputError(f"Image size must be positive, got {w}x{h}.")
        model = model.to(_device(device))
        for i in range(len(names)):
            k = intrinsics[i]
            if "fl_x" not in k:
                k = {**k, "fl_x": 0.5 * w / math.tan(0.5 * k["camera_angle_x"])}
            cam = cameras_from_nerf(
                c2w[i : i + 1], w, h, fl_x=k["fl_x"], fl_y=k.get("fl_y"), cx=k.get("cx"), cy=k.get("cy")
            )
            with torch.no_grad():
                rgb, alpha, _ = render(model, cam, float(times[i]), background=(0.0, 0.0, 0.0))
            rgb, alpha = rgb[0].cpu().numpy(), alpha[0].cpu().numpy()
            straight = np.where(alpha > 1e-6, rgb / np.maximum(alpha, 1e-6), 0.0)
            pixels = np.concatenate([straight, alpha], -1)
            path = _png_path(out, names[i])
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
    rest_mesh: Annotated[Path | None, typer.Option(help="OBJ of the mesh's rest pose (t = 0).")] = None,
    frames: Annotated[int, typer.Option(min=0, help="Frames over the clip; 0: the fit's captured times.")] = 0,
    mesh_resolution: Annotated[
        int, typer.Option(min=16, max=512, help="Voxels along the longest side for the mesh of the Gaussians.")
    ] = 96,
) -> None:
    """Export a fitted model: PLY per frame, an animated mesh of one topology (the fit's rest mesh moved, or a
    mesh of the Gaussians moved by their motion), the rest mesh as OBJ."""
    from .plugins.gaussians4d import export_model

    console, err_console = _console()
    if ply is None and mesh is None and rest_mesh is None:
        raise _fail("Nothing to export: give --ply DIR, --mesh seq.npz and/or --rest-mesh mesh.obj.")
    try:
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"))
        with Progress(*columns, TimeElapsedColumn(), console=err_console, transient=True) as bar:
            task = bar.add_task("export", total=1.0)
            result = export_model(
                model_dir,
                ply=ply,
                mesh=mesh,
                obj=rest_mesh,
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

"""Fine-tuning data for the multi-view video model: render animated assets with Blender, read them back.

`render_assets` drives Blender (bpy, in a subprocess per asset: blender_addon/batch/render_dataset.py) to
render each animated .blend/.glb/.gltf/.fbx from a fixed ring of MVDream cameras (`cameras.mvdream_cameras`,
placed around the animation's bounds) over its animation, with alpha. Each asset becomes one folder:

    DATA/<asset name>/transforms.json     D-NeRF layout: camera_angle_x, w, h, frames[] with file_path,
                                          transform_matrix (camera → world, OpenGL axes, Blender world units),
                                          time in [0, 1], plus "view" and "frame" indices; and num_views,
                                          num_frames, center, distance (the ring's placement), prompt, source
    DATA/<asset name>/images/v{V}_f{FFF}.png   RGBA, straight alpha

`load_clip` reads one such folder as a `TrainingClip` (what `train.py` consumes): images composited over
white (the condition renders' background), cameras normalised back to unit distance around the object (the
MVDream convention the model's camera embedding was trained with). Folders from elsewhere in the same layout
work when every (view, frame) is present and each view's camera is fixed over time; without "center" and
"distance" the point closest to all the cameras' optical axes is the centre.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from shared.errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[2]
BLENDER_SCRIPT = REPO_ROOT / "blender_addon" / "batch" / "render_dataset.py"
ASSET_TYPES = (".blend", ".glb", ".gltf", ".fbx")
FOV_DEG = 40.0  # Animate3D's condition renders use fovy 40° (anchors-4d §2.1)
FILL = 1.15  # margin around the animation's bounding sphere
BACKGROUND = 1.0  # white, like the condition renders the model sees


@dataclass
class RenderSummary:
    """What `render_assets` did: one folder per rendered asset, the reason for each asset that failed."""

    rendered: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # asset path → message naming the file
    seconds: float = 0.0


def render_assets(
    assets: list[Path],
    out: Path,
    *,
    views: int = 4,
    frames: int = 16,
    size: int = 256,
    elevation: float = 15.0,
    prompt: str | None = None,
    progress: Callable[[str, float, str], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
    timeout: float = 1800.0,
) -> RenderSummary:
    """Render every asset into `out/<name>/`; a bad asset (unreadable, no geometry, no animation) is reported in
    the summary and the others continue. `prompt`: the caption for every asset (default: from the file name,
    e.g. "horse_gallop.glb" → "horse gallop"). Raises InputError for bad settings (before Blender starts)."""
    from .cameras import mvdream_cameras

    if views < 1 or frames < 2:
        raise InputError(f"A dataset needs at least 1 view and 2 frames (got --views {views}, --frames {frames}).")
    if size < 16 or size % 8:
        raise InputError(f"--size must be a multiple of 8 and at least 16 (the VAE works on 8-px cells), got {size}.")
    if not assets:
        raise InputError("No assets given: name .blend, .glb, .gltf or .fbx files to render.")
    unit = np.asarray(mvdream_cameras(views=views, elevation_deg=elevation), np.float64)
    out.mkdir(parents=True, exist_ok=True)
    summary = RenderSummary()
    started = time.perf_counter()
    used: set[str] = set()
    # Blender keeps preferences under HOME and Mesa its shader cache under XDG_CACHE_HOME: keep both out of the
    # user's own (as `tessera4d demo` does), in a folder removed afterwards.
    with tempfile.TemporaryDirectory(prefix="tessera-dataset-blender-") as tmp:
        home = Path(tmp)
        env = dict(os.environ, HOME=str(home), XDG_CACHE_HOME=str(home / "cache"))
        for i, asset in enumerate(assets):
            if check_cancelled is not None:
                check_cancelled()
            if progress is not None:
                progress("render", i / len(assets), f"{asset.name} ({i + 1}/{len(assets)})")
            if asset.suffix.lower() not in ASSET_TYPES:
                summary.failed[str(asset)] = f"{asset.name}: unsupported file type; use {', '.join(ASSET_TYPES)}."
                continue
            if not asset.is_file():
                summary.failed[str(asset)] = f"{asset}: no such file."
                continue
            name = _unique(_folder_name(asset), used)
            folder = out / name
            job = {
                "asset": str(asset.resolve()),
                "out": str(folder),
                "result": str(home / f"result_{i}.json"),
                "frames": frames,
                "size": size,
                "fov_deg": FOV_DEG,
                "fill": FILL,
                "c2w_unit": unit.tolist(),
                "elevation_deg": elevation,
                "prompt": prompt if prompt is not None else caption_from_name(asset),
            }
            error = _run_blender(job, home / f"job_{i}.json", env, timeout)
            if error is None:
                summary.rendered.append(folder)
            else:
                summary.failed[str(asset)] = error
    if progress is not None:
        progress("render", 1.0, f"{len(summary.rendered)} rendered, {len(summary.failed)} failed")
    summary.seconds = time.perf_counter() - started
    return summary


def _run_blender(job: dict, job_path: Path, env: dict, timeout: float) -> str | None:
    """Run the Blender script on one asset; None when it rendered, else the reason."""
    job_path.write_text(json.dumps(job), encoding="utf-8")
    result_path = Path(job["result"])
    name = Path(job["asset"]).name
    try:
        proc = subprocess.run(
            [sys.executable, str(BLENDER_SCRIPT), "--job", str(job_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return f"{name}: Blender did not finish within {timeout:.0f} s."
    if result_path.is_file():
        result = json.loads(result_path.read_text(encoding="utf-8"))
        return None if result.get("ok") else str(result.get("error", "failed"))
    tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
    return f"{name}: Blender stopped (exit {proc.returncode}): {' | '.join(tail) or 'no output'}"


def caption_from_name(path: Path) -> str:
    """A caption from a file name: "Horse_Gallop-02.glb" → "horse gallop"."""
    words = re.sub(r"[_\-.]+", " ", path.stem).strip()
    words = re.sub(r"\s*\d+$", "", words)
    return words.lower() or path.stem


def _folder_name(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem).strip("._") or "asset"


def _unique(name: str, used: set[str]) -> str:
    candidate, k = name, 2
    while candidate in used:
        candidate, k = f"{name}_{k}", k + 1
    used.add(candidate)
    return candidate


# --- reading the data back -------------------------------------------------------------------------------------


@dataclass
class TrainingClip:
    """One asset's multi-view video, as training reads it.

    images (V, F, H, W, 3) float32 in [0, 1], composited over white; alphas (V, F, H, W) float32;
    cameras (V, 4, 4) float32 camera → world at unit distance around the object (MVDream convention);
    times (F,) float32 in [0, 1]; prompt: the caption.
    """

    name: str
    images: np.ndarray
    alphas: np.ndarray
    cameras: np.ndarray
    times: np.ndarray
    prompt: str

    @property
    def views(self) -> int:
        return int(self.images.shape[0])

    @property
    def frames(self) -> int:
        return int(self.images.shape[1])


def find_clips(data: Path) -> list[Path]:
    """The clip folders under `data`: `data` itself when it holds transforms.json, else its subfolders that do
    (sorted). InputError when there are none."""
    if not data.is_dir():
        raise InputError(f"Training data folder {data} does not exist; make one with `tessera4d dataset render`.")
    if (data / "transforms.json").is_file():
        return [data]
    clips = sorted(p for p in data.iterdir() if (p / "transforms.json").is_file())
    if not clips:
        raise InputError(
            f"{data} has no clip folders (subfolders with transforms.json); make them with `tessera4d dataset render`."
        )
    return clips


def load_clip(folder: Path) -> TrainingClip:
    """Read one clip folder (see the module docstring). InputError naming the file/entry when it is incomplete."""
    path = folder / "transforms.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        entries = meta["frames"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"Cannot read {path}: {exc}") from None
    grid: dict[tuple[int, int], dict] = {}
    for i, entry in enumerate(entries):
        try:
            key = (int(entry["view"]), int(entry["frame"]))
            grid[key] = entry
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}: entry {i} has no integer 'view' and 'frame'.") from None
    views = 1 + max(v for v, _ in grid)
    frames = 1 + max(f for _, f in grid)
    missing = [(v, f) for v in range(views) for f in range(frames) if (v, f) not in grid]
    if missing:
        v, f = missing[0]
        raise InputError(f"{path}: no image for view {v}, frame {f} ({len(missing)} missing); re-render the asset.")
    images, alphas = [], []
    size = None
    for v in range(views):
        for f in range(frames):
            file = folder / grid[(v, f)]["file_path"]
            try:
                with Image.open(file) as im:
                    rgba = np.asarray(im.convert("RGBA"), np.float32) / 255.0
            except OSError as exc:
                raise InputError(f"{path}: cannot read image {file.name} (view {v}, frame {f}): {exc}") from None
            if size is None:
                size = rgba.shape[:2]
            elif rgba.shape[:2] != size:
                raise InputError(f"{file}: {rgba.shape[1]}×{rgba.shape[0]} px, the clip's others {size[1]}×{size[0]}.")
            alpha = rgba[..., 3:]
            images.append(rgba[..., :3] * alpha + BACKGROUND * (1.0 - alpha))
            alphas.append(alpha[..., 0])
    h, w = size
    c2w = np.stack([np.asarray(grid[(v, 0)]["transform_matrix"], np.float64) for v in range(views)])
    for v in range(views):
        for f in range(frames):
            if not np.allclose(np.asarray(grid[(v, f)]["transform_matrix"]), c2w[v], atol=1e-5):
                raise InputError(f"{path}: view {v}'s camera moves at frame {f}; training needs a fixed camera ring.")
    if "center" in meta and "distance" in meta:
        centre, distance = np.asarray(meta["center"], np.float64), float(meta["distance"])
    else:
        centre = _axes_meeting_point(c2w)
        distance = float(np.linalg.norm(c2w[:, :3, 3] - centre, axis=1).mean())
    cameras = c2w.copy()
    cameras[:, :3, 3] = (c2w[:, :3, 3] - centre) / distance
    times = np.asarray([float(grid[(0, f)].get("time", f / max(frames - 1, 1))) for f in range(frames)], np.float32)
    return TrainingClip(
        name=folder.name,
        images=np.stack(images).reshape(views, frames, h, w, 3).astype(np.float32),
        alphas=np.stack(alphas).reshape(views, frames, h, w).astype(np.float32),
        cameras=cameras.astype(np.float32),
        times=times,
        prompt=str(meta.get("prompt") or folder.name.replace("_", " ")),
    )


def _axes_meeting_point(c2w: np.ndarray) -> np.ndarray:
    """The point closest (least squares) to every camera's optical axis (the −Z axis through its centre)."""
    a, b = np.zeros((3, 3)), np.zeros(3)
    for m in c2w:
        d = -m[:3, 2] / np.linalg.norm(m[:3, 2])
        p = np.eye(3) - np.outer(d, d)
        a += p
        b += p @ m[:3, 3]
    return np.linalg.lstsq(a, b, rcond=None)[0]

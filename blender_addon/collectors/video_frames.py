"""Frames of a monocular video in Blender — a Movie Clip or an Image datablock whose source is an image
sequence or a movie — as float arrays for `pipeline.video_to_4d`.

Image sequences are read file by file (the numbered files next to the datablock's file, in frame order).
Movies cannot be decoded from Python, so they are rendered through the Video Sequencer of a temporary scene,
one frame at a time, with the Standard view transform (the file's own pixel values); the scene is removed
afterwards. Frames are read as stored (sRGB bytes / 255, top row first) and scaled so the longest side is at
most `max_size` pixels: the backend resizes them to the model's resolution anyway.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import NamedTuple

import bpy
import numpy as np

from ..shared.errors import InputError

_NUMBERED = re.compile(r"^(.*?)(\d+)(\.[^.]+)$")


class VideoFrames(NamedTuple):
    images: np.ndarray  # (F, H, W, 3) float32 in [0, 1]
    alphas: np.ndarray | None  # (F, H, W) float32, when the frames have transparency
    name: str


def find_source(context: bpy.types.Context, clip: str = "", image: str = ""):
    """The Movie Clip or Image to read: the named one, else the Movie Clip editor's clip, else the scene's
    active clip. InputError saying what to pick when there is none."""
    if clip:
        found = bpy.data.movieclips.get(clip)
        if found is None:
            raise InputError(f"There is no Movie Clip named '{clip}'.")
        return found
    if image:
        found = bpy.data.images.get(image)
        if found is None:
            raise InputError(f"There is no Image named '{image}'.")
        if found.source not in ("SEQUENCE", "MOVIE"):
            raise InputError(
                f"Image '{image}' is a single {found.source.lower()} image: pick an image sequence or a movie."
            )
        return found
    space = getattr(context, "space_data", None)
    if getattr(space, "type", "") == "CLIP_EDITOR" and space.clip is not None:
        return space.clip
    if context.scene.active_clip is not None:
        return context.scene.active_clip
    raise InputError(
        "No video to read: open a movie or image sequence as a Movie Clip (or an Image), and pick it in the "
        "Generate 4D panel."
    )


def read_frames(context: bpy.types.Context, source, count: int, max_size: int = 512) -> VideoFrames:
    """`count` frames evenly over the video (all of them when it is shorter)."""
    path = Path(bpy.path.abspath(source.filepath))
    if source.source == "SEQUENCE":
        files = sequence_files(path)
        if not files:
            raise InputError(f"No numbered image files like '{path.name}' in {path.parent}.")
        pick = _pick(len(files), count)
        rgba = np.stack([_load(files[i], max_size) for i in pick])
    elif source.source == "MOVIE":
        if not path.is_file():
            raise InputError(f"The movie file {path} does not exist.")
        total = int(source.frame_duration)
        rgba = _render_movie(path, _pick(total, count), tuple(source.size), max_size)
    else:
        raise InputError(f"'{source.name}' is not a movie or an image sequence.")
    if len(rgba) < 2:
        raise InputError(f"'{source.name}' has {len(rgba)} frame: a video to 4D needs at least 2.")
    alpha = rgba[..., 3]
    alphas = alpha if (alpha < 0.999).any() else None
    return VideoFrames(np.ascontiguousarray(rgba[..., :3]), alphas, source.name)


def sequence_files(first: Path) -> list[Path]:
    """The numbered files of an image sequence, in number order, given any one of them."""
    match = _NUMBERED.match(first.name)
    if match is None or not first.parent.is_dir():
        return [first] if first.is_file() else []
    prefix, suffix = match.group(1), match.group(3)
    numbered = []
    for path in first.parent.iterdir():
        m = _NUMBERED.match(path.name)
        if m and m.group(1) == prefix and m.group(3).lower() == suffix.lower():
            numbered.append((int(m.group(2)), path))
    return [p for _, p in sorted(numbered)]


def _pick(total: int, count: int) -> np.ndarray:
    if total <= 0:
        return np.zeros(0, int)
    return np.unique(np.round(np.linspace(0, total - 1, min(count, total))).astype(int))


def _load(path: Path, max_size: int) -> np.ndarray:
    """(H, W, 4) float32 straight RGBA of an image file, top row first, longest side ≤ max_size."""
    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        w, h = image.size
        if w == 0 or h == 0:
            raise InputError(f"{path.name} is not a readable image.")
        scale = min(1.0, max_size / max(w, h))
        if scale < 1.0:
            w, h = max(1, round(w * scale)), max(1, round(h * scale))
            image.scale(w, h)
        pixels = np.empty(w * h * 4, np.float32)
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    return pixels.reshape(h, w, 4)[::-1]


def _render_movie(path: Path, frames: np.ndarray, size: tuple[int, int], max_size: int) -> np.ndarray:
    """Frames (0-based) of a movie file rendered through the sequencer of a temporary scene."""
    w, h = size
    if w == 0 or h == 0:
        raise InputError(f"Blender cannot read the movie {path.name} (no frame size): re-encode it (e.g. H.264 MP4).")
    scale = min(1.0, max_size / max(w, h))
    w, h = max(2, round(w * scale)), max(2, round(h * scale))
    scene = bpy.data.scenes.new("Tessera video frames")
    folder = tempfile.mkdtemp(prefix="tessera-video-")
    png = os.path.join(folder, "frame.png")
    try:
        editor = scene.sequence_editor_create()
        strips = editor.strips if hasattr(editor, "strips") else editor.sequences  # `strips` from Blender 4.4
        strips.new_movie("video", str(path), 1, 1)
        render = scene.render
        render.resolution_x, render.resolution_y, render.resolution_percentage = w, h, 100
        render.use_sequencer, render.use_compositing = True, False
        render.image_settings.file_format, render.image_settings.color_mode = "PNG", "RGBA"
        render.filepath = png
        scene.view_settings.view_transform, scene.view_settings.look = "Standard", "None"
        scene.frame_start, scene.frame_end = 1, int(frames.max()) + 1
        out = []
        for f in frames:
            scene.frame_set(int(f) + 1)
            with bpy.context.temp_override(scene=scene):  # the render operator renders the context's scene
                done = bpy.ops.render.render(write_still=True)
            if done != {"FINISHED"}:
                raise InputError(f"Blender could not render frame {int(f) + 1} of {path.name}.")
            out.append(_load(Path(png), max_size))
    finally:
        bpy.data.scenes.remove(scene)
        if os.path.exists(png):
            os.remove(png)
        os.rmdir(folder)
    rgba = np.stack(out)
    rgba[..., 3] = 1.0  # a movie has no transparency (the film is opaque here anyway)
    return rgba

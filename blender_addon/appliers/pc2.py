"""Append-only PC2 point caches (the format Blender's MESH_CACHE modifier reads).

Layout (little endian): 12-byte signature b"POINTCACHE2\\0", int32 version (1), int32
num_points, float32 start_frame, float32 sample_rate, int32 num_samples, then
num_samples × num_points × 3 float32. Pure numpy, no bpy.

Frames are written and flushed before the header's sample count is raised, so a reader
(Blender evaluating the modifier while frames stream in) sees the old frames or the new
ones, never half a frame.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

SIGNATURE = b"POINTCACHE2\0"
HEADER = struct.Struct("<12siiffi")
COUNT_OFFSET = 12 + 4 + 4 + 4 + 4  # byte offset of num_samples


class PC2Error(Exception):
    """A PC2 file that cannot be appended to or read; the message names the file."""


def create(path: str | Path, num_points: int, start_frame: float = 0.0) -> None:
    """Write an empty cache (0 samples) for `num_points` points, replacing any old file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(HEADER.pack(SIGNATURE, 1, int(num_points), float(start_frame), 1.0, 0))


def read_header(path: str | Path) -> tuple[int, float, int]:
    """(num_points, start_frame, num_samples) of a PC2 file."""
    with open(path, "rb") as fh:
        raw = fh.read(HEADER.size)
    if len(raw) != HEADER.size:
        raise PC2Error(f"{path} is not a PC2 file (only {len(raw)} bytes).")
    sig, _version, points, start, _rate, samples = HEADER.unpack(raw)
    if sig != SIGNATURE:
        raise PC2Error(f"{path} is not a PC2 file (signature {sig!r}).")
    return points, start, samples


def append(path: str | Path, frames: np.ndarray) -> int:
    """Append frames (N, V, 3) float32 and return the new sample count.

    Writes at the end of the samples the header counts (so a partial write that was never
    counted is overwritten, not kept), then raises the count.
    """
    frames = np.ascontiguousarray(frames, dtype="<f4")
    if frames.ndim == 2:
        frames = frames[None]
    points, _start, samples = read_header(path)
    if frames.ndim != 3 or frames.shape[1:] != (points, 3):
        raise PC2Error(f"{path} holds {points} points per frame; got frames of shape {tuple(frames.shape)}.")
    with open(path, "r+b") as fh:
        fh.seek(HEADER.size + samples * points * 12)
        fh.write(frames.tobytes())
        # Readers go through the OS page cache, so a flush (not an fsync, which costs
        # milliseconds per frame) is enough to order the frame before its count.
        fh.flush()
        fh.seek(COUNT_OFFSET)
        fh.write(struct.pack("<i", samples + frames.shape[0]))
    return samples + frames.shape[0]


def read(path: str | Path) -> np.ndarray:
    """All counted frames as (num_samples, num_points, 3) float32."""
    points, _start, samples = read_header(path)
    data = np.fromfile(path, dtype="<f4", count=samples * points * 3, offset=HEADER.size)
    return data.reshape(samples, points, 3)

"""Built-in plugins that stream sequences from the backend's disk into Blender.

- `sequence.load_mesh`: an .npz, a folder of OBJ files or a .pc2 (+ rest mesh) →
  one `mesh.rest` result, then `mesh.frames` chunks.
- `sequence.load_gaussians`: a folder of 3DGS PLY files → one `gaussians.frame` per file.

Every result is checked with shared.results before it is yielded, so what the backend
sends is always valid. Cancellation is checked between chunks / frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np

from shared.results import GAUSSIANS_FRAME, MESH_FRAMES, MESH_REST, check_gaussians, check_mesh_frames, check_mesh_rest
from shared.schemas import ParamSpec, PluginSpec

from ..formats.gaussian_ply import gaussian_ply_files, read_gaussian_ply
from ..formats.mesh_sequence import frames_per_chunk, open_mesh_sequence
from ..plugin_host import JobContext, Output, Plugin, Progress

CHUNK_BYTES = 4 << 20  # automatic chunk size: about 4 MiB of positions per mesh.frames result


class LoadMeshSequence(Plugin):
    """Stream a mesh sequence file or folder as mesh.rest + mesh.frames chunks."""

    spec: ClassVar[PluginSpec] = PluginSpec(
        name="sequence.load_mesh",
        summary="Load a mesh animation (npz, folder of OBJ files, or PC2 + rest mesh) from the backend's disk.",
        params=[
            ParamSpec(
                "path",
                "path",
                default="",
                required=True,
                help="Mesh sequence on the backend machine: an .npz (rest, faces, frames), a folder of .obj "
                "files (one per frame, sorted by the number in their names), or a .pc2 point cache.",
            ),
            ParamSpec(
                "rest_mesh",
                "path",
                default="",
                help="Only for .pc2: the mesh (OBJ, PLY, ...) whose vertices the cache animates, "
                "with the same vertex count and order. Leave empty otherwise.",
            ),
            ParamSpec(
                "chunk_frames",
                "int",
                default=0,
                min=0,
                help="Frames per streamed chunk; 0 picks as many as fit in about 4 MiB (at least 1).",
            ),
            ParamSpec(
                "fps",
                "float",
                default=0.0,
                min=0.0,
                help="Frame rate of the sequence in frames per second; 0 uses the file's own, if it has one.",
            ),
        ],
        outputs=["mesh_frames"],
    )

    def run(self, ctx: JobContext) -> Iterator[Progress | Output]:
        path = Path(ctx.params["path"])
        yield Progress("reading", 0.0, f"Opening {path.name}")
        reader = open_mesh_sequence(path, ctx.params.get("rest_mesh") or None)
        fps = float(ctx.params.get("fps") or 0.0) or reader.fps
        meta: dict = {"name": reader.name, "frames": reader.frame_count}
        if fps:
            meta["fps"] = float(fps)  # absent when unknown (shared.results: fps is optional)
        rest_arrays = {"rest": reader.rest, "faces": reader.faces}
        check_mesh_rest(rest_arrays, meta, what=f"Mesh sequence {reader.name}")
        yield Output(MESH_REST, meta, rest_arrays)

        chunk = int(ctx.params.get("chunk_frames") or 0) or frames_per_chunk(reader.vertex_count, CHUNK_BYTES)
        total = reader.frame_count
        for start, positions in reader.iter_chunks(chunk):
            ctx.check_cancelled()
            arrays = {"positions": positions}
            chunk_meta = {"start": start}
            check_mesh_frames(arrays, chunk_meta, reader.vertex_count, what=f"Mesh sequence {reader.name}")
            yield Output(MESH_FRAMES, chunk_meta, arrays)
            done = start + positions.shape[0]
            yield Progress("reading", done / total, f"Frame {done} of {total}")


def subsample_indices(count: int, keep: int) -> np.ndarray:
    """`keep` sorted indices out of `count`, deterministic: the same count always gives the same indices."""
    if keep <= 0 or keep >= count:
        return np.arange(count)
    rng = np.random.default_rng(count)  # seeded by the count, so frames of equal size share indices
    return np.sort(rng.choice(count, size=keep, replace=False))


class LoadGaussianSequence(Plugin):
    """Stream a folder of 3DGS PLY files as one gaussians.frame result per file."""

    spec: ClassVar[PluginSpec] = PluginSpec(
        name="sequence.load_gaussians",
        summary="Load a Gaussian splat sequence (a folder of 3DGS .ply files, one per frame) from the backend's disk.",
        params=[
            ParamSpec(
                "directory",
                "path",
                default="",
                required=True,
                help="Folder on the backend machine holding one standard 3DGS .ply per frame "
                "(sorted by the number in their names).",
            ),
            ParamSpec(
                "max_gaussians",
                "int",
                default=0,
                min=0,
                help="Keep at most this many Gaussians per frame (the same indices in every frame of equal size); "
                "0 keeps all.",
            ),
        ],
        outputs=["gaussian_frames"],
    )

    def run(self, ctx: JobContext) -> Iterator[Progress | Output]:
        folder = Path(ctx.params["directory"])
        yield Progress("reading", 0.0, f"Listing {folder.name}")
        files = gaussian_ply_files(folder)
        keep = int(ctx.params.get("max_gaussians") or 0)
        total = len(files)
        for i, path in enumerate(files):
            ctx.check_cancelled()
            frame = read_gaussian_ply(path)
            if keep and frame.count > keep:
                frame = frame.take(subsample_indices(frame.count, keep))
            arrays = frame.arrays()
            check_gaussians(arrays, what=f"Gaussian PLY {path.name}")
            yield Output(GAUSSIANS_FRAME, {"name": folder.name, "frame": i, "frames": total, "ply": path.name}, arrays)
            yield Progress("reading", (i + 1) / total, f"Frame {i + 1} of {total} ({frame.count} Gaussians)")

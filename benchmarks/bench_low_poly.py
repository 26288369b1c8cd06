"""Mesh path 1 with a low-poly rest mesh: fitting it subdivided against fitting it as it is.

A user's rest mesh is often a low-poly proxy whose faces span several pixels of the fit's images. One Gaussian per
vertex cannot cover such faces, and the fit pulls the vertices in. This script fits a 122-vertex 1.2 × 0.4 × 0.4
box (edges of 3.5 px at 48²) to synthetic captures of the same box (discs densely sampled on its surface, rendered
with the project's rasterizer from 6 ring cameras at 48², 8 times; tests/backend/gaussians4d/moving_scenes.py), in
two motions whose truth is known at every vertex:

- travel: the whole box moves 0.57 and turns 52° by t = 1 (far between times: the rigid poses must find it);
- hinge: the box's right half swings 0.7 rad about its middle (the silhouette bending and ARAP must follow).

Settings (Preset.mesh_max_edge_px, backend/gaussians4d/fit.py), all else the fast preset's mesh path:
- baseline: subdivided only above 4 px edges, so the mesh is fitted as it is;
- subdivided once (edges of 1.7 px; subdivided above 2 px);
- subdivided twice (edges of 0.9 px; subdivided above 1 px, the default).

Reports the mean vertex error over all times (% of the rest mesh's diagonal) with its ratio to the baseline's,
the worst time, the Gaussians fitted and the time.

Then the same on real data: a mesh sequence of ../shared/data/mesh-sequences (default horse-gallop) rendered with
Blender as bench_fit4d.py does (8 views × 16 frames × 128², cached in --work), and its rest mesh decimated with
Blender's Decimate modifier (collapse, --ratio 0.03: the horse's 8,431 vertices become 256, edges of 4 px) as a
user's proxy would be. A decimated mesh's vertices are not the sequence's, so the error is each vertex's distance
from the true surface at its time (300,000 points spread over it, moving with it), in % of the animation's
bounding-box diagonal; baseline: the proxy fitted as it is, and the proxy left unmoved.

    .venv/bin/python benchmarks/bench_low_poly.py [--steps 100] [--motions travel hinge] [--sequences horse-gallop]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import trimesh
from rich.console import Console
from rich.table import Table
from scipy.spatial import cKDTree

BENCHMARKS = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCHMARKS), str(BENCHMARKS.parent / "tests" / "backend" / "gaussians4d")]
from moving_scenes import cameras, hinge_pose, hinge_video, travel_pose, travel_video  # noqa: E402
from render_views import SEQUENCES, frame_indices, render_sequence_views  # noqa: E402

from backend.formats.mesh_sequence import load_mesh_sequence  # noqa: E402
from backend.gaussians4d.data import load_transforms  # noqa: E402
from backend.gaussians4d.fit import PRESETS, fit  # noqa: E402

SIZE, VIEWS, TIMES = 48, 6, np.linspace(0.0, 1.0, 8)
EXTENTS = np.array([1.2, 0.4, 0.4])
MOTIONS = {"travel": (travel_video, travel_pose), "hinge": (hinge_video, hinge_pose)}
SETTINGS = {"baseline: as it is": 4.0, "subdivided once": 2.0, "subdivided twice (default)": 1.0}  # max edge, px
REAL_SETTINGS = {  # max edge, px: the decimated horse's 4.0 px edges are subdivided 0, 1, 2, 3 times
    "baseline: as it is": 1e9,
    "subdivided above 4 px (the rule before)": 4.0,
    "subdivided above 2 px": 2.0,
    "subdivided above 1 px (default)": 1.0,
}
COLUMNS = ("data", "setting", "mean error", "× baseline", "worst time", "Gaussians", "time")


def low_poly_box() -> tuple[np.ndarray, np.ndarray]:
    """The captured box as a coarse mesh: 122 vertices, with a ring at x = 0 where the hinge bends."""
    box = trimesh.creation.box(extents=EXTENTS)
    vertices, faces = trimesh.remesh.subdivide_to_size(box.vertices, box.faces, max_edge=0.3)
    mesh = trimesh.Trimesh(vertices, faces)  # merges the corners subdivide_to_size repeats
    return mesh.vertices.astype(np.float32), mesh.faces.astype(np.int32)


def decimated(vertices: np.ndarray, faces: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """The mesh through Blender's Decimate modifier (collapse, triangulated), as an artist would make a proxy."""
    import bpy

    mesh = bpy.data.meshes.new("proxy")
    mesh.from_pydata(vertices.tolist(), [], faces.tolist())
    obj = bpy.data.objects.new("proxy", mesh)
    bpy.context.scene.collection.objects.link(obj)
    modifier = obj.modifiers.new("decimate", "DECIMATE")
    modifier.ratio, modifier.use_collapse_triangulate = ratio, True
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).to_mesh()
    out = np.array([v.co[:] for v in evaluated.vertices], np.float32)
    out_faces = np.array([p.vertices[:] for p in evaluated.polygons], np.int32)
    bpy.data.objects.remove(obj)
    bpy.data.meshes.remove(mesh)
    return out, out_faces


class SurfaceDistance:
    """Distance of points from a deforming mesh's surface at each frame: to `count` points spread over it by area
    (fixed barycentric mixes of its faces' corners, so they move with it), through a k-d tree per frame."""

    def __init__(self, frames: np.ndarray, faces: np.ndarray, count: int = 300_000, seed: int = 0):
        rng = np.random.default_rng(seed)
        area = trimesh.Trimesh(frames[0], faces, process=False).area_faces
        self.corners = faces[rng.choice(len(faces), count, p=area / area.sum())]
        r1, r2 = np.sqrt(rng.random(count)), rng.random(count)
        self.weights = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], axis=1)[..., None]
        self.frames = np.asarray(frames, np.float64)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Mean distance per frame of points (T, N, 3)."""
        out = []
        for frame, at in zip(self.frames, points, strict=True):
            surface = (frame[self.corners] * self.weights).sum(axis=1)
            out.append(cKDTree(surface).query(np.asarray(at, np.float64))[0].mean())
        return np.asarray(out)


def add_rows(table, console, data, rows, baseline=None) -> None:
    """rows: (setting, error per time (fraction), Gaussians, seconds) → table rows with the ratio to the first."""
    for setting, error, gaussians, seconds in rows:
        baseline = error.mean() if baseline is None else baseline
        table.add_row(
            data, setting, f"{100 * error.mean():.2f} %", f"{error.mean() / baseline:.2f}×",
            f"{100 * error.max():.2f} %", gaussians, seconds,
        )  # fmt: skip
        console.print(f"{data} / {setting}: {100 * error.mean():.2f} % ({seconds})")


def synthetic(args, console, table) -> None:
    vertices, faces = low_poly_box()
    diagonal = float(np.linalg.norm(vertices.max(0) - vertices.min(0)))
    for motion in args.motions:
        render, pose = MOTIONS[motion]
        video = render(cameras(VIEWS, SIZE), TIMES, SIZE)
        truth = np.stack([pose(vertices, t) for t in TIMES])
        rows = []
        for name, max_edge_px in SETTINGS.items():
            preset = replace(PRESETS["fast"], mesh_max_edge_px=max_edge_px)
            t0 = time.perf_counter()
            result = fit(video, preset=preset, rest_mesh=(vertices, faces), iterations=args.steps)
            seconds = time.perf_counter() - t0
            error = np.linalg.norm(result.vertex_frames(TIMES) - truth, axis=-1).mean(axis=1) / diagonal
            rows.append((name, error, f"{len(result.model):,}", f"{seconds:.0f} s"))
            add_rows(table, console, f"box, {motion}", rows[-1:], rows[0][1].mean())


def real(name: str, args, console, table) -> None:
    data = args.work / f"{name}-8x16x128"
    if not (data / "transforms_test.json").is_file():
        render_sequence_views(SEQUENCES / f"{name}.npz", data, views=8, frames=16, size=128, test_views=3)
    train = load_transforms(data, "train")
    sequence = load_mesh_sequence(SEQUENCES / f"{name}.npz")
    truth = np.asarray(sequence.frames[frame_indices(sequence.frame_count, 16)], np.float32)
    distance = SurfaceDistance(truth, np.asarray(sequence.faces))
    diagonal = float(np.linalg.norm(truth.reshape(-1, 3).max(0) - truth.reshape(-1, 3).min(0)))
    proxy = decimated(np.asarray(sequence.rest, np.float64), np.asarray(sequence.faces), args.ratio)
    label = f"{name}, {len(proxy[0])}-vertex proxy"
    rows = []
    for setting, max_edge_px in REAL_SETTINGS.items():
        preset = replace(PRESETS["fast"], mesh_max_edge_px=max_edge_px)
        t0 = time.perf_counter()
        result = fit(train, preset=preset, rest_mesh=proxy, iterations=args.steps)
        seconds = time.perf_counter() - t0
        error = distance(result.vertex_frames(train.time_values())) / diagonal
        rows.append((setting, error, f"{len(result.model):,}", f"{seconds:.0f} s"))
        add_rows(table, console, label, rows[-1:], rows[0][1].mean())
    unmoved = distance(np.broadcast_to(proxy[0], (len(truth), *proxy[0].shape))) / diagonal
    add_rows(table, console, label, [("baseline: left unmoved", unmoved, "-", "-")], rows[0][1].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="photometric steps of the mesh path")
    parser.add_argument("--motions", nargs="*", choices=sorted(MOTIONS), default=["travel", "hinge"])
    parser.add_argument("--sequences", nargs="*", default=["horse-gallop"], help="real mesh sequences ([] to skip)")
    parser.add_argument("--ratio", type=float, default=0.03, help="Blender Decimate ratio for the real proxies")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tessera-bench-fit4d"), help="renders' cache")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console(width=150)
    table = Table(
        title=f"Low-poly rest meshes, mesh path 1, {args.steps} steps. Box: {VIEWS} views × {len(TIMES)} times × "
        f"{SIZE}², vertex error in % of its diagonal. Real: 8 views × 16 frames × 128², distance from the true "
        "surface in % of the animation's diagonal"
    )
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("data", "setting") else "right")
    synthetic(args, console, table)
    for name in args.sequences:
        real(name, args, console, table)
    console.print(table)


if __name__ == "__main__":
    main()

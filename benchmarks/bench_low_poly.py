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

    .venv/bin/python benchmarks/bench_low_poly.py [--steps 100] [--motions travel hinge]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "backend" / "gaussians4d"))
from moving_scenes import cameras, hinge_pose, hinge_video, travel_pose, travel_video  # noqa: E402

from backend.gaussians4d.fit import PRESETS, fit  # noqa: E402

SIZE, VIEWS, TIMES = 48, 6, np.linspace(0.0, 1.0, 8)
EXTENTS = np.array([1.2, 0.4, 0.4])
MOTIONS = {"travel": (travel_video, travel_pose), "hinge": (hinge_video, hinge_pose)}
SETTINGS = {"baseline: as it is": 4.0, "subdivided once": 2.0, "subdivided twice (default)": 1.0}  # max edge, px


def low_poly_box() -> tuple[np.ndarray, np.ndarray]:
    """The captured box as a coarse mesh: 122 vertices, with a ring at x = 0 where the hinge bends."""
    box = trimesh.creation.box(extents=EXTENTS)
    vertices, faces = trimesh.remesh.subdivide_to_size(box.vertices, box.faces, max_edge=0.3)
    mesh = trimesh.Trimesh(vertices, faces)  # merges the corners subdivide_to_size repeats
    return mesh.vertices.astype(np.float32), mesh.faces.astype(np.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="photometric steps of the mesh path")
    parser.add_argument("--motions", nargs="+", choices=sorted(MOTIONS), default=["travel", "hinge"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    vertices, faces = low_poly_box()
    diagonal = float(np.linalg.norm(vertices.max(0) - vertices.min(0)))
    table = Table(title=f"Low-poly rest mesh ({len(vertices)} vertices), {VIEWS} views × {len(TIMES)} times × {SIZE}²")
    for column in ("motion", "setting", "mean error", "× baseline", "worst time", "Gaussians", "time"):
        table.add_column(column, justify="left" if column in ("motion", "setting") else "right")
    for motion in args.motions:
        render, pose = MOTIONS[motion]
        video = render(cameras(VIEWS, SIZE), TIMES, SIZE)
        truth = np.stack([pose(vertices, t) for t in TIMES])
        baseline = None
        for name, max_edge_px in SETTINGS.items():
            preset = replace(PRESETS["fast"], mesh_max_edge_px=max_edge_px)
            t0 = time.perf_counter()
            result = fit(video, preset=preset, rest_mesh=(vertices, faces), iterations=args.steps)
            seconds = time.perf_counter() - t0
            frames = result.vertex_frames(TIMES)
            error = np.linalg.norm(frames - truth, axis=-1).mean(axis=1) / diagonal
            baseline = error.mean() if baseline is None else baseline
            table.add_row(
                motion, name, f"{100 * error.mean():.2f} %", f"{error.mean() / baseline:.2f}×",
                f"{100 * error.max():.2f} %", f"{len(result.model):,}", f"{seconds:.0f} s",
            )  # fmt: skip
            console.print(f"{motion} / {name}: {100 * error.mean():.2f} % in {seconds:.0f} s")
    console.print(table)


if __name__ == "__main__":
    main()

"""Animate3D's reconstruction stage on ideal generated views: how well `backend.mvdiff.animate` moves an object's
own mesh when the 4 generated views are exactly right (renders of the true animation), with no alpha (estimated
from the white background, as for generated views).

    .venv/bin/python benchmarks/bench_animate_reconstruction.py [--sequence horse-gallop] [--frames 16]
        [--size 128] [--preset fast] [--iterations N] [--refine-steps 0] [--threads 1] [--work DIR]

Renders ../shared/data/mesh-sequences/NAME.npz with Blender from 4 cameras at 90° steps and 15° elevation (the
model's ring) over `frames` times (benchmarks/render_views.py, cached in --work), then `animate_mesh` with the
sequence's rest mesh. Reports the mean vertex error against the true animation in % of the bounding-box
diagonal (mean over frames, and at the worst frame), against the baseline of the first frame's mesh left unmoved
(the rest mesh is the first frame, as for a static object whose renders are frame 0), the
time, and (with --refine-steps) the same after the stage-2 refinement without an SDS term. What this does not
measure: the diffusion model (there is no trained one here), so it is the upper bound of what stage 1 gives.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from render_views import frame_indices, render_sequence_views  # noqa: E402

from backend.formats.mesh_sequence import load_mesh_sequence  # noqa: E402
from backend.gaussians4d.cameras import nerf_c2w  # noqa: E402
from backend.gaussians4d.data import load_transforms  # noqa: E402
from backend.mvdiff.animate import animate  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mesh-sequences"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequence", default="horse-gallop")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--iterations", type=int, default=0)
    parser.add_argument("--refine-steps", type=int, default=0)
    parser.add_argument("--true-alpha", action="store_true", help="use the renders' alpha instead of estimating it")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default="/tmp/tessera-bench-animate")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    npz = DATA / f"{args.sequence}.npz"
    folder = Path(args.work) / f"{args.sequence}-4v{args.frames}f{args.size}"
    if not (folder / "transforms_train.json").is_file():
        render_sequence_views(npz, folder, views=4, frames=args.frames, size=args.size, test_views=0)
    video = load_transforms(folder, "train")
    f, s = args.frames, args.size
    frames = video.images.reshape(4, f, s, s, 3)  # the capture is view-major
    c2w = nerf_c2w(video.cameras).reshape(4, f, 4, 4)[:, 0]
    fov = 2 * np.arctan(0.5 * s / float(video.cameras.Ks[0, 0, 0]))
    sequence = load_mesh_sequence(npz)
    truth = sequence.frames[frame_indices(sequence.frame_count, f)]
    rest, faces = truth[0], sequence.faces  # the static object is the first frame (what animate_object renders)
    diagonal = float(np.linalg.norm(rest.max(0) - rest.min(0)))

    def error(positions: np.ndarray) -> tuple[float, float]:
        per_frame = np.linalg.norm(positions - truth, axis=-1).mean(axis=1) / diagonal * 100
        return float(per_frame.mean()), float(per_frame.max())

    start = time.perf_counter()
    alphas = video.alphas.reshape(4, f, s, s) if args.true_alpha else None
    out = animate(
        frames, alphas, c2w, fov, (rest, faces), preset=args.preset, iterations=args.iterations or None, sds_steps=0
    )
    fitted = time.perf_counter() - start
    rows = [("rest mesh unmoved (baseline)", *error(np.broadcast_to(rest, truth.shape)), 0.0)]
    rows.append((f"stage 1: {out.fit.iterations} fit steps", *error(out.fit.vertex_frames(out.times)), fitted))
    if args.refine_steps:
        from backend.mvdiff.animate import generated_video, refine

        start = time.perf_counter()
        refine(out.fit, generated_video(frames, alphas, c2w, fov), sds=None, steps=args.refine_steps)
        rows.append(
            (
                f"+ stage 2 without SDS: {args.refine_steps} steps",
                *error(out.fit.vertex_frames(out.times)),
                time.perf_counter() - start,
            )
        )
    alpha = "true alpha" if args.true_alpha else "alpha estimated from white"
    table = Table(title=f"{args.sequence}: 4 views × {f} frames × {s}², {len(rest)} vertices, {alpha}")
    for column in ("method", "mean vertex error % diag", "worst frame %", "seconds"):
        table.add_column(column)
    for name, mean, worst, secs in rows:
        table.add_row(name, f"{mean:.2f}", f"{worst:.2f}", f"{secs:.0f}")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()

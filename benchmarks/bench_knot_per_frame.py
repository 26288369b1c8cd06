"""A knot per frame (the `quality` preset): control points fitted with a little smoothing, against plain least squares.

    .venv/bin/python benchmarks/bench_knot_per_frame.py [--sequence horse-gallop] [--views 8] [--frames 48]
        [--size 64] [--iterations 300] [--threads 1]

The `quality` preset gives the trajectories one knot per frame. The free Gaussians' rigid start (and the mesh
path's graph) fit those control points to one value per frame (`model.spline_controls`). Plain least squares
there is ill-conditioned: the second and second-to-last control points swing to ±100, and the fit's smoothness
term on them then outweighs the images. Both fits below are `fit(preset="quality", iterations=N)` on the same
Blender renders (`render_views.py`, 3 held-out views; cached in /tmp/tessera-bench-fit4d). The baseline sets
`model.SPLINE_SMOOTHING` to 0, which is plain least squares, as before. The table reports the held-out
PSNR/SSIM over all frames, the loss at the end and its (weighted) smoothness term, mesh path 2's motion (the true
mesh at the first frame moved by the fitted Gaussians, in % of the animation's bounding-box diagonal), and the
fit time.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fit4d import true_frames  # noqa: E402
from render_views import SEQUENCES, render_sequence_views  # noqa: E402

from backend.gaussians4d import model as model_module  # noqa: E402
from backend.gaussians4d.data import load_transforms  # noqa: E402
from backend.gaussians4d.fit import PRESETS, _second_difference, evaluate, fit  # noqa: E402
from backend.gaussians4d.mesh import deform_mesh  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequence", default="horse-gallop")
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tessera-bench-fit4d"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    npz = SEQUENCES / f"{args.sequence}.npz"
    data = args.work / f"{args.sequence}-{args.views}x{args.frames}x{args.size}"
    if not (data / "transforms_test.json").is_file():
        render_sequence_views(npz, data, views=args.views, frames=args.frames, size=args.size, test_views=3)
    train, test = load_transforms(data, "train"), load_transforms(data, "test")
    preset = dataclasses.replace(PRESETS["quality"], iterations=args.iterations)
    _, truth, diag = true_frames(npz, args.frames)
    times = train.time_values()
    still = np.linalg.norm(truth[:1] - truth, axis=-1).mean() / diag * 100

    lo, hi = train.bounds()
    extent = float(np.linalg.norm(np.asarray(hi, np.float64) - np.asarray(lo, np.float64)))  # as the fit's

    table = Table(title=f"{args.sequence}, {train.describe()} × {args.size}², quality preset, {args.iterations} steps")
    for column in ("control points", "held-out PSNR / SSIM", "loss at the end", "its smoothness term",
                   "path 2's motion (unmoved)", "fit time"):  # fmt: skip
        table.add_column(column, justify="right")
    for name, smoothing in (("baseline: plain least squares", 0.0), ("ours: with smoothing", 1e-4)):
        model_module.SPLINE_SMOOTHING = smoothing
        start = time.perf_counter()
        result = fit(train, preset=preset, device="cpu")
        seconds = time.perf_counter() - start
        m = result.model
        scores = evaluate(m, test)
        with torch.no_grad():
            smooth = preset.smooth_weight * float(
                _second_difference(m.mean_ctrl) / extent**2 + _second_difference(m.rot_ctrl)
            )
        moved = deform_mesh(m, truth[0], times, t_ref=float(times[0]))
        error = np.linalg.norm(moved - truth, axis=-1).mean() / diag * 100
        table.add_row(
            name,
            f"{scores['psnr']:.2f} dB / {scores['ssim']:.3f}",
            f"{result.history[-1]['loss']:.4f}",
            f"{smooth:.4f}",
            f"{error:.2f} % ({still:.2f} %)",
            f"{seconds:.0f} s",
        )
    model_module.SPLINE_SMOOTHING = 1e-4
    Console(width=140).print(table)


if __name__ == "__main__":
    main()

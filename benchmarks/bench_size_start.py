"""Free Gaussians on objects that change size: the rigid start with a size per time, against it without.

    .venv/bin/python benchmarks/bench_size_start.py [--kinds grow shrink popin slide] [--iterations 300]
        [--views 8] [--times 8] [--size 64] [--threads 1]

Scene: a box surface of 2,000 small coloured Gaussians (0.6 × 0.4 × 0.3 half sizes), rendered with our
rasterizer over white from a ring of `views` cameras at `times` evenly spaced times, and from 2 held-out
cameras at other azimuths. Its motion per kind: "grow" 0.3 → 1× its size, "shrink" 1 → 0.3×, "popin"
0.05 → 1× (a pop-in), "slide" the same size moving 0.6 sideways (the control: the size is left out there).
Each fit is `fit(preset="fast", iterations=N)`. Baseline: the same fit with the size per time switched off
(`fit.GROWS` set to infinity, so the start is rigid as before). Held-out PSNR/SSIM over all times.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from backend.gaussians4d import fit as fit_module
from backend.gaussians4d.cameras import Cameras, ring_cameras
from backend.gaussians4d.data import MultiViewVideo
from backend.gaussians4d.fit_setup import prepare_frames
from backend.gaussians4d.mesh_pose import size_change
from backend.gaussians4d.rasterize import rasterize

SIZES = {
    "grow": lambda t: 0.3 + 0.7 * t,
    "shrink": lambda t: 1.0 - 0.7 * t,
    "popin": lambda t: 0.05 + 0.95 * t,
    "slide": lambda t: 1.0,
}


def box_surface(count: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points on a box's faces and smooth colours over them."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1.0, 1.0, (count, 3))
    axis = np.abs(points).argmax(1)
    points[np.arange(count), axis] = np.sign(points[np.arange(count), axis])
    points *= np.array([0.6, 0.4, 0.3])
    colours = 0.5 + 0.5 * np.stack(
        [np.sin(6 * points[:, 0]), np.cos(5 * points[:, 1]), np.sin(4 * points[:, 2] + 1)], 1
    )
    return points, np.clip(colours, 0.0, 1.0)


def render_video(kind: str, views: int, times: np.ndarray, size: int, start_deg: float = 0.0) -> MultiViewVideo:
    points, colours = box_surface()
    cams = ring_cameras(views, radius=3.5, elevation_deg=20, fov_deg=40, width=size, height=size, start_deg=start_deg)
    images, alphas, entry_times = [], [], []
    for t in times:
        scale = SIZES[kind](t)
        at = points * scale + ([0.6 * t - 0.3, 0.0, 0.0] if kind == "slide" else 0.0)
        n = len(at)
        with torch.no_grad():
            rgb, alpha, _ = rasterize(
                torch.as_tensor(at, dtype=torch.float32),
                torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
                torch.full((n, 3), 0.04 * scale),
                torch.full((n,), 0.95),
                torch.as_tensor(colours, dtype=torch.float32),
                torch.as_tensor(cams.viewmats),
                torch.as_tensor(cams.Ks),
                size,
                size,
                backgrounds=torch.ones(views, 3),
            )
        images.append(rgb.clamp(0, 1).numpy())
        alphas.append(alpha[..., 0].numpy())
        entry_times += [float(t)] * views
    return MultiViewVideo(
        np.concatenate(images),
        np.concatenate(alphas),
        Cameras(np.tile(cams.viewmats, (len(times), 1, 1)), np.tile(cams.Ks, (len(times), 1, 1)), size, size),
        np.asarray(entry_times, np.float32),
        [f"e{i}" for i in range(len(entry_times))],
    )


def fit_and_score(train, test, iterations: int, with_size: bool) -> tuple[dict, float]:
    saved = fit_module.GROWS
    fit_module.GROWS = saved if with_size else math.inf
    try:
        started = time.perf_counter()
        result = fit_module.fit(train, preset="fast", iterations=iterations)
        seconds = time.perf_counter() - started
    finally:
        fit_module.GROWS = saved
    return fit_module.evaluate(result.model, test, background=result.background), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", choices=sorted(SIZES), default=["grow", "shrink", "popin", "slide"])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--times", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    times = np.linspace(0.0, 1.0, args.times)
    table = Table(
        title=f"Held-out views, {args.views} views × {args.times} times × {args.size}², {args.iterations} steps"
    )
    for column in ("object", "silhouettes' size change", "baseline: rigid start", "size per time", "gain", "time"):
        table.add_column(column, justify="right")
    for kind in args.kinds:
        train = render_video(kind, args.views, times, args.size)
        test = render_video(kind, 2, times, args.size, start_deg=22.5)
        frames = prepare_frames(train, args.size, torch.device("cpu"))
        change = size_change(frames.alphas, train.time_windows())
        base, base_s = fit_and_score(train, test, args.iterations, with_size=False)
        ours, ours_s = fit_and_score(train, test, args.iterations, with_size=True)
        table.add_row(
            kind,
            f"{change:.2f}×" + (" (size used)" if change > fit_module.GROWS else " (left out)"),
            f"{base['psnr']:.1f} dB / {base['ssim']:.3f}",
            f"{ours['psnr']:.1f} dB / {ours['ssim']:.3f}",
            f"{ours['psnr'] - base['psnr']:+.1f} dB",
            f"{base_s:.0f} s / {ours_s:.0f} s",
        )
        console.print(f"{kind}: done", highlight=False)
    console.print(table)


if __name__ == "__main__":
    main()

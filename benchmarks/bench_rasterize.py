"""CPU speed of the pure-PyTorch Gaussian rasterizer (forward + backward), against a dense reference.

    .venv/bin/python benchmarks/bench_rasterize.py [--threads 1] [--cameras 8] [--size 128]
        [--counts 1000 2000 5000 10000] [--dense-counts 250 500] [--repeats 3]

Scene: N Gaussians uniformly inside a ball of radius 0.5 (an object), random rotations, scales uniform in
[0.015, 0.04] (σ ≈ 1–3 px in these views), opacities in [0.3, 0.9], seen by a ring of C cameras at distance
2.5 with a 40° field of view (the object spans about 70 px of a 128 px image). Loss = sum of squares of the
rgb and alpha images; backward fills the gradients of means, quats, scales, opacities, colours and means2d.
Times are wall-clock medians of `--repeats` runs after one warm-up; "CPU s" is the process CPU time of
forward + backward (all threads), a steadier figure when other jobs share the cores.

"dense" is `composite_dense`: every pixel against every visible Gaussian (same compositing rules), run one
camera at a time to bound memory; its ratio column is dense time / ours at the same N.

    python benchmarks/bench_rasterize.py --parity [--cameras 16 --size 512 --counts 2000 20000]   # CUDA + gsplat

--parity (on a GPU, with gsplat; benchmarks/gpu_check.sh runs it): the same scenes through both backends on
CUDA: how far our PyTorch path's images and gradients are from gsplat's, and the time of each (median of
`--repeats` after a warm-up, synchronised), gsplat's as the ratio's baseline.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from backend.gaussians4d.cameras import ring_cameras
from backend.gaussians4d.rasterize import composite_dense, project_gaussians, rasterize


def make_scene(n: int, cameras: int, size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    means = direction * 0.5 * torch.rand(n, 1, generator=g) ** (1 / 3)
    params = {
        "means": means,
        "quats": torch.randn(n, 4, generator=g),
        "scales": 0.015 + 0.025 * torch.rand(n, 3, generator=g),
        "opacities": 0.3 + 0.6 * torch.rand(n, generator=g),
        "colors": torch.rand(n, 3, generator=g),
    }
    cams = ring_cameras(cameras, radius=2.5, elevation_deg=20, fov_deg=40, width=size, height=size)
    return params, torch.from_numpy(cams.viewmats), torch.from_numpy(cams.Ks)


def time_ours(params, viewmats, Ks, size):
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    t0, c0 = time.perf_counter(), time.process_time()
    rgb, alpha, meta = rasterize(**leaves, viewmats=viewmats, Ks=Ks, width=size, height=size, backend="torch")
    t1 = time.perf_counter()
    (rgb.square().sum() + alpha.square().sum()).backward()
    t2, c2 = time.perf_counter(), time.process_time()
    return t1 - t0, t2 - t1, c2 - c0


def time_dense(params, viewmats, Ks, size):
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    forward = backward = 0.0
    c0 = time.process_time()
    for c in range(len(viewmats)):
        t0 = time.perf_counter()
        m2d, conics, depths, radii, _ = project_gaussians(
            leaves["means"], leaves["quats"], leaves["scales"], viewmats[c : c + 1], Ks[c : c + 1], size, size
        )
        background = torch.zeros(1, 3)
        rgb, alpha = composite_dense(
            m2d, conics, depths, radii, leaves["opacities"], leaves["colors"], background, size, size
        )
        t1 = time.perf_counter()
        (rgb.square().sum() + alpha.square().sum()).backward()
        t2 = time.perf_counter()
        forward, backward = forward + t1 - t0, backward + t2 - t1
    return forward, backward, time.process_time() - c0


def render_and_grads(params, viewmats, Ks, size, backend):
    """rgb, alpha, the inputs' gradients and the seconds of forward + backward (CUDA synchronised)."""
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    rgb, alpha, _ = rasterize(**leaves, viewmats=viewmats, Ks=Ks, width=size, height=size, backend=backend)
    (rgb.square().sum() + alpha.square().sum()).backward()
    torch.cuda.synchronize()
    return rgb.detach(), alpha.detach(), {k: v.grad for k, v in leaves.items()}, time.perf_counter() - t0


def parity(args) -> None:
    table = Table(title=f"PyTorch path against gsplat on CUDA, {args.cameras} cameras × {args.size}²")
    for column in ("N", "max |Δrgb|", "mean |Δrgb|", "max |Δalpha|", "worst gradient Δ (relative)",
                   "gsplat s", "ours s", "ours / gsplat"):  # fmt: skip
        table.add_column(column, justify="right")
    for n in args.counts:
        params, viewmats, Ks = make_scene(n, args.cameras, args.size)
        params, viewmats, Ks = {k: v.cuda() for k, v in params.items()}, viewmats.cuda(), Ks.cuda()
        runs = {}
        for backend in ("gsplat", "torch"):
            render_and_grads(params, viewmats, Ks, args.size, backend)  # warm-up
            results = [render_and_grads(params, viewmats, Ks, args.size, backend) for _ in range(args.repeats)]
            runs[backend] = results[-1][:3], statistics.median(r[3] for r in results)
        (rgb_g, alpha_g, grads_g), t_g = runs["gsplat"]
        (rgb_t, alpha_t, grads_t), t_t = runs["torch"]
        worst = max(((grads_t[k] - grads_g[k]).norm() / grads_g[k].norm()).item() for k in grads_g)
        table.add_row(
            f"{n:,}",
            f"{(rgb_t - rgb_g).abs().max().item():.1e}",
            f"{(rgb_t - rgb_g).abs().mean().item():.1e}",
            f"{(alpha_t - alpha_g).abs().max().item():.1e}",
            f"{worst:.1e}",
            f"{t_g:.4f}",
            f"{t_t:.4f}",
            f"{t_t / t_g:.1f}×",
        )
    Console(width=130).print(table)


def median_times(fn, repeats, *args):
    """Median forward, backward (wall) and forward + backward CPU time (all threads) over `repeats` runs."""
    fn(*args)  # warm-up
    runs = [fn(*args) for _ in range(repeats)]
    return tuple(statistics.median(r[i] for r in runs) for i in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--cameras", type=int, help="default 8 (16 with --parity)")
    parser.add_argument("--size", type=int, help="image width and height in pixels, default 128 (512 with --parity)")
    parser.add_argument("--counts", type=int, nargs="+", help="default 1000 2000 5000 10000 (2000 20000 with --parity)")
    parser.add_argument("--dense-counts", type=int, nargs="*", default=[250, 500])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parity", action="store_true", help="CUDA: our path against gsplat (images, time)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # --parity: the quality preset's images by default
    defaults = (16, 512, [2000, 20000]) if args.parity else (8, 128, [1000, 2000, 5000, 10000])
    args.cameras = args.cameras or defaults[0]
    args.size = args.size or defaults[1]
    args.counts = args.counts or defaults[2]
    if args.parity:
        return parity(args)

    table = Table(title=f"rasterize, {args.cameras} cameras × {args.size}², {args.threads} thread(s), CPU")
    for column in ("N", "renderer", "forward s", "backward s", "total s", "CPU s", "dense / ours"):
        table.add_column(column, justify="right")
    ours = {}
    for n in sorted(set(args.counts) | set(args.dense_counts)):
        scene = make_scene(n, args.cameras, args.size)
        f, b, cpu = median_times(time_ours, args.repeats, *scene, args.size)
        ours[n] = f + b
        table.add_row(str(n), "ours (4-px tiles)", f"{f:.3f}", f"{b:.3f}", f"{f + b:.3f}", f"{cpu:.3f}", "")
        if n in args.dense_counts:
            f, b, cpu = median_times(time_dense, 1, *scene, args.size)
            ratio = f"{(f + b) / ours[n]:.0f}×"
            table.add_row(str(n), "dense reference", f"{f:.3f}", f"{b:.3f}", f"{f + b:.3f}", f"{cpu:.3f}", ratio)
    Console(width=110).print(table)


if __name__ == "__main__":
    main()

"""4D Gaussians on a real mesh animation: held-out image quality, fit time and memory, render speed, and the
mesh path's geometry — each against a baseline run in this script.

    .venv/bin/python benchmarks/bench_fit4d.py [--sequence horse-gallop] [--views 8 --frames 16 --size 128]
        [--pattern stripes|detailed] [--lighting flat|studio] [--follow] [--preset fast] [--iterations N] [--threads 2]
        [--device cpu|cuda] [--color-motion] [--sh-degree N] [--no-baseline] [--no-mesh] [--mesh-only]

1. Renders the sequence (../shared/data/mesh-sequences/NAME.npz) with Blender from a ring of `views` training
   cameras and `test_views` held-out cameras at other azimuths/elevations, at `frames` times
   (benchmarks/render_views.py; cached in --work), coloured with smooth stripes or, with --pattern detailed,
   stripes plus finer ones (as a textured asset), lit flat as the add-on's capture or, with --lighting studio, by
   Workbench's studio light (shading that changes with the view and as parts turn: a lit capture).
2. Fits with the preset and reports held-out PSNR/SSIM over all frames, fit time and peak memory. Baseline:
   the same fit with one trajectory control point (a static 3DGS fit of all frames: what the deformation
   buys). Then mesh path 2's motion: the sequence's true mesh at the first captured time moved by the fitted
   Gaussians (deform_mesh, as path 2 moves the mesh it extracts), against the same mesh left unmoved.
3. Render speed at 800² (the 4DGaussians anchor's resolution) and at the capture size.
4. Mesh path 1 (Animate3D's): the sequence's own rest mesh bound to the Gaussians, fitted with ARAP; mean
   vertex error against the true animation, in % of the animation's bounding-box diagonal (all frames: the
   issue's measure) and of the rest mesh's own diagonal (stricter for an object that travels). Baselines: the
   rest mesh left unmoved, and the mesh placed by the rigid poses found from the silhouettes alone.
Anchors (reference/anchors-4d.md §7): Animate3D's mesh fit ≈ 15 min and ≥ 24 GB on a GPU; 4DGaussians renders
at 82 FPS at 800² on an RTX 3090.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from render_views import LIGHTING, PATTERNS, SEQUENCES, frame_indices, render_sequence_views  # noqa: E402

from backend.formats.mesh_sequence import load_mesh_sequence  # noqa: E402
from backend.gaussians4d.cameras import ring_cameras  # noqa: E402
from backend.gaussians4d.data import load_transforms  # noqa: E402
from backend.gaussians4d.fit import PRESETS, evaluate, fit, render  # noqa: E402
from backend.gaussians4d.fit_setup import prepare_frames  # noqa: E402
from backend.gaussians4d.mesh import deform_mesh  # noqa: E402
from backend.gaussians4d.mesh_pose import track_rigid  # noqa: E402


def peak_memory_gb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def progress_printer(t0: float, every: float = 15.0):
    """A fit's progress, printed at most every `every` seconds (a long fit on a lent GPU shows its rate even when
    its call runs out of time)."""
    last = [t0]

    def show(stage: str, fraction: float, message: str) -> None:
        now = time.perf_counter()
        if now - last[0] >= every:
            last[0] = now
            print(f"  {now - t0:6.0f} s  {stage} {fraction:4.0%}  {message}", flush=True)

    return show


class Checkpoints:
    """Held-out PSNR every `every` steps of a fit (a fit's preview), printed with the fit's time so far less the
    time spent here: the PSNR a shorter fit would have reached, read off one run."""

    def __init__(self, test, every: int, device: str):
        self.test, self.every, self.cuda = test, every, device.startswith("cuda")
        self.t0, self.spent = time.perf_counter(), 0.0
        self.targets = {
            float(t): torch.as_tensor(test.images[np.flatnonzero(test.times == t)], device=device)
            for t in test.time_values()
        }

    def __call__(self, step: int, model) -> None:
        if step % self.every:
            return
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fitted = start - self.t0 - self.spent
        errors = []
        with torch.no_grad():
            for t, target in self.targets.items():
                rgb, _, _ = render(model, self.test.cameras.subset(np.flatnonzero(self.test.times == t)), t)
                errors.append((rgb.clamp(0, 1) - target).square().mean(dim=(1, 2, 3)))
        psnr = float((-10 * torch.log10(torch.cat(errors).clamp_min(1e-10))).mean())
        self.spent += time.perf_counter() - start
        print(f"  checkpoint: step {step}, {fitted:.0f} s of fitting, held-out PSNR {psnr:.2f} dB", flush=True)


def timed_fit(video, preset, device: str, rest_mesh=None, checkpoints: Checkpoints | None = None):
    """The fit and its seconds (less any checkpoints' evaluation time)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    if checkpoints is not None:
        checkpoints.t0 = t0
    result = fit(
        video, preset=preset, rest_mesh=rest_mesh, device=device, progress=progress_printer(t0), preview=checkpoints
    )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return result, time.perf_counter() - t0 - (0.0 if checkpoints is None else checkpoints.spent)


def render_fps(model, size: int, center, radius: float, device: str, repeats: int = 5) -> float:
    cams = ring_cameras(1, center=center, radius=radius, width=size, height=size, up_axis="Y")
    render(model, cams, 0.5)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(repeats):
        render(model, cams, i / max(1, repeats - 1))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return repeats / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequence", default="horse-gallop")
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--test-views", type=int, default=3)
    parser.add_argument("--pattern", default="stripes", choices=PATTERNS, help="the renders' vertex colours")
    parser.add_argument("--lighting", default="flat", choices=LIGHTING, help="the renders' light (render_views)")
    parser.add_argument("--follow", action="store_true", help="render with rings that follow the object")
    parser.add_argument("--color-motion", action="store_true", help="fit colours that change over time")
    parser.add_argument("--sh-degree", type=int, default=0, help="fit view-dependent colour (SH bands 0-3)")
    parser.add_argument("--preset", default="fast", choices=sorted(PRESETS))
    parser.add_argument("--iterations", type=int, default=0, help="steps of both fits (0: the preset's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 was fastest on shared cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tessera-bench-fit4d"))
    parser.add_argument("--sequences", type=Path, default=SEQUENCES, help="the folder of NAME.npz mesh sequences")
    parser.add_argument("--checkpoints", type=int, default=0, help="held-out PSNR every N steps (N: × preview_every)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the static-fit baseline")
    parser.add_argument("--no-mesh", action="store_true", help="skip mesh path 1")
    parser.add_argument("--mesh-only", action="store_true", help="only mesh path 1 (no free fit, no FPS)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    console = Console(width=150)

    npz = args.sequences / f"{args.sequence}.npz"
    suffix = ("" if args.pattern == "stripes" else f"-{args.pattern}") + ("" if args.lighting == "flat" else "-studio")
    suffix += "-follow" if args.follow else ""
    data = args.work / f"{args.sequence}-{args.views}x{args.frames}x{args.size}{suffix}"
    if not (data / "transforms_test.json").is_file():
        t0 = time.perf_counter()
        render_sequence_views(
            npz,
            data,
            views=args.views,
            frames=args.frames,
            size=args.size,
            test_views=args.test_views,
            pattern=args.pattern,
            lighting=args.lighting,
            follow=args.follow,
        )
        console.print(f"rendered {data} in {time.perf_counter() - t0:.1f} s")
    train, test = load_transforms(data, "train"), load_transforms(data, "test")
    preset = PRESETS[args.preset]
    if args.iterations:
        preset = dataclasses.replace(preset, iterations=args.iterations, mesh_iterations=args.iterations)  # as the CLI
    preset = dataclasses.replace(preset, color_motion=args.color_motion, sh_degree=args.sh_degree)
    console.print(
        f"{args.sequence}: {len(train)} training images ({train.describe()}, {train.width}²), {len(test)} held-out; "
        f"preset {args.preset}, {preset.iterations} iterations, "
        f"{torch.get_num_threads()} torch threads, device {args.device}"
    )

    if not args.mesh_only:
        free_fit_tables(args, npz, train, test, preset, console)
    if not args.no_mesh:
        mesh_table(args, npz, train, preset, console)


def free_fit_tables(args, npz: Path, train, test, preset, console) -> None:
    # -- image quality, time, memory --------------------------------------------------------------------------
    rows = []
    checkpoints = Checkpoints(test, args.checkpoints, args.device) if args.checkpoints else None
    result, seconds = timed_fit(train, preset, args.device, checkpoints=checkpoints)
    memory = peak_memory_gb(args.device)
    scores = evaluate(result.model, test)
    rows.append(("ours (4D: B-spline trajectories)", scores, seconds, len(result.model), memory))
    if not args.no_baseline:
        static, s_seconds = timed_fit(train, dataclasses.replace(preset, knots=1), args.device)
        s_scores = evaluate(static.model, test)
        rows.append(
            ("baseline: static 3DGS, same steps", s_scores, s_seconds, len(static.model), peak_memory_gb(args.device))
        )
    table = Table(title=f"Held-out views, all {len(test.time_values())} frames ({args.sequence}, {args.size}²)")
    for col in ("fit", "PSNR dB", "SSIM", "fit time", "Gaussians", "peak memory GB", "PSNR − baseline"):
        table.add_column(col, justify="right")
    base = rows[-1][1]["psnr"] if len(rows) > 1 else None
    for name, sc, sec, n, mem in rows:
        table.add_row(
            name,
            f"{sc['psnr']:.2f}",
            f"{sc['ssim']:.4f}",
            f"{sec:.0f} s",
            f"{n:,}",
            f"{mem:.2f}",
            "-" if base is None else f"{sc['psnr'] - base:+.2f}",
        )
    console.print(table)
    motion_table(args, npz, train, result.model, console)

    # -- render speed ------------------------------------------------------------------------------------------
    lo, hi = train.bounds()
    center, radius = (lo + hi) / 2, float(np.linalg.norm(hi - lo)) * 1.5
    table = Table(title="Render speed (one camera, frames per second)")
    for col in ("resolution", "ours", "anchor"):
        table.add_column(col, justify="right")
    for size in (args.size, 800):
        fps = render_fps(result.model, size, center, radius, args.device)
        table.add_row(f"{size}²", f"{fps:.1f}", "4DGaussians: 82 FPS at 800², RTX 3090" if size == 800 else "")
    console.print(table)


def true_frames(npz: Path, frames: int):
    """The sequence, its true vertices (T,V,3) at the captured times, and their bounding-box diagonal."""
    seq = load_mesh_sequence(npz)
    truth = np.asarray(seq.frames[frame_indices(seq.frame_count, frames)], np.float32)
    return seq, truth, float(np.linalg.norm(truth.reshape(-1, 3).max(0) - truth.reshape(-1, 3).min(0)))


def motion_table(args, npz: Path, train, model, console) -> None:
    """Mesh path 2's motion on its own: the sequence's true mesh at the first captured time moved by the fitted
    Gaussians' motion (what path 2 does to the mesh it extracts), against the same mesh left unmoved."""
    _, truth, diag = true_frames(npz, args.frames)
    times = train.time_values()
    moved = deform_mesh(model, truth[0], times, t_ref=float(times[0]))
    table = Table(title="Mesh path 2's motion: the true mesh at the first time, moved by the Gaussians")
    for col in ("mesh", "mean vertex error, % of the animation's bbox diagonal", "worst time", "ratio"):
        table.add_column(col, justify="right")
    still = np.linalg.norm(truth[:1] - truth, axis=-1).mean(1) / diag * 100
    for name, pred in (("moved by the fitted Gaussians (deform_mesh)", moved), ("baseline: left unmoved", truth[:1])):
        err = np.linalg.norm(pred - truth, axis=-1).mean(1) / diag * 100
        table.add_row(name, f"{err.mean():.2f}", f"{err.max():.2f}", f"{err.mean() / still.mean():.2f}×")
    console.print(table)


def mesh_table(args, npz: Path, train, preset, console) -> None:
    """Mesh path 1 on the sequence's own rest mesh, against the unmoved mesh and the silhouettes' rigid poses."""
    seq, truth, diag = true_frames(npz, args.frames)
    rest, faces = np.asarray(seq.rest, np.float32), np.asarray(seq.faces, np.int32)
    times = train.time_values()
    frames = prepare_frames(train, preset.max_size, torch.device("cpu"))
    t0 = time.perf_counter()
    poses = track_rigid(torch.as_tensor(rest), frames.alphas, frames.viewmats, frames.Ks, frames.groups)
    rigid = poses.apply(torch.as_tensor(rest)).numpy(), time.perf_counter() - t0
    mesh_fit, m_seconds = timed_fit(train, preset, args.device, rest_mesh=(rest, faces))
    own = float(np.linalg.norm(rest.max(0) - rest.min(0)))
    table = Table(title=f"Mesh path 1: the rest mesh ({len(rest):,} vertices) follows the fitted motion")
    for col in ("mesh", "mean vertex error, % of the animation's bbox diagonal", "% of the mesh's diagonal",
                "ratio", "time", "target"):  # fmt: skip
        table.add_column(col, justify="right")
    rows = [
        ("ours (silhouette poses + ARAP-bound Gaussians)", mesh_fit.vertex_frames(times), f"{m_seconds:.0f} s"),
        ("baseline: rigid poses from the silhouettes only", rigid[0], f"{rigid[1]:.0f} s"),
        ("baseline: rest mesh unmoved", rest[None], "-"),
    ]
    still = float(np.linalg.norm(rest[None] - truth, axis=-1).mean())
    for name, pred, seconds in rows:
        err = float(np.linalg.norm(pred - truth, axis=-1).mean())
        target = "≤ 1 %" if name.startswith("ours") else ""
        table.add_row(name, f"{err / diag * 100:.2f}", f"{err / own * 100:.2f}", f"{err / still:.2f}×", seconds, target)
    console.print(table)


if __name__ == "__main__":
    main()

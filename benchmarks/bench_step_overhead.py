"""The host's work per fit step: the working tree against an earlier commit, on images so small that the arithmetic
is nothing and what is left is what a GPU step pays on the host (Python, dispatch, one launch per operation).

    .venv/bin/python benchmarks/bench_step_overhead.py [--baseline bbd4684] [--views 16] [--frames 48] [--size 32]
        [--steps 40] [--mesh]

On a GPU the `quality` preset's step took 48 ms where gsplat's forward and backward for its images took 3.4 ms
(README, GPU table): the host's work per step, not the GPU's, is the cost. No GPU here, so this measures that
work as the CPU pays it at 32² (`max_size`) with 200 Gaussians (`--points`), with the PyTorch rasterizer, both
trees in this script (the baseline is checked out into a temporary git worktree and run in a subprocess, the
working tree likewise):

- operations per step: every tensor operation the dispatcher runs in one step, forward and backward, counted
  with a TorchDispatchMode (the rasterizer's own are counted apart: on a GPU gsplat replaces them);
- ms per step: the difference of two fits' times (`--steps` and twice that) over the extra steps, so set-up and
  the silhouettes' rigid start (left out: `free_track` off) do not count; one torch thread.

With --mesh, mesh path 1 (the deformation graph, 4 times per step) instead of free Gaussians.
Renders: benchmarks/render_views.py (Blender), cached in --work.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from render_views import SEQUENCES, render_sequence_views  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# Run inside the tree under test (its own backend package), prints one JSON line.
PROBE = r"""
import collections, dataclasses, json, sys, time
import numpy as np, torch
from torch.utils._python_dispatch import TorchDispatchMode
torch.set_num_threads(1)
from backend.gaussians4d.data import load_transforms
from backend.gaussians4d.fit import PRESETS, fit

data, steps, mesh_path = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "mesh"
video = load_transforms(data, "train")
preset = dataclasses.replace(PRESETS["quality"], max_size=int(sys.argv[4]), free_track=False, mesh_track=False,
                             mesh_silhouette_steps=0, densify_from=10**9, init_points=int(sys.argv[6]))
rest = None
if mesh_path:
    sequence = np.load(sys.argv[5])
    rest = (sequence["rest"].astype(np.float32), sequence["faces"].astype(np.int64))

def run(iterations, progress=None):
    p = dataclasses.replace(preset, iterations=iterations, mesh_iterations=iterations)
    t0 = time.perf_counter()
    fit(video, preset=p, device="cpu", rest_mesh=rest, progress=progress)
    return time.perf_counter() - t0

counts = collections.Counter()
counting = [False]
class Count(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if counting[0]:
            counts["all"] += 1
        return func(*args, **(kwargs or {}))

# count two steps (the 3rd and 4th of 6), the rasterizer's own operations apart
from backend.gaussians4d import rasterize as raster
inner = raster.rasterize
def counted_rasterize(*a, **k):
    before = counts["all"]
    out = inner(*a, **k)
    counts["rasterizer"] += counts["all"] - before
    return out
raster.rasterize = counted_rasterize
seen = [0]
def progress(stage, fraction, message):
    if message.startswith("step "):
        seen[0] += 1
        counting[0] = seen[0] in (2, 3)
with Count():
    run(6, progress)
raster.rasterize = inner
run(2)  # warm-up
short, long = run(steps), run(2 * steps)
print(json.dumps({"ops": counts["all"] / 2, "rasterizer_forward": counts["rasterizer"] / 2,
                  "ms": (long - short) / steps * 1000}))
"""


def probe(tree: Path, data: Path, steps: int, mesh: bool, size: int, npz: Path, points: int) -> dict:
    args = [str(data), str(steps), "mesh" if mesh else "free", str(size), str(npz), str(points)]
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=tree, capture_output=True, text=True, check=False,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"the probe failed in {tree}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="bbd4684", help="the git revision to compare against")
    parser.add_argument("--sequence", default="horse-gallop")
    parser.add_argument("--views", type=int, default=16)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--points", type=int, default=200, help="initial Gaussians (free path; few: little arithmetic)")
    parser.add_argument("--mesh", action="store_true", help="mesh path 1 instead of free Gaussians")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tessera-bench-fit4d"))
    args = parser.parse_args(argv)
    console = Console(width=150)
    npz = SEQUENCES / f"{args.sequence}.npz"
    data = args.work / f"{args.sequence}-{args.views}x{args.frames}x{args.size}"
    if not (data / "transforms_test.json").is_file():
        render_sequence_views(npz, data, views=args.views, frames=args.frames, size=args.size, test_views=1)
    with tempfile.TemporaryDirectory() as tmp:
        baseline = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(baseline), args.baseline],
                       check=True)  # fmt: skip
        try:
            setting = (data, args.steps, args.mesh, args.size, npz, args.points)
            rows = {f"baseline ({args.baseline})": probe(baseline, *setting), "working tree": probe(REPO, *setting)}
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)], check=False)
    what = "mesh path 1 (4 times per step)" if args.mesh else "free Gaussians (2 times per step)"
    table = Table(title=f"{args.sequence}, {args.views} views × {args.frames} times at {args.size}², quality preset, "
                  f"{what}: the host's work per step")  # fmt: skip
    for column in ("tree", "ops per step", "… outside the rasterizer", "ms per step", "ratio to baseline (ms)"):
        table.add_column(column, justify="left" if column == "tree" else "right")
    base = next(iter(rows.values()))
    for name, row in rows.items():
        table.add_row(name, f"{row['ops']:.0f}", f"{row['ops'] - row['rasterizer_forward']:.0f}",
                      f"{row['ms']:.1f}", f"{row['ms'] / base['ms']:.2f}")  # fmt: skip
    console.print(table)
    console.print("'… outside the rasterizer' leaves out the rasterizer's forward operations only (its backward runs "
                  "in the autograd engine, counted with the rest).")  # fmt: skip


if __name__ == "__main__":
    main()

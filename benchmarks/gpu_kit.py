"""Prepare the GPU checks of the 4D Gaussians (issue 4) for one call on a lent GPU machine.

A lent machine (the workplace's `device` tool) has a CUDA PyTorch but no Blender, no network and no ../shared, and
its time is short (15 minutes a session, machine start included). So everything it needs is made here, into `.gpu/`
(git-ignored, carried by the call):

    .gpu/bench/horse-gallop-16x48x512/   the issue's GPU data: 16 training views × 48 frames × 512² and 3 held-out
                                         views, rendered with Blender by render_views.py (~6 min here, once)
    .gpu/sequences/horse-gallop.npz      the true animation, for the mesh path's error
    .gpu/wheels/gsplat-1.5.3-*.whl       gsplat (pure Python; it builds its CUDA kernels on first use there)

    .gpu/bench/horse-gallop-4x4x64/      a tiny capture for the CUDA smoke fit that runs while gsplat builds
    .gpu/wheels/trimesh-*, plyfile-*     what the backend needs that the machine's image lacks (pure Python)

    .venv/bin/python benchmarks/gpu_kit.py            # here: make or refresh .gpu/ (prints its size: ≤ 64 MiB)

then on the device: `run(command="bash benchmarks/gpu_check.sh", carry=[".gpu"], timeout_s=600)`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from render_views import SEQUENCES, render_sequence_views  # noqa: E402  (Blender is imported to render)

CARRY_LIMIT = 64 * 2**20  # what one device call carries, all paths together
SMOKE = (4, 4, 64)  # views, frames, size of the smoke fit's capture
# pure-Python packages the backend imports that the machine's image lacks (its list: the device tool's KINDS.md);
# the versions installed here, so both machines run the same code
CARRIED = ("trimesh", "plyfile")


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu")
    parser.add_argument("--sequence", default="horse-gallop")
    parser.add_argument("--views", type=int, default=16)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args(argv)

    data = args.out / "bench" / f"{args.sequence}-{args.views}x{args.frames}x{args.size}"
    npz = SEQUENCES / f"{args.sequence}.npz"
    smoke = args.out / "bench" / f"{args.sequence}-{SMOKE[0]}x{SMOKE[1]}x{SMOKE[2]}"
    for folder, (views, frames, size) in ((data, (args.views, args.frames, args.size)), (smoke, SMOKE)):
        if not (folder / "transforms_test.json").is_file():
            render_sequence_views(npz, folder, views=views, frames=frames, size=size, test_views=3)
    (args.out / "sequences").mkdir(parents=True, exist_ok=True)
    shutil.copy2(npz, args.out / "sequences" / npz.name)
    wheels = args.out / "wheels"
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(wheels)]
    for name, version in (("gsplat", "1.5.3"), *((pkg, metadata.version(pkg)) for pkg in CARRIED)):
        if not list(wheels.glob(f"{name}-{version}-*.whl")):
            subprocess.run([*pip, f"{name}=={version}"], check=True)
    size = folder_size(args.out)
    print(f"{args.out}: {size / 2**20:.1f} MiB (a device call carries at most {CARRY_LIMIT / 2**20:.0f} MiB)")
    if size > CARRY_LIMIT:
        raise SystemExit(f"{args.out} is too large to carry: render fewer views or frames")


if __name__ == "__main__":
    main()

"""How fast results land in Blender: real bpy, the built extension, a real backend process.

Prints one table:
  - median time to apply one 100k-vertex frame (PC2 append + checks + update tag), target ≤ 5 ms,
    against a naive per-vertex `vertex.co = …` loop and `vertices.foreach_set("co")` on the same frame;
  - frames/s for a 10k-vertex × 1,000-frame sequence streamed from a backend process into the
    timeline (submit → last frame in the PC2), target ≥ 500 frames/s;
  - the longest single `pump()` call during that stream, target ≤ 10 ms.

    .venv/bin/python benchmarks/bench_blender_apply.py [--frames 1000] [--vertices 10000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOME = Path(tempfile.mkdtemp(prefix="tessera-bench-home-"))
os.environ["HOME"] = str(HOME)  # Blender writes prefs and extensions under HOME: keep the user's untouched
os.environ["XDG_CACHE_HOME"] = str(HOME / ".cache")

import bpy  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from backend.addon_build import build_extension  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ADDON = "bl_ext.user_default.tessera4d"


def install_extension(tmp: Path):
    report = build_extension(tmp / "dist", wheels=False)
    zip_path = Path(getattr(report, "zip_path", report))
    bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default", enable_on_install=True)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    import addon_utils

    addon_utils.enable(ADDON, default_set=True)
    return sys.modules[ADDON]


def start_backend(tmp: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    log = tmp / "backend.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backend", "serve", "--bind", address, "--jobs-dir", str(tmp / "jobs")],
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    deadline = time.monotonic() + 60
    while "listening" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"backend did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    return proc, address


def bench_single_frame(addon, repeats: int = 60) -> dict[str, float]:
    """Median ms to apply one 100k-vertex frame, and the two baselines."""
    mesh_sequence = addon.appliers.mesh_sequence
    v = 100_000
    rng = np.random.default_rng(0)
    rest = rng.normal(size=(v, 3)).astype(np.float32)
    scene = bpy.context.scene
    rest_arrays = {"rest": rest, "faces": np.zeros((0, 3), np.int32)}
    sequence = mesh_sequence.apply_rest(scene, "bench0000", {"name": "bench100k", "frames": repeats}, rest_arrays)
    times = []
    for i in range(repeats):
        frame = (rest + i * 0.01).astype(np.float32)[None]
        t0 = time.perf_counter()
        mesh_sequence.apply_frames(sequence, {"start": i}, {"positions": frame})
        times.append(time.perf_counter() - t0)

    me = bpy.data.objects["bench100k"].data
    frame = rest + 1.0
    t0 = time.perf_counter()
    for vert, co in zip(me.vertices, frame.tolist(), strict=True):  # the defect the add-on avoids
        vert.co = co
    naive = time.perf_counter() - t0
    foreach = []
    for _ in range(5):
        t0 = time.perf_counter()
        me.vertices.foreach_set("co", frame.ravel())
        me.update()
        foreach.append(time.perf_counter() - t0)
    return {"apply": float(np.median(times)) * 1e3, "naive": naive * 1e3, "foreach": float(np.median(foreach)) * 1e3}


def bench_splat_frame(addon, n: int = 100_000, repeats: int = 5) -> dict[str, float]:
    """One n-splat frame applied the way the pump does it (frame_steps): median total ms, longest step ms,
    step count; baseline: the same frame in one go (build_frame_mesh + write_splat_ply)."""
    gaussians = addon.appliers.gaussians
    rng = np.random.default_rng(2)
    arrays = {
        "means": rng.normal(size=(n, 3)).astype(np.float32),
        "scales": np.log(rng.uniform(0.01, 0.03, (n, 3))).astype(np.float32),
        "rotations": rng.normal(size=(n, 4)).astype(np.float32),
        "opacities": rng.normal(size=n).astype(np.float32),
        "sh_dc": rng.normal(size=(n, 3)).astype(np.float32),
        "sh_rest": rng.normal(scale=0.1, size=(n, 15, 3)).astype(np.float32),
    }
    scene = bpy.context.scene
    sequence = gaussians.start_sequence(scene, "benchsplat", {"name": "splats", "frames": repeats})
    totals, longest, one_go = [], [], []
    for i in range(repeats):
        steps = []
        for _ in gaussians.frame_steps(sequence, {"frame": i, "ply": f"f{i}.ply"}, arrays):
            steps.append(time.perf_counter())
        t0 = time.perf_counter()
        gaussians.build_frame_mesh(f"one go {i}", arrays)
        addon.appliers.splat_ply.write_splat_ply(Path(sequence_folder(addon, sequence)) / f"g{i}.ply", arrays)
        one_go.append(time.perf_counter() - t0)
        totals.append(steps[-1] - steps[0])
        longest.append(float(np.max(np.diff(steps))))
    return {
        "total": float(np.median(totals)) * 1e3,
        "longest_step": float(np.median(longest)) * 1e3,
        "worst_step": float(np.max(longest)) * 1e3,
        "steps": len(steps),
        "one_go": float(np.median(one_go)) * 1e3,
    }


def sequence_folder(addon, sequence) -> str:
    return str(addon.storage.absolute(bpy.data.objects[sequence.object_name][addon.storage.PLY_FOLDER_PROP]))


def bench_stream(addon, address: str, tmp: Path, frames: int, vertices: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    rest = rng.normal(size=(vertices, 3)).astype(np.float32)
    motion = (rest[None] + np.linspace(0, 1, frames, dtype=np.float32)[:, None, None]).astype(np.float32)
    path = tmp / "stream.npz"
    np.savez(path, rest=rest, faces=np.zeros((0, 3), np.int32), frames=motion)

    bpy.ops.tessera.connect(address=address, timeout=30)
    pump = addon.pump.pump
    client = addon.session.SESSION.client
    durations = []
    t0 = time.perf_counter()
    bpy.ops.tessera.load_mesh_sequence(filepath=str(path))
    while client.unfinished_jobs():
        c0 = time.perf_counter()
        pump(None)
        durations.append(time.perf_counter() - c0)
        time.sleep(0.0005)
    elapsed = time.perf_counter() - t0
    job = next(iter(client.jobs.values()))
    if job.state.value != "done":
        raise RuntimeError(f"stream job ended {job.state.value}: {job.message}")
    ob = bpy.data.objects["stream"]
    got = addon.appliers.pc2.read(addon.storage.absolute(ob.modifiers[0].filepath))
    assert np.array_equal(got, motion), "streamed frames differ from the source"
    bpy.ops.tessera.disconnect()
    durations_ms = np.array(durations) * 1e3
    return {
        "fps": frames / elapsed,
        "seconds": elapsed,
        "pump_max": float(durations_ms.max()),
        "pump_p99": float(np.percentile(durations_ms, 99)),
        "pump_calls": len(durations),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--vertices", type=int, default=10_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    addon = install_extension(tmp)
    proc, address = start_backend(tmp)
    try:
        single = bench_single_frame(addon)
        splat = bench_splat_frame(addon)
        stream = bench_stream(addon, address, tmp, args.frames, args.vertices)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(HOME, ignore_errors=True)

    table = Table(title=f"Applying results in Blender {bpy.app.version_string} (bpy module, this machine)")
    for col in ("measure", "value", "target", "baseline", "ratio"):
        table.add_column(col)
    table.add_row(
        "apply one 100k-vertex frame (median)",
        f"{single['apply']:.2f} ms",
        "≤ 5 ms",
        f"per-vertex co loop {single['naive']:.0f} ms",
        f"{single['naive'] / single['apply']:.0f}x faster",
    )
    table.add_row(
        "",
        "",
        "",
        f"vertices.foreach_set('co') {single['foreach']:.2f} ms",
        f"{single['foreach'] / single['apply']:.1f}x faster",
    )
    table.add_row(
        "apply one 100k-splat frame, SH degree 3 (median)",
        f"{splat['total']:.0f} ms in {splat['steps']} pump steps; longest step {splat['longest_step']:.1f} ms "
        f"(median of {5} frames), worst {splat['worst_step']:.1f} ms",
        "each step ≤ 10 ms",
        f"in one go {splat['one_go']:.1f} ms",
        "",
    )
    table.add_row(
        f"stream {args.vertices:,} verts × {args.frames:,} frames via backend",
        f"{stream['fps']:.0f} frames/s ({stream['seconds']:.2f} s)",
        "≥ 500 frames/s",
        "",
        "",
    )
    table.add_row(
        "longest pump() call during the stream",
        f"{stream['pump_max']:.2f} ms",
        "≤ 10 ms",
        f"p99 {stream['pump_p99']:.2f} ms over {stream['pump_calls']} calls",
        "",
    )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()

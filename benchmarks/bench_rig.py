"""Rig from motion vs Dem Bones: E_RMS and wall time, same inputs, same machine, same script.

Runs our free-bone solver (backend.rig.ssdr.solve_free, SSDR in Dem Bones' setting) and the
`py-dem-bones` baseline (solve_skinning(rest, frames, bones, faces=faces, max_influences=4), 30
iterations, its defaults) on the mesh sequences in ../shared/data/mesh-sequences/, and the
skeleton mode (backend.rig.skeleton.build_skeleton; its time includes the free solve it starts
from). E_RMS is Kavan et al. 2010 (../shared/data/README.md), measured by skinning each result
and comparing with the frames. Runs alternate ours / Dem Bones per sequence; best of --repeats times.

    .venv/bin/python benchmarks/bench_rig.py [--sequences horse-gallop samba chickenCrossing] [--bones 20]
        [--influences 4] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from backend.rig.metrics import e_rms
from backend.rig.skeleton import build_skeleton
from backend.rig.skinning import bone_transforms, linear_blend_skin
from backend.rig.ssdr import solve_free

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mesh-sequences"
SEQUENCES = ("horse-gallop", "samba", "chickenCrossing")


def _timed(fn: Callable[[], object], repeats: int) -> tuple[object, float]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def run_ours(rest, frames, faces, bones, k, repeats):
    sol, secs = _timed(lambda: solve_free(rest, frames, bones, faces=faces, max_influences=k), repeats)
    rec = linear_blend_skin(rest, sol.weight_index, sol.weight_value, sol.transforms)
    return e_rms(frames, rec, rest), secs, sol


def run_dem_bones(rest, frames, faces, bones, k, repeats):
    import py_dem_bones

    res, secs = _timed(
        lambda: py_dem_bones.solve_skinning(
            rest.astype(np.float64), frames.astype(np.float64), bones, faces=faces, max_influences=k
        ),
        repeats,
    )
    w = np.asarray(res.weights, dtype=np.float64)  # (B',V) dense; Dem Bones may return fewer bones
    m = np.asarray(res.transforms, dtype=np.float64)[..., :3, :]  # (T,B',4,4) rest → frame
    hom = np.concatenate([rest.astype(np.float64), np.ones((len(rest), 1))], axis=1)
    rec = np.stack([np.einsum("bv,bij,vj->vi", w, mt, hom) for mt in m])
    return e_rms(frames, rec, rest), secs, w.shape[0]


def run_skeleton(build, rest, frames, faces, bones, k, repeats):
    def both():
        free = solve_free(rest, frames, bones, faces=faces, max_influences=k)
        return build(rest, frames, free, faces=faces)

    sk, secs = _timed(both, repeats)
    skin = bone_transforms(sk.pose_matrices, sk.rest_matrices)
    rec = linear_blend_skin(rest, sk.weight_index, sk.weight_value, skin)
    return e_rms(frames, rec, rest), secs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", nargs="+", default=list(SEQUENCES))
    ap.add_argument("--bones", type=int, default=20)
    ap.add_argument("--influences", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-skeleton", action="store_true", help="skip the skeleton mode even if it is there")
    args = ap.parse_args(argv)
    build = None if args.no_skeleton else build_skeleton

    table = Table(title=f"Rig from motion vs Dem Bones ({args.bones} bones, ≤ {args.influences} influences)")
    for col in ("sequence", "V × T", "mode", "bones", "E_RMS ours", "E_RMS Dem Bones", "ratio"):
        table.add_column(col, justify="left" if col in ("sequence", "mode") else "right")
    for col in ("time ours", "time Dem Bones", "ratio"):
        table.add_column(col, justify="right")
    console = Console(width=max(Console().width, 150))
    for name in args.sequences:
        d = np.load(DATA / f"{name}.npz")
        rest, frames, faces = d["rest"], d["frames"], d["faces"]
        size = f"{rest.shape[0]:,} × {frames.shape[0]}"
        ours_e, ours_t, sol = run_ours(rest, frames, faces, args.bones, args.influences, args.repeats)
        db_e, db_t, db_bones = run_dem_bones(rest, frames, faces, args.bones, args.influences, args.repeats)
        console.print(
            f"{name}: ours E_RMS {ours_e:.3f} in {ours_t:.2f} s ({sol.iterations} iterations); "
            f"Dem Bones E_RMS {db_e:.3f} in {db_t:.2f} s ({db_bones} bones)"
        )
        bones = f"{args.bones}" if db_bones == args.bones else f"{args.bones} (DB {db_bones})"
        table.add_row(
            name, size, "free", bones, f"{ours_e:.3f}", f"{db_e:.3f}", f"{ours_e / db_e:.2f}",
            f"{ours_t:.2f} s", f"{db_t:.2f} s", f"{ours_t / db_t:.2f}",
        )  # fmt: skip
        if build is not None:
            try:
                sk_e, sk_t = run_skeleton(build, rest, frames, faces, args.bones, args.influences, args.repeats)
            except Exception as exc:  # the other mode is still in progress: report, don't lose the table
                console.print(f"{name}: skeleton mode failed: {exc!r}")
            else:
                table.add_row(
                    name, size, "skeleton", bones, f"{sk_e:.3f}", f"{db_e:.3f}", f"{sk_e / db_e:.2f}",
                    f"{sk_t:.2f} s", f"{db_t:.2f} s", f"{sk_t / db_t:.2f}",
                )  # fmt: skip
    console.print(table)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    console.print(
        f"{os.cpu_count()} CPUs, load average at the end {load:.2f}: times compare only within a run "
        "(Dem Bones' OpenMP threads slow down most when other processes share the cores)."
    )


if __name__ == "__main__":
    main()

"""Motion tokens: tokenizer reconstruction, in-betweening against the interpolation and zero-velocity
baselines (LAFAN1 protocol of Harvey et al. 2020, `backend/motion/metrics.py`), and in-betweening latency.

Every figure is computed on the model's held-out clips (named in its config.json, never trained on) and
the baselines are run in this script on the same windows.

    .venv/bin/python benchmarks/bench_motion.py MODEL_DIR [--data ../shared/data/motion/bandai-namco-1/data]
        [--lengths 5 15 30] [--stride 20]

In-betweening windows: in each held-out clip, transitions of n frames start every `stride` frames, with 10
context frames before and the target frame after (LAFAN1). Rows ("matching": the
default, motion matching over the model's library of training clips, `backend/motion/matching.py`;
"tokens": the masked token transformer; a model folder without a library gets only the token rows):
- "clip context": the model keeps every frame of the clip outside the transition (an animator's
  in-between: the whole take around the gap is known);
- "10+1 context": the model keeps only the 10 context frames and the target frame (LAFAN1's strict
  setting; the rest of the clip is generated too, and only the transition is scored);
- "interpolation": SLERP of local rotations, linear root (the benchmark's baseline), from frames s−1 and s+n;
- "zero velocity": frame s−1 held.
Before scoring, each window is moved so that the root at its last context frame stands at the origin facing
+Z (the benchmark's normalisation); L2P uses the per-coordinate std of the held-out windows' positions,
floored at a tenth of the median std (a static top joint has none).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from backend.motion.bvh import read_bvh
from backend.motion.features import body_size, foot_joints, motion_root
from backend.motion.metrics import (
    foot_skate,
    interpolation_inbetween,
    l2p,
    l2q,
    npss,
    position_stats,
    zero_velocity_inbetween,
)
from backend.motion.model import MotionModel
from backend.motion.rotations import quat_multiply, quat_rotate, quat_yaw, yaw_quat
from backend.motion.skeleton import forward_kinematics
from backend.motion.train import evaluate_tokenizer

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "motion" / "bandai-namco-1" / "data"
CONTEXT = 10


def global_pose(motion, frames: slice):
    pos, rot = forward_kinematics(
        motion.skeleton, motion.rotations[frames], motion.root_positions[frames], motion.local_translations()[frames]
    )
    return pos.astype(np.float64), rot.astype(np.float64)


def normalise(pos, rot, anchor_pos, anchor_yaw):
    """Move a window so the root at its last context frame is at the origin (XZ) facing +Z."""
    turn = yaw_quat(np.array(-anchor_yaw))
    shift = anchor_pos * np.array([1.0, 0.0, 1.0])
    pos = quat_rotate(np.broadcast_to(turn, pos.shape[:-1] + (4,)), pos - shift)
    rot = quat_multiply(np.broadcast_to(turn, rot.shape), rot)
    return pos, rot


def windows(motion, n: int, stride: int):
    return list(range(CONTEXT, motion.n_frames - n - 1, stride))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--lengths", type=int, nargs="+", default=[5, 15, 30])
    parser.add_argument("--stride", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    model = MotionModel.from_pretrained(args.model)
    held = [read_bvh(args.data / name) for name in model.meta.get("held_out", [])]
    held = [m for m in held if m.n_frames >= model.window]
    if not held:
        raise SystemExit("The model's config.json names no held-out clips found under --data")
    units = float(model.meta.get("units_to_mm", 10.0))
    r = motion_root(model.skeleton)
    console.print(
        f"model {args.model} ({model.meta.get('train_seconds', '?')} s training), {len(held)} held-out clips, "
        f"{sum(m.n_frames for m in held)} frames, {torch.get_num_threads()} torch threads"
    )

    # -- tokenizer reconstruction --------------------------------------------------------------------------
    layers = model.tokenizer.config.n_quantizers
    table = Table(title="Tokenizer reconstruction on held-out clips (downsampling ×4)")
    for col in (
        "quantizer layers",
        "MPJPE (mm, root-aligned)",
        "pose MPJPE (mm, heading removed)",
        "foot skate (mm/s), reconstruction",
        "foot skate, source",
        "ratio",
    ):
        table.add_column(col, justify="right")
    for used in sorted({layers, 1}, reverse=True):
        rec = evaluate_tokenizer(model, held, units, layers=used)
        skate, skate_src = rec.get("foot_skate_mm"), rec.get("foot_skate_source_mm")
        table.add_row(
            f"{used} of {layers}",
            f"{rec['mpjpe_mm']:.1f}",
            f"{rec['pose_mpjpe_mm']:.1f}",
            f"{skate:.1f}" if skate is not None else "-",
            f"{skate_src:.1f}" if skate_src is not None else "-",
            f"{skate / skate_src:.2f}×" if skate and skate_src else "-",
        )
    console.print(table)

    # -- in-betweening ---------------------------------------------------------------------------------------
    ours = [("tokens", "tokens")]
    if model.library() is not None:
        ours.insert(0, ("matching", "match"))
    contexts = ["clip context", "10+1 context"]
    methods = [f"ours, {label}, {c}" for label, _ in ours for c in contexts] + ["interpolation", "zero velocity"]
    results: dict[tuple[str, int], list[tuple]] = {}
    skates: dict[tuple[str, int], list[float]] = {}  # foot skate over the generated frames and the two around them
    feet, skate_height = foot_joints(model.skeleton), 0.05 * body_size(model.skeleton)
    for n in args.lengths:
        for motion in held:
            for s in windows(motion, n, args.stride):
                end = s + n
                truth = motion
                outs = {}
                for label, method in ours:
                    clip_keep = [(0, s - 1), (end, motion.n_frames - 1)]
                    outs[f"ours, {label}, clip context"] = model.inbetween(motion, clip_keep, method=method)
                    strict_keep = [(s - CONTEXT, s - 1), (end, end)]
                    outs[f"ours, {label}, 10+1 context"] = model.inbetween(motion, strict_keep, method=method)
                outs["interpolation"] = interpolation_inbetween(motion, s, end)
                outs["zero velocity"] = zero_velocity_inbetween(motion, s, end)
                a_pos, a_rot = global_pose(truth, slice(s - 1, s))
                yaw = float(quat_yaw(a_rot[0, r]))
                t_pos, t_rot = normalise(*global_pose(truth, slice(s, end)), a_pos[0, r], yaw)
                for name, out in outs.items():
                    p_pos, p_rot = normalise(*global_pose(out, slice(s, end)), a_pos[0, r], yaw)
                    results.setdefault((name, n), []).append((p_pos, p_rot, t_pos, t_rot))
                for name, out in [("source", truth), *outs.items()]:
                    around = global_pose(out, slice(s - 1, end + 1))[0]
                    skates.setdefault((name, n), []).append(foot_skate(around, feet, motion.fps, skate_height) * units)
    all_truth = np.concatenate([w[2] for (name, _), ws in results.items() if name == "zero velocity" for w in ws])
    mean, std = position_stats(all_truth)
    # A coordinate that never varies in the truth (a static top joint's height) would divide by ~0: floor the
    # std at a tenth of the median coordinate's, so a few millimetres there do not swamp the score.
    std = np.maximum(std, 0.1 * float(np.median(std)))
    table = Table(title="In-betweening on held-out clips (LAFAN1 metrics, lower is better)")
    table.add_column("method")
    for n in args.lengths:
        table.add_column(f"L2P n={n}", justify="right")
    for n in args.lengths:
        table.add_column(f"L2Q n={n}", justify="right")
    for n in args.lengths:
        table.add_column(f"NPSS n={n}", justify="right")
    scores = {}
    for name in methods:
        row = []
        for metric in ("l2p", "l2q", "npss"):
            for n in args.lengths:
                ws = results[(name, n)]
                if metric == "l2p":
                    value = float(np.mean([l2p(p, t, mean, std) for p, _, t, _ in ws]))
                elif metric == "l2q":
                    value = float(np.mean([l2q(q, tq) for _, q, _, tq in ws]))
                else:
                    value = npss(
                        np.stack([q.reshape(n, -1) for _, q, _, _ in ws]),
                        np.stack([tq.reshape(n, -1) for *_, tq in ws]),
                    )
                scores[(name, metric, n)] = value
                row.append(f"{value:.3f}")
        table.add_row(name, *row)
    for name in methods[:-2]:
        ratios = [scores[(name, "l2p", n)] / scores[("interpolation", "l2p", n)] for n in args.lengths]
        table.add_row(f"{name} / interpolation", *[f"{x:.2f}×" for x in ratios], *([""] * (2 * len(args.lengths))))
    console.print(table)
    console.print(
        "windows per length: " + ", ".join(f"n={n}: {len(results[('interpolation', n)])}" for n in args.lengths)
    )
    if feet:
        table = Table(title="Foot skate over the generated frames (mm/s while a foot is near the floor)")
        table.add_column("method")
        for n in args.lengths:
            table.add_column(f"n={n}", justify="right")
        for name in ["source", *methods]:
            table.add_row(name, *[f"{np.mean(skates[(name, n)]):.1f}" for n in args.lengths])
        console.print(table)

    # -- latency -------------------------------------------------------------------------------------------
    longest = max((read_bvh(p) for p in sorted(args.data.glob("*.bvh"))[:40]), key=lambda m: m.n_frames)
    frames = min(longest.n_frames, 300)
    clip = longest.frames(0, frames)
    keep = [(0, frames // 2 - 16), (frames // 2 + 15, frames - 1)]
    table = Table(title=f"In-betweening latency, {frames}-frame clip ({frames / clip.fps:.1f} s), 30-frame gap")
    for col in ("method", "median ms", "min ms", "target", "anchor: MMM per sentence (GPU)"):
        table.add_column(col, justify="right")
    for label, method in ours:
        model.inbetween(clip, keep, method=method)  # warm up (decodes the library once)
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            model.inbetween(clip, keep, method=method)
            times.append((time.perf_counter() - t0) * 1000)
        table.add_row(label, f"{np.median(times):.0f}", f"{min(times):.0f}", "≤ 100 ms (2 CPU cores)", "81 ms")
    console.print(table)


if __name__ == "__main__":
    main()

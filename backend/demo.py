"""`tessera4d demo`: the main job, end to end, on real data.

It builds the extension, starts a backend, and drives real Blender (bpy) through the
add-on in a separate process: load a mesh sequence and a Gaussian PLY sequence via the
backend, rig the mesh sequence from its motion (`rig.from_motion`, skeleton mode), capture
the mesh sequence from a ring of cameras and fit 4D Gaussians to it (`gaussians4d.fit`: splat
frames and an animated mesh stream back), in-between a held-out mocap clip with long gaps
(`motion.inbetween`: a new Action on the armature), save `demo.blend`, render a contact sheet
of the splats, the original, the rigged mesh and the 4D fit. Before Blender starts it trains a
quick motion model on ../shared's Bandai-Namco clips when no `--motion-model` is given (a few
minutes; a demo model, not a good one). This module never imports bpy (the layer rule); the
Blender side is `blender_addon/batch/demo.py`.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from shared.errors import TesseraError

from .addon_build import REPO_ROOT, build_extension
from .launcher import BackendStartError, free_port, start_backend

log = logging.getLogger(__name__)

SHARED_HORSE = REPO_ROOT.parent / "shared" / "data" / "mesh-sequences" / "horse-gallop.npz"
BLENDER_SCRIPT = REPO_ROOT / "blender_addon" / "batch" / "demo.py"
SHARED_MOTION = REPO_ROOT.parent / "shared" / "data" / "motion" / "bandai-namco-1" / "data"
# The quick model the demo trains when no --motion-model is given: half the CPU default's widths, one token
# layer, small batches, a few hundred steps (a few minutes on 2 cores). Its in-betweens are rough on purpose;
# `tessera4d motion train` makes a full one.
QUICK_MOTION_CONFIG = {
    "tokenizer_steps": 300,
    "transformer_steps": 250,
    "tokenizer_batch": 16,
    "transformer_batch": 16,
    "tokenizer": {
        "group_width": 32,
        "width": 64,
        "depth": 1,
        "codebook_size": 128,
        "code_dim": 16,
        "n_quantizers": 1,
        "linear_path": True,
    },
    "transformer": {"d_model": 64, "n_layers": 2, "n_heads": 4, "ff": 256},
}
MIN_MOTION_FRAMES = 150  # the in-betweened clip: long enough for several long gaps
FULL_TRAINING_HINT = "tessera4d motion train --data DIR_OF_BVH --out MODEL_DIR"


class DemoError(TesseraError):
    """A demo step failed; the message names the step and where its log is."""


@dataclass
class MotionInput:
    model: Path
    clip: Path
    frames: int
    quick: bool  # the demo's own quick model (not one given with --motion-model)


def keep_frames(n: int, first: int = 10, last: int = 10, every: int = 40, half: int = 4) -> list[int]:
    """The frames (0-based) of an `n`-frame clip whose keys the motion step keeps: the first `first` and last
    `last` frames and `2 * half + 1` frames around every `every`-th frame between them, so that every gap is at
    least `every - 2 * half - 1` (31) frames long."""
    kept = set(range(first)) | set(range(n - last, n))
    centre = first + every - half - 1  # the first gap (frames first … centre - half - 1) as long as the others
    while centre + every - half <= n - last:  # a gap as long as the others before the last frames
        kept |= set(range(centre - half, centre + half + 1))
        centre += every
    return sorted(kept)


def frame_ranges(frames: list[int]) -> str:
    """[0, 1, 2, 5, 6] → "0-2,5-6"."""
    runs: list[list[int]] = []
    for f in frames:
        if runs and f == runs[-1][1] + 1:
            runs[-1][1] = f
        else:
            runs.append([f, f])
    return ",".join(f"{a}-{b}" for a, b in runs)


@dataclass
class DemoResult:
    blend: Path
    contact_sheet: Path
    mesh_source: Path
    seconds: float


def prepare_inputs(out: Path, mesh: Path | None) -> tuple[Path, Path]:
    """The mesh sequence to load (given, ../shared's horse, or the built-in sample) and a Gaussian PLY folder."""
    from .formats.gaussian_ply import write_gaussian_ply
    from .formats.mesh_sequence import write_npz
    from .samples import gaussian_sample_sequence, twisting_bar

    if mesh is None:
        if SHARED_HORSE.is_file():
            mesh = SHARED_HORSE
        else:
            mesh = out / "inputs" / "twisting-bar.npz"
            mesh.parent.mkdir(parents=True, exist_ok=True)
            write_npz(mesh, twisting_bar())
    elif not mesh.exists():
        raise DemoError(f"Mesh sequence {mesh} does not exist.")
    splats = out / "inputs" / "gaussian-sample"
    splats.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(gaussian_sample_sequence(frames=24, n=4000)):
        write_gaussian_ply(splats / f"frame_{i:04d}.ply", frame)
    return mesh, splats


def bvh_frames(path: Path) -> int:
    """The frame count a BVH file declares (its "Frames:" line), 0 when it has none."""
    with path.open(errors="replace") as f:
        for line in f:
            if line.strip().lower().startswith("frames:"):
                return int(line.split(":", 1)[1])
    return 0


def train_quick_motion_model(out: Path, data: Path, on_line) -> Path:
    """Train (or reuse, when a finished one is there) the demo's quick motion model in `out`."""
    if (out / "model.safetensors").is_file() and (out / "config.json").is_file():
        meta = json.loads((out / "config.json").read_text()).get("meta", {})
        trained = {k: meta.get("train_config", {}).get(k) for k in QUICK_MOTION_CONFIG}
        if trained == QUICK_MOTION_CONFIG:
            on_line(f"Motion: reusing the quick demo model in {out} (delete it to train again)")
            return out
    from .motion.dataset import load_library
    from .motion.train import TrainConfig, train

    t0 = time.perf_counter()
    library = load_library(data)
    on_line(
        f"Motion: training a quick demo model on {len(library)} clips in {data.name}/ "
        f"({QUICK_MOTION_CONFIG['tokenizer_steps']} + {QUICK_MOTION_CONFIG['transformer_steps']} steps, a few minutes)"
    )
    last = [time.perf_counter()]

    def progress(stage: str, fraction: float, message: str) -> None:
        if time.perf_counter() - last[0] >= 30:
            last[0] = time.perf_counter()
            on_line(f"Motion training: {stage} {fraction:.0%} ({time.perf_counter() - t0:.0f} s)")

    report = train(library, out, TrainConfig(**QUICK_MOTION_CONFIG), progress=progress)
    mpjpe = report.metrics.get("mpjpe_mm")
    on_line(
        f"Motion: quick demo model trained in {report.seconds:.0f} s ({report.train_clips} clips, "
        f"{report.held_out_clips} held out{f', held-out MPJPE {mpjpe:.0f} mm' if mpjpe is not None else ''}); "
        f"it is a quick demo model, rough on purpose: train a full one with `{FULL_TRAINING_HINT}` "
        "and pass it with --motion-model"
    )
    return out


def prepare_motion(out: Path, model: Path | None, data: Path, on_line) -> MotionInput | None:
    """The motion model (given, or a quick one trained here) and its longest held-out clip in `data` (at least
    MIN_MOTION_FRAMES frames); None (with a line saying why) when the step cannot run."""
    quick = model is None
    if model is None:
        if not data.is_dir():
            on_line(
                f"Motion step skipped: no --motion-model given and no clips at {data} to train a quick one "
                f"(train one with `{FULL_TRAINING_HINT}`)"
            )
            return None
        model = train_quick_motion_model(out / "motion-model", data, on_line)
    elif not (model / "config.json").is_file():
        raise DemoError(f"--motion-model {model} is not a motion model folder (made by `tessera4d motion train`).")
    model = model.resolve()
    held_out = json.loads((model / "config.json").read_text()).get("meta", {}).get("held_out", [])
    lengths = {data / name: bvh_frames(data / name) for name in held_out if (data / name).is_file()}
    clip = max(lengths, key=lengths.get, default=None)  # the longest: the most gaps to fill
    if clip is not None and lengths[clip] >= MIN_MOTION_FRAMES:
        return MotionInput(model, clip, lengths[clip], quick)
    on_line(
        f"Motion step skipped: none of the model's {len(held_out)} held-out clips is in {data} with "
        f"≥ {MIN_MOTION_FRAMES} frames"
    )
    return None


def run_demo(
    out: Path,
    mesh: Path | None = None,
    render_frames: int = 6,
    y_up: bool | None = None,
    rig_bones: int = 20,
    on_line=print,
    motion_model: Path | None = None,
    fit4d_iterations: int = 50,
    motion_data: Path = SHARED_MOTION,
) -> DemoResult:
    """Run the whole demo into `out`; `on_line` receives Blender's progress lines.

    `y_up=None` means: Y-up for the ../shared sequences (they are), Z-up for the built-in sample.
    `motion_model=None` trains a quick model on `motion_data` (skipped when that is missing);
    `fit4d_iterations=0` skips the 4D step.
    """
    t0 = time.perf_counter()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    given = mesh
    mesh, splats = prepare_inputs(out, mesh)
    if y_up is None:
        y_up = given is None and mesh == SHARED_HORSE
    motion = prepare_motion(out, motion_model, motion_data, on_line)
    on_line(f"Building the extension into {out / 'extension'}")
    zip_path = build_extension(out / "extension").zip_path

    try:
        backend, address = start_backend(f"tcp://127.0.0.1:{free_port()}", out / "jobs", out / "backend.log")
    except BackendStartError as exc:
        raise DemoError(exc.message) from None
    on_line(f"Backend listening on {address} (log: {out / 'backend.log'})")
    # Blender keeps its preferences and installed extensions under HOME: give the demo its own,
    # so it never touches the user's Blender configuration.
    env = dict(os.environ, HOME=str(out / "blender-home"), XDG_CACHE_HOME=str(out / "blender-home" / "cache"))
    cmd = [
        sys.executable,
        str(BLENDER_SCRIPT),
        "--zip",
        str(zip_path),
        "--address",
        address,
        "--mesh",
        str(mesh),
        "--gaussians",
        str(splats),
        "--out",
        str(out),
        "--frames",
        str(render_frames),
        "--rig-bones",
        str(rig_bones),
        "--fit4d-iterations",
        str(fit4d_iterations),
        *(["--y-up"] if y_up else []),
        *(["--motion-model", str(motion.model), "--motion-clip", str(motion.clip)] if motion else []),
        *(["--motion-keep", frame_ranges(keep_frames(motion.frames))] if motion else []),
        *(["--quick-motion-model"] if motion and motion.quick else []),
    ]
    blender_log = out / "blender.log"
    try:
        with blender_log.open("w") as logf:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            assert proc.stdout is not None
            for line in proc.stdout:
                logf.write(line)
                if line.startswith("[demo]"):
                    on_line(line[6:].strip())
            code = proc.wait()
    finally:
        backend.terminate()
        try:
            backend.wait(10)
        except subprocess.TimeoutExpired:
            backend.kill()
    if code != 0:
        tail = "\n".join(blender_log.read_text(errors="replace").splitlines()[-20:])
        raise DemoError(f"The Blender step failed (exit {code}; log: {blender_log}):\n{tail}")
    return DemoResult(out / "demo.blend", out / "contact_sheet.png", mesh, time.perf_counter() - t0)

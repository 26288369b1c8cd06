"""`tessera4d demo`: the main job, end to end, on real data.

It builds the extension, starts a backend, and drives real Blender (bpy) through the
add-on in a separate process: load a mesh sequence and a Gaussian PLY sequence via the
backend, rig the mesh sequence from its motion (`rig.from_motion`, skeleton mode), save
`demo.blend`, render a contact sheet of the splats, the original and the rigged mesh. This module never imports bpy (the
layer rule); the Blender side is `blender_addon/batch/demo.py`.
"""

from __future__ import annotations

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


class DemoError(TesseraError):
    """A demo step failed; the message names the step and where its log is."""


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


def run_demo(
    out: Path,
    mesh: Path | None = None,
    render_frames: int = 6,
    y_up: bool | None = None,
    rig_bones: int = 20,
    on_line=print,
) -> DemoResult:
    """Run the whole demo into `out`; `on_line` receives Blender's progress lines.

    `y_up=None` means: Y-up for the ../shared sequences (they are), Z-up for the built-in sample.
    """
    t0 = time.perf_counter()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    given = mesh
    mesh, splats = prepare_inputs(out, mesh)
    if y_up is None:
        y_up = given is None and mesh == SHARED_HORSE
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
        *(["--y-up"] if y_up else []),
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

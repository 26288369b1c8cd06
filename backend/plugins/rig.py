"""`rig.from_motion`: an animated mesh → bones, skin weights and per-frame bone motion (one `rig` result).

Input: arrays `rest` (V,3), `frames` (T,V,3), optional `faces` (F,3) and `labels` (V,) (part seeds, e.g. a
part map), as the add-on sends them; or the `path` of a mesh sequence on the backend's disk. The solvers
(backend.rig) report through callbacks, so they run on a helper thread and this generator streams their
progress; cancelling stops them between iterations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import ClassVar

import numpy as np

from shared.errors import InputError
from shared.results import RIG
from shared.schemas import InputSpec, ParamSpec, PluginSpec

from ..formats.mesh_sequence import open_mesh_sequence
from ..plugin_host import JobContext, Output, Plugin, Progress, stream_progress
from ..rig.metrics import e_rms
from ..rig.rig_file import Rig
from ..rig.skeleton import build_skeleton
from ..rig.ssdr import solve_free

AUTO_BONES = (4, 8, 12, 16, 24, 32)  # counts the automatic choice tries, smallest first


def fewer_bones_note(asked: int, got: int) -> str:
    """' (of N asked: ...)' when the skeleton has fewer bones than asked for, else ''."""
    if 0 < got < asked:
        return f" (of {asked} asked: bones that carried no vertex were dropped)"
    return ""


def solve_rig(
    rest: np.ndarray,
    frames: np.ndarray,
    *,
    bones: int,
    mode: str = "skeleton",
    max_influences: int = 4,
    iterations: int = 30,
    tolerance: float = 2.0,
    faces: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    name: str = "rig",
    fps: float = 0.0,
    progress: Callable[[str, float, str], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> Rig:
    """rest (V,3), frames (T,V,3) → a `Rig` in `mode` ("free" | "skeleton"). bones = 0: the smallest of
    AUTO_BONES (up to V) whose E_RMS ≤ tolerance, else the largest tried. progress(stage, fraction, msg)."""
    report = progress or (lambda stage, fraction, message: None)
    if mode not in ("free", "skeleton"):
        raise InputError(f"Rig mode must be 'free' or 'skeleton', got {mode!r}.")
    v = int(np.asarray(rest).shape[0])
    counts = [bones] if bones > 0 else [b for b in AUTO_BONES if b <= v] or [min(v, AUTO_BONES[0])]
    if labels is not None:
        parts = int(np.unique(np.asarray(labels)).size)
        counts = sorted({max(b, parts) for b in counts}) if bones == 0 else counts
    rig = None
    for n, count in enumerate(counts):
        share = (n / len(counts), (n + 1) / len(counts))
        tag = f"{count} bones: " if len(counts) > 1 else ""

        def sub(stage: str, fraction: float, message: str, share=share, tag=tag, weight=(0.0, 1.0)) -> None:
            f = weight[0] + (weight[1] - weight[0]) * fraction
            report(stage, share[0] + (share[1] - share[0]) * f, tag + message)

        split = 0.5 if mode == "skeleton" else 1.0
        free = solve_free(
            rest,
            frames,
            count,
            max_influences=max_influences,
            iterations=iterations,
            faces=faces,
            labels=labels,
            progress=lambda s, f, m, sub=sub, split=split: sub(s, f, m, weight=(0.0, split)),
            check_cancelled=check_cancelled,
        )
        if mode == "free":
            rig = Rig.from_free(free, rest, name=name, fps=fps)
        else:
            solve = build_skeleton(
                rest,
                frames,
                free,
                faces=faces,
                iterations=iterations,
                progress=lambda s, f, m, sub=sub, split=split: sub(s, f, m, weight=(split, 1.0)),
                check_cancelled=check_cancelled,
            )
            rig = Rig.from_skeleton(solve, name=name, fps=fps)
        rig.e_rms = e_rms(frames, rig.reconstruct(rest), rest)  # what the rig file reproduces, measured
        if bones > 0 or rig.e_rms <= tolerance:
            break
        report("auto", share[1], f"{count} bones: E_RMS {rig.e_rms:.3f} > tolerance {tolerance:g}")
    assert rig is not None
    return rig


class RigFromMotion(Plugin):
    """Rig an animated mesh: kinematic parts → bones (free, or a hierarchy with joints) → skin weights."""

    spec: ClassVar[PluginSpec] = PluginSpec(
        name="rig.from_motion",
        summary="Turn an animated mesh into bones, skin weights and keyed bone motion (free bones or a skeleton).",
        params=[
            ParamSpec(
                "path",
                "path",
                default="",
                help="Mesh sequence on the backend machine (.npz, OBJ folder or .pc2) — only when no arrays "
                "are sent; leave empty when rigging the mesh from Blender.",
            ),
            ParamSpec("rest_mesh", "path", default="", help="Only for a .pc2 path: the mesh it animates."),
            ParamSpec(
                "bones", "int", default=0, min=0, help="Number of bones; 0 picks the smallest count meeting Tolerance."
            ),
            ParamSpec(
                "tolerance",
                "float",
                default=2.0,
                min=0.0,
                help="E_RMS target for the automatic bone count (Bones = 0); E_RMS is the RMS vertex error in "
                "thousandths of half the rest pose's bounding-box diagonal.",
            ),
            ParamSpec(
                "mode",
                "enum",
                default="skeleton",
                choices=["free", "skeleton"],
                help="skeleton: a bone hierarchy with joints and constant bone lengths, for animators; "
                "free: independent rigid bones (Dem Bones' setting), lowest error, no hierarchy.",
            ),
            ParamSpec("max_influences", "int", default=4, min=1, max=8, help="Bones per vertex at most."),
            ParamSpec("iterations", "int", default=30, min=1, max=1000, help="Solver iterations (bones ⇄ weights)."),
            ParamSpec("name", "str", default="", help="Name of the rig (default: the sequence's name)."),
        ],
        inputs=[
            InputSpec(
                "motion",
                "mesh_sequence",
                help="rest (V,3) float32, frames (T,V,3) float32, optional faces (F,3) int32 and labels (V,) int32 "
                "(part seeds); or set the path parameter instead.",
                required=False,
                arrays=["rest", "frames"],
            )
        ],
        outputs=["rig"],
    )

    def run(self, ctx: JobContext) -> Iterator[Progress | Output]:
        p = ctx.params
        rest, frames, faces, labels, name, fps = _inputs(ctx)
        name = str(p.get("name") or name or "rig")
        yield Progress("reading", 0.0, f"{name}: {frames.shape[0]} frames × {rest.shape[0]} vertices")
        rig: Rig = yield from stream_progress(
            ctx,
            lambda progress, check_cancelled: solve_rig(
                rest,
                frames,
                bones=int(p.get("bones") or 0),
                mode=str(p.get("mode") or "skeleton"),
                max_influences=int(p.get("max_influences") or 4),
                iterations=int(p.get("iterations") or 30),
                tolerance=float(p["tolerance"] if p.get("tolerance") is not None else 2.0),
                faces=faces,
                labels=labels,
                name=name,
                fps=fps,
                progress=progress,
                check_cancelled=check_cancelled,
            ),
        )
        meta, arrays = rig.to_result()
        note = fewer_bones_note(int(p.get("bones") or 0), rig.bone_count)
        yield Progress("done", 1.0, f"{rig.bone_count} bones{note} ({rig.mode}), E_RMS {rig.e_rms:.3f}")
        yield Output(RIG, meta, arrays)


def _inputs(ctx: JobContext) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, str, float]:
    """(rest, frames, faces, labels, name, fps) from the job's arrays or its `path`; InputError otherwise."""
    a, path = ctx.arrays, str(ctx.params.get("path") or "")
    sent = [k for k in ("rest", "frames") if k in a]
    if sent and path:
        raise InputError("Give the motion either as arrays (rest, frames) or as a path, not both.")
    if path:
        reader = open_mesh_sequence(path, ctx.params.get("rest_mesh") or None)
        seq = reader.read_all()
        faces = seq.faces if len(seq.faces) else None
        return seq.rest, seq.frames, faces, _labels(a, seq.rest.shape[0]), reader.name, float(reader.fps or 0.0)
    if len(sent) < 2:
        missing = " and ".join(k for k in ("rest", "frames") if k not in a)
        raise InputError(
            f"rig.from_motion needs the arrays rest (V,3) and frames (T,V,3), or a path; {missing} missing."
        )
    rest, frames = np.asarray(a["rest"]), np.asarray(a["frames"])
    if rest.ndim != 2 or rest.shape[1] != 3:
        raise InputError(f"'rest' must be (V,3) vertex positions, got shape {rest.shape}.")
    if frames.ndim != 3 or frames.shape[2] != 3:
        raise InputError(f"'frames' must be (T,V,3) vertex positions, got shape {frames.shape}.")
    faces = None
    if "faces" in a and a["faces"].size:
        faces = np.asarray(a["faces"])
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu":
            raise InputError(f"'faces' must be (F,3) integer vertex indices, got {faces.dtype} {faces.shape}.")
        if faces.min() < 0 or faces.max() >= rest.shape[0]:
            raise InputError(f"'faces' refer to vertex {int(faces.max())} but the mesh has {rest.shape[0]} vertices.")
    return rest, frames, faces, _labels(a, rest.shape[0]), "", 0.0


def _labels(a: dict[str, np.ndarray], v: int) -> np.ndarray | None:
    if "labels" not in a:
        return None
    labels = np.asarray(a["labels"])
    if labels.shape != (v,) or labels.dtype.kind not in "iu":
        raise InputError(
            f"'labels' must be one integer part label per vertex ({v},), got {labels.dtype} {labels.shape}."
        )
    return labels

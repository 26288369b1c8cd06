"""4D Gaussians for the add-on: `gaussians4d.fit` (multi-view video → dynamic Gaussians + animated mesh) and
`gaussians4d.export` (a fitted model folder → PLY frames, mesh sequence, OBJ). backend.gaussians4d does the
work; this module maps the wire onto it, and `backend/gaussians4d_cli.py` uses the same helpers.

`gaussians4d.fit` takes the video either as arrays, as the add-on's capture collector makes them —
images (F,H,W,3) float32 straight (not premultiplied) colour in [0,1], alphas (F,H,W) float32, c2w (F,4,4)
float32 NeRF/OpenGL camera→world, times (F,) float32 in [0,1], square pixels, param `fov_x` (radians,
horizontal) — composited here over white as `load_transforms` does; or as the `path` of a D-NeRF folder on
the backend's disk. Optional arrays `rest_vertices` (V,3) / `rest_faces` (F,3) bind one Gaussian to each
vertex (mesh path 1), else the mesh comes from the Gaussians (path 2: marching cubes at t=0, vertices
moved by the Gaussians' motion). Either way it is one topology for every output frame.

Results, in order: every `preview_every` iterations one `gaussians.frame` per output time (a preview of
the fit so far: the add-on replaces the frames it already has); at the end every output time as a
`gaussians.frame` again, then `mesh.rest` and one `mesh.frames` chunk. The model folder (`out`, default
`<job folder>/model`) gets the model, `times.json` (the output times), `ply/frame_NNNN.ply` and
`mesh_sequence.npz`. Cancel stops the fit within one iteration; the previews already streamed stay.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from shared.errors import InputError
from shared.results import GAUSSIANS_FRAME, MESH_FRAMES, MESH_REST, check_mesh_frames, check_mesh_rest
from shared.schemas import InputSpec, ParamSpec, PluginSpec

from ..plugin_host import JobContext, Output, Plugin, Progress, stream_progress

VIDEO_ARRAYS = ["images", "alphas", "c2w", "times"]
TIMES_FILE = "times.json"  # the output times a fit used, so export defaults to the same frames
PLY_FOLDER = "ply"
MESH_FILE = "mesh_sequence.npz"
BACKGROUND = (1.0, 1.0, 1.0)
MESH_RESOLUTION = 96


# -- inputs ------------------------------------------------------------------------------------------------------


def video_from_arrays(arrays: dict[str, np.ndarray], fov_x: float):
    """A MultiViewVideo from the add-on's capture arrays (see the module docstring); InputError if unusable."""
    from ..gaussians4d.cameras import cameras_from_nerf
    from ..gaussians4d.data import MultiViewVideo, snap_times

    missing = [k for k in VIDEO_ARRAYS if k not in arrays]
    if missing:
        raise InputError(
            f"gaussians4d.fit needs the arrays {', '.join(VIDEO_ARRAYS)} (a multi-view capture) or a path; "
            f"{', '.join(missing)} missing."
        )
    images = np.asarray(arrays["images"], np.float32)
    alphas = np.asarray(arrays["alphas"], np.float32)
    c2w = np.asarray(arrays["c2w"], np.float32)
    times = snap_times(np.asarray(arrays["times"], np.float32).reshape(-1))
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise InputError(f"'images' must be (F, H, W, 3) RGB frames, got shape {images.shape}.")
    f, h, w = images.shape[:3]
    if alphas.shape != (f, h, w):
        raise InputError(f"'alphas' must be (F, H, W) = {(f, h, w)} like the images, got {alphas.shape}.")
    if c2w.shape != (f, 4, 4):
        raise InputError(
            f"'c2w' must be one 4×4 camera→world matrix per image, (F, 4, 4) = {(f, 4, 4)}, got {c2w.shape}."
        )
    if times.shape != (f,):
        raise InputError(f"'times' must be one time per image ({f},), got {times.shape}.")
    for name, arr in (("images", images), ("alphas", alphas), ("c2w", c2w), ("times", times)):
        if not np.isfinite(arr).all():
            raise InputError(f"'{name}' holds NaN or infinite values.")
    if times.min() < 0.0 or times.max() > 1.0:
        raise InputError(f"'times' must lie in [0, 1] (start to end of the clip); got {times.min()}..{times.max()}.")
    if not (np.isfinite(fov_x) and 0.0 < fov_x < np.pi):
        raise InputError(f"fov_x must be the cameras' horizontal field of view in radians (0, π), got {fov_x}.")
    a = np.clip(alphas, 0.0, 1.0)[..., None]
    composited = np.clip(images, 0.0, 1.0) * a + (1.0 - a) * np.asarray(BACKGROUND, np.float32)
    cameras = cameras_from_nerf(c2w, w, h, camera_angle_x=float(fov_x))
    video = MultiViewVideo(composited.astype(np.float32), alphas, cameras, times, [f"entry_{i:04d}" for i in range(f)])
    if video.view_count() < 2:
        raise InputError(f"A 4D fit needs at least 2 camera views; the capture has {video.view_count()}.")
    if not (alphas > 0.5).any():
        raise InputError("The object is not in any captured image (every alpha is 0): check the cameras and object.")
    return video


def load_video_folder(folder: str | Path):
    """(training video, held-out video or None, notes to show) of a D-NeRF folder. Images without alpha over a plain
    background get alphas keyed from it (data.key_plain_background); the notes say so, or that the background will
    be fitted too, that lens distortion is ignored, and why there is no held-out score when transforms_test.json
    cannot be used."""
    from ..gaussians4d.data import distortion_note, key_plain_background, load_transforms

    video, keyed = key_plain_background(load_transforms(folder, "train"))
    test, warning = load_held_out(folder)
    return video, test, [note for note in (keyed, distortion_note(folder), warning) if note]


def held_out_split(folder: str | Path) -> str | None:
    """The split that scores a fit of a D-NeRF folder: "test", else "val", else None."""
    return next((s for s in ("test", "val") if Path(folder, f"transforms_{s}.json").is_file()), None)


def load_held_out(folder: str | Path):
    """(held-out video or None, warning or None) of a D-NeRF folder's transforms_test.json, else its
    transforms_val.json (NeRF folders that ship only a validation split). The split is optional and only scores
    the fit, so one that cannot be used (no times, missing images...) is a warning, not an error: the fit goes
    on without a score."""
    from ..gaussians4d.data import load_transforms

    split = held_out_split(folder)
    if split is None:
        return None, None
    try:
        return load_transforms(folder, split), None
    except InputError as exc:
        return None, f"no held-out score: transforms_{split}.json cannot be used ({exc.message})"


def read_rest_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V,3) f32, faces (F,3) i32) of a mesh file (OBJ, PLY, ...), vertex order kept."""
    from ..formats.mesh_sequence import _rest_and_faces, read_mesh

    path = Path(path)
    if not path.is_file():
        raise InputError(f"Rest mesh {str(path)!r} does not exist; give an OBJ (or PLY) of the object's mesh.")
    vertices, faces = _rest_and_faces(*read_mesh(path), path.name)
    if len(faces) == 0:
        raise InputError(f"Rest mesh {path.name!r} has no faces: the mesh-bound fit needs triangles.")
    return vertices, faces


def rest_mesh_from_arrays(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    sent = [k for k in ("rest_vertices", "rest_faces") if k in arrays]
    if not sent:
        return None
    if len(sent) == 1:
        raise InputError("A rest mesh needs both arrays rest_vertices (V,3) and rest_faces (F,3).")
    faces = np.asarray(arrays["rest_faces"])
    if faces.dtype.kind not in "iu":
        raise InputError(f"'rest_faces' must be integer vertex indices, got {faces.dtype}.")
    return np.asarray(arrays["rest_vertices"], np.float32), faces.astype(np.int64)


def output_times(count: int, captured: np.ndarray | None = None) -> np.ndarray:
    """`count` evenly spaced times over [0, 1]; count 0: the captured times."""
    if count <= 0:
        if captured is None or len(captured) == 0:
            raise InputError("Say how many frames to output (frames ≥ 1).")
        return np.unique(np.asarray(captured, np.float64))
    return np.linspace(0.0, 1.0, int(count)) if count > 1 else np.zeros(1)


def saved_times(model_dir: str | Path) -> np.ndarray | None:
    path = Path(model_dir) / TIMES_FILE
    try:
        times = json.loads(path.read_text(encoding="utf-8"))["times"]
        return np.asarray(times, np.float64)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_times(model_dir: str | Path, times: np.ndarray) -> None:
    Path(model_dir, TIMES_FILE).write_text(json.dumps({"times": [float(t) for t in times]}) + "\n", encoding="utf-8")


def load_fitted(model_dir: str | Path):
    """(model, meta) of a model folder; InputError naming the folder when it is not one."""
    from ..gaussians4d.store import load_model

    folder = Path(model_dir)
    if not folder.is_dir():
        raise InputError(f"Model folder {str(folder)!r} does not exist; fit one with `tessera4d fit4d`.")
    return load_model(folder)


# -- outputs -----------------------------------------------------------------------------------------------------


def ply_name(i: int, count: int) -> str:
    """The name export_frames_ply gives frame i (0-based) of `count`."""
    return f"frame_{i + 1:0{max(4, len(str(count)))}d}.ply"


def gaussian_frames(model, times: np.ndarray, name: str, check: Callable[[], None] | None = None) -> Iterator[Output]:
    """One `gaussians.frame` Output per time."""
    from ..gaussians4d.export import gaussian_frame_arrays

    for i, t in enumerate(times):
        if check is not None:
            check()
        meta = {"name": name, "frame": i, "frames": len(times), "ply": ply_name(i, len(times))}
        yield Output(GAUSSIANS_FRAME, meta, gaussian_frame_arrays(model, float(t)))


def animated_mesh(
    model, rest_mesh, times: np.ndarray, resolution: int = MESH_RESOLUTION, vertex_frames=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rest (V,3), faces (F,3) i32, frames (T,V,3)) of one topology: the fit's rest mesh moved with its
    Gaussians (path 1) when there is one, else a mesh of the Gaussians at t=0 moved by their motion (path 2).
    Path 1 positions are `vertex_frames(times)` (FitResult.vertex_frames) when given, else the means of
    `model.at(times)` (a model loaded from its folder: one Gaussian per vertex, in vertex order)."""
    import torch

    from ..gaussians4d.mesh import deform_mesh, extract_mesh

    if rest_mesh is not None:
        rest, faces = (np.asarray(a) for a in rest_mesh)
        if vertex_frames is not None:
            frames = np.asarray(vertex_frames(np.asarray(times, np.float32)), np.float32)
        else:
            with torch.no_grad():
                means = model.at(torch.as_tensor(np.asarray(times, np.float32)))["means"]
            frames = means.detach().cpu().numpy().astype(np.float32).reshape(len(times), -1, 3)
        if frames.shape[1] < len(rest):
            raise InputError(f"The model has {frames.shape[1]} Gaussians but its rest mesh {len(rest)} vertices.")
        frames = frames[:, : len(rest)]  # a rest mesh fitted subdivided: its own vertices lead the Gaussians
        return rest.astype(np.float32), faces.astype(np.int32), frames
    vertices, faces = extract_mesh(model, 0.0, resolution=int(resolution))
    return vertices, faces, deform_mesh(model, vertices, times, t_ref=0.0)


def mesh_outputs(rest: np.ndarray, faces: np.ndarray, frames: np.ndarray, name: str) -> Iterator[Output]:
    meta = {"name": name, "frames": int(frames.shape[0])}
    rest_arrays = {"rest": np.ascontiguousarray(rest, np.float32), "faces": np.ascontiguousarray(faces, np.int32)}
    check_mesh_rest(rest_arrays, meta, what=f"Mesh of {name}")
    yield Output(MESH_REST, meta, rest_arrays)
    arrays = {"positions": np.ascontiguousarray(frames, np.float32)}
    check_mesh_frames(arrays, {"start": 0}, rest.shape[0], what=f"Mesh of {name}")
    yield Output(MESH_FRAMES, {"start": 0}, arrays)


def _stream_with_outputs(ctx: JobContext, solve, outputs: collections.deque) -> Iterator[Progress | Output]:
    """stream_progress, also yielding the Outputs the computation appends to `outputs` (before it reports
    progress); returns the computation's result."""
    gen = stream_progress(ctx, solve)
    try:
        while True:
            try:
                item = next(gen)
            except StopIteration as stop:
                while outputs:
                    yield outputs.popleft()
                return stop.value
            yield item
            while outputs:
                yield outputs.popleft()
    finally:
        gen.close()  # a closed job stops the computation at its next check


# -- plugins -----------------------------------------------------------------------------------------------------


class Fit4D(Plugin):
    """Fit dynamic 3D Gaussians to a multi-view video; stream previews, then frames and an animated mesh."""

    spec: ClassVar[PluginSpec] = PluginSpec(
        name="gaussians4d.fit",
        summary="Fit 4D Gaussians to a multi-view video of a moving object: Gaussian frames + an animated mesh.",
        params=[
            ParamSpec(
                "path",
                "path",
                default="",
                help="D-NeRF folder (transforms_train.json + images) on the backend machine — only when no "
                "capture arrays are sent; leave empty when fitting a capture from Blender.",
            ),
            ParamSpec(
                "fov_x", "float", default=0.0, min=0.0, help="Capture arrays: horizontal field of view (radians)."
            ),
            ParamSpec(
                "preset",
                "enum",
                default="fast",
                choices=["fast", "quality"],
                help="fast: a few minutes on a CPU (images ≤ 128 px); quality: for a GPU (≤ 512 px, more steps).",
            ),
            ParamSpec(
                "iterations",
                "int",
                default=0,
                min=0,
                help="Optimisation steps; 0 uses the preset's (with a rest mesh, its mesh_iterations of 4 times each).",
            ),
            ParamSpec(
                "preview_every",
                "int",
                default=0,
                min=0,
                help="Stream preview frames every this many steps; 0 uses the preset's.",
            ),
            ParamSpec(
                "sh_degree",
                "int",
                default=0,
                min=0,
                max=3,
                help="View-dependent colour (shine): SH bands above the base colour, 0–3 (0: matte or flat-lit).",
            ),
            ParamSpec(
                "color_motion",
                "bool",
                default=False,
                help="Colours that change over time, for lit captures whose shading moves as parts turn.",
            ),
            ParamSpec(
                "frames_out",
                "int",
                default=0,
                min=0,
                max=10000,
                help="Frames to output, evenly over the clip; 0 outputs the captured times.",
            ),
            ParamSpec(
                "mesh",
                "bool",
                default=True,
                help="Also make an animated mesh (one topology for all frames).",
            ),
            ParamSpec(
                "mesh_resolution",
                "int",
                default=MESH_RESOLUTION,
                min=16,
                max=512,
                help="Voxels along the longest side for the mesh of the Gaussians (no rest mesh given).",
            ),
            ParamSpec("rest_mesh", "path", default="", help="With path: an OBJ whose vertices the fit follows."),
            ParamSpec("out", "path", default="", help="Model folder to write (default: in the job folder)."),
            ParamSpec("name", "str", default="", help="Name of the results (default: 'Gaussians 4D')."),
        ],
        inputs=[
            InputSpec(
                "video",
                "multiview_frames",
                help="images (F,H,W,3) f32 straight colour, alphas (F,H,W) f32, c2w (F,4,4) f32 NeRF camera→world, "
                "times (F,) f32 in [0,1], with param fov_x; optional rest_vertices (V,3) f32 + rest_faces (F,3) "
                "i32 (mesh-bound fit); or set the path parameter instead.",
                required=False,
                arrays=VIDEO_ARRAYS,
            )
        ],
        outputs=["gaussian_frames", "mesh_frames"],
    )

    def run(self, ctx: JobContext) -> Iterator[Progress | Output]:
        from ..formats.paths import prepare_output_folder
        from ..gaussians4d.export import export_frames_ply, export_mesh_sequence
        from ..gaussians4d.fit import PRESETS, fit, fit_warnings
        from ..gaussians4d.store import save_model

        p = ctx.params
        name = str(p.get("name") or "Gaussians 4D")
        yield Progress("reading", 0.0, "Reading the multi-view video")
        video, rest_mesh, test, notes = _fit_inputs(ctx)
        preset_name = str(p.get("preset") or "fast")
        for note in (*notes, *fit_warnings(video, rest_mesh, ctx.device, preset_name)):
            yield Progress("reading", 0.0, f"Warning: {note}", warning=note)
        preset = PRESETS[preset_name]
        default_steps = preset.iterations if rest_mesh is None else preset.mesh_iterations
        iterations = int(p.get("iterations") or 0) or default_steps
        every = int(p.get("preview_every") or 0) or preset.preview_every
        times = output_times(int(p.get("frames_out") or 0), video.time_values())
        out = prepare_output_folder(p.get("out") or ctx.job_dir / "model", "Model folder")
        yield Progress(
            "fit",
            0.0,
            f"{len(video)} images ({video.describe()}), {video.width}×{video.height}, {iterations} steps",
        )

        previews: collections.deque = collections.deque()

        def preview(step: int, model) -> None:
            if step < iterations:  # the last step's frames are the final ones, sent after the fit
                previews.extend(gaussian_frames(model, times, name))

        result = yield from _stream_with_outputs(
            ctx,
            lambda progress, check_cancelled: fit(
                video,
                preset=replace(preset, preview_every=every),
                iterations=iterations,
                rest_mesh=rest_mesh,
                progress=lambda stage, f, msg: progress(stage, 0.9 * f, msg),
                check_cancelled=check_cancelled,
                preview=preview,
                device=ctx.device,
                sh_degree=int(p.get("sh_degree") or 0),
                color_motion=bool(p.get("color_motion")),
            ),
            previews,
        )
        result.preset = preset_name
        model = result.model.cpu()
        last = result.history[-1] if result.history else {}
        summary = f"{len(model)} Gaussians in {result.seconds:.0f} s"
        if "psnr" in last:
            summary += f", train PSNR {last['psnr']:.1f} dB"
        if test is not None:
            from ..gaussians4d.fit import evaluate

            scores = evaluate(model, test, background=result.background)
            summary += f", held-out PSNR {scores['psnr']:.2f} dB / SSIM {scores['ssim']:.3f}"
        yield Progress("saving", 0.9, summary)
        save_model(out, result)
        write_times(out, times)
        export_frames_ply(model, times, out / PLY_FOLDER)
        yield from gaussian_frames(model, times, name, ctx.check_cancelled)
        if p.get("mesh", True):
            yield Progress("mesh", 0.95, "Meshing the Gaussians" if rest_mesh is None else "Moving the rest mesh")
            follow = result.vertex_frames if result.rest_mesh is not None else None
            resolution = int(p.get("mesh_resolution") or MESH_RESOLUTION)
            rest, faces, frames = animated_mesh(model, result.rest_mesh, times, resolution, follow)
            export_mesh_sequence(out / MESH_FILE, rest, faces, frames)
            yield from mesh_outputs(rest, faces, frames, f"{name} mesh")
        yield Progress("done", 1.0, f"{summary} → {out}")


def _fit_inputs(ctx: JobContext):
    """(video, rest mesh or None, held-out video or None, notes for the user (load_video_folder)) from the
    job's arrays or its path."""

    a, p = ctx.arrays, ctx.params
    path = str(p.get("path") or "")
    sent = [k for k in VIDEO_ARRAYS if k in a]
    if sent and path:
        raise InputError("Give the video either as capture arrays or as a path, not both.")
    rest_mesh = rest_mesh_from_arrays(a)
    if p.get("rest_mesh"):
        if rest_mesh is not None:
            raise InputError("Give the rest mesh either as arrays or as a path (rest_mesh), not both.")
        rest_mesh = read_rest_mesh(p["rest_mesh"])
    if path:
        video, test, notes = load_video_folder(path)
        return video, rest_mesh, test, notes
    return video_from_arrays(a, float(p.get("fov_x") or 0.0)), rest_mesh, None, []


class Export4D(Plugin):
    """A fitted model folder → PLY frames, mesh sequence, OBJ of the rest mesh; streams the animated mesh."""

    spec: ClassVar[PluginSpec] = PluginSpec(
        name="gaussians4d.export",
        summary="Export a fitted 4D Gaussian model: 3DGS PLY per frame, a mesh sequence, the rest mesh as OBJ.",
        params=[
            ParamSpec(
                "path", "path", default="", required=True, help="Model folder on the backend machine (from a fit)."
            ),
            ParamSpec("ply", "path", default="", help="Folder to write one 3DGS PLY per frame into (empty: none)."),
            ParamSpec("mesh", "path", default="", help="Mesh sequence .npz to write (empty: none)."),
            ParamSpec("obj", "path", default="", help="OBJ of the rest mesh to write (empty: none)."),
            ParamSpec(
                "pc2",
                "path",
                default="",
                help="PC2 point cache of the animation, in the rest mesh's vertex order (empty: none).",
            ),
            ParamSpec(
                "frames", "int", default=0, min=0, max=10000, help="Frames over the clip; 0: the fit's output frames."
            ),
            ParamSpec(
                "mesh_resolution",
                "int",
                default=MESH_RESOLUTION,
                min=16,
                max=512,
                help="Voxels along the longest side for the mesh of the Gaussians (models fitted without a rest mesh).",
            ),
            ParamSpec("name", "str", default="", help="Name of the mesh result (default: the folder's name)."),
        ],
        outputs=["mesh_frames"],
    )

    def run(self, ctx: JobContext) -> Iterator[Progress | Output]:
        p = ctx.params
        folder = Path(p["path"])
        yield Progress("reading", 0.0, f"Loading {folder.name}")
        result = yield from stream_progress(
            ctx,
            lambda progress, check: export_model(
                folder,
                ply=p.get("ply") or None,
                mesh=p.get("mesh") or None,
                obj=p.get("obj") or None,
                pc2=p.get("pc2") or None,
                frames=int(p.get("frames") or 0),
                mesh_resolution=int(p.get("mesh_resolution") or MESH_RESOLUTION),
                progress=progress,
                check_cancelled=check,
            ),
        )
        rest, faces, frames = result.mesh
        yield from mesh_outputs(rest, faces, frames, str(p.get("name") or f"{folder.name} mesh"))
        yield Progress("done", 1.0, result.summary())


class ExportResult:
    def __init__(self, mesh, written: list[Path], path_kind: str, frames: int):
        self.mesh, self.written, self.path_kind, self.frames = mesh, written, path_kind, frames

    def summary(self) -> str:
        v, f = len(self.mesh[0]), len(self.mesh[1])
        text = f"{self.frames} frames; mesh ({self.path_kind}) {v} vertices, {f} faces"
        return text + (f"; wrote {', '.join(str(w) for w in self.written)}" if self.written else "")


def export_model(
    model_dir: str | Path,
    *,
    ply: str | Path | None = None,
    mesh: str | Path | None = None,
    obj: str | Path | None = None,
    pc2: str | Path | None = None,
    frames: int = 0,
    mesh_resolution: int = MESH_RESOLUTION,
    progress: Callable[[str, float, str], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> ExportResult:
    """Write what is asked of a model folder; the animated mesh is always made (and returned). `pc2` gets its
    frames as a PC2 point cache (`.pc2` added when missing), in the rest mesh's vertex order. Every output is
    checked (folders made, nothing it must not replace) before anything is written."""
    from ..formats.mesh_sequence import write_pc2
    from ..formats.paths import prepare_output_file, prepare_output_folder
    from ..gaussians4d.export import check_mesh_target, export_frames_ply, export_mesh_sequence, export_obj

    report = progress or (lambda stage, fraction, message: None)
    check = check_cancelled or (lambda: None)
    model, meta = load_fitted(model_dir)
    if pc2:
        pc2 = Path(pc2) if Path(pc2).suffix.lower() == ".pc2" else Path(pc2).with_name(Path(pc2).name + ".pc2")
    for path, what in ((mesh, "Mesh sequence file"), (pc2, "PC2 file")):
        if path:
            prepare_output_file(path, what)
    if obj:
        check_mesh_target(obj)
    if ply:
        prepare_output_folder(ply, "PLY folder")
    saved = saved_times(model_dir)
    times = output_times(frames if frames > 0 or saved is not None else model.knots, saved)
    written: list[Path] = []
    if ply:
        report("ply", 0.1, f"Writing {len(times)} PLY frames")
        written.append(Path(ply))
        export_frames_ply(model, times, ply)
    check()
    rest_mesh = meta.get("rest_mesh")
    report("mesh", 0.4, "Moving the rest mesh" if rest_mesh is not None else "Meshing the Gaussians")
    rest, faces, positions = animated_mesh(model, rest_mesh, times, mesh_resolution)
    check()
    if mesh:
        written.append(export_mesh_sequence(mesh, rest, faces, positions))
    if obj:
        written.append(export_obj(obj, rest, faces))
    if pc2:
        written.append(write_pc2(pc2, positions))
    report("mesh", 0.9, f"{len(rest)} vertices")
    return ExportResult(
        (rest, faces, positions), written, "rest mesh" if rest_mesh is not None else "marching cubes", len(times)
    )

"""Generated motion pipelines: `pipeline.animate_object` (renders of a static object → its own mesh moving) and
`pipeline.video_to_4d` (a monocular video → 4D Gaussians + an animated mesh). The multi-view video model
(backend.mvdiff) makes the views, backend.mvdiff.animate turns them into 4D; this module maps the wire onto both.

animate_object arrays, as the add-on's capture collector makes them for the 4 model cameras: images (V,H,W,3)
float32 straight colour in [0,1], alphas (V,H,W), c2w (V,4,4) NeRF/OpenGL camera→world in world units, param
fov_x (radians); rest_vertices (N,3) float32 and rest_faces (M,3) int32, the object's triangulated mesh in the
same world space. Results: `mesh.rest` + one `mesh.frames` chunk (the object's vertices at every generated frame).

video_to_4d arrays: images (F,H,W,3) float32 in [0,1] (the object on white, or with alphas (F,H,W)); the video
becomes view 0 of the model's camera ring at every frame, the other views are generated. Results: every
`gaussians.frame`, then `mesh.rest` + `mesh.frames` (a mesh of the Gaussians moved by their motion).

While the model samples, progress messages carry `preview`: (V,H,W,3) uint8, the current estimate of the
middle frame of every view (the wire's progress preview; the add-on shows it in the Generate panel).
The model folder comes from the `checkpoint` param, else the backend's TESSERA4D_MVDIFF_CHECKPOINT; it is
loaded once through the host's model cache (`release` drops it). A folder of random weights (init-tiny) is
refused unless the backend runs with TESSERA4D_ALLOW_UNTRAINED=1 (tests); results then say "untrained".
"""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shared.errors import InputError
from shared.schemas import InputSpec, ParamSpec, PluginSpec

from ..plugin_host import JobContext, Output, Plugin, Progress
from .gaussians4d import _stream_with_outputs, animated_mesh, gaussian_frames, mesh_outputs, rest_mesh_from_arrays

log = logging.getLogger(__name__)

CHECKPOINT_ENV = "TESSERA4D_MVDIFF_CHECKPOINT"
ALLOW_UNTRAINED_ENV = "TESSERA4D_ALLOW_UNTRAINED"
CONDITION_ARRAYS = ["images", "alphas", "c2w", "rest_vertices", "rest_faces"]
VIDEO_DISTANCE = 3.0  # video_to_4d: the ring's radius in world units (Animate3D renders at distance 3, fovy 40°)
VIDEO_FOV = np.radians(40.0)
GENERATED_FOLDER = "generated"  # in the job folder: view_V/frame_FFFF.png of what the model made


# -- shared parameters -------------------------------------------------------------------------------------------


def _model_params(frames_default: int) -> list[ParamSpec]:
    return [
        ParamSpec("prompt", "str", default="", help="What the motion should be, e.g. 'a horse galloping'."),
        ParamSpec("frames", "int", default=frames_default, min=0, max=256, help="Frames to generate (≤ the model's)."),
        ParamSpec("seed", "int", default=0, min=0, help="Another seed, another motion."),
        ParamSpec("steps", "int", default=25, min=1, max=500, help="Sampling steps (DDIM)."),
        ParamSpec("guidance", "float", default=7.5, min=1.0, max=30.0, help="Classifier-free guidance scale."),
        ParamSpec(
            "free_init",
            "int",
            default=1,
            min=1,
            max=5,
            help="Sampling passes with FreeInit (1: off; Animate3D uses 3, which triples the sampling time).",
        ),
        ParamSpec(
            "checkpoint",
            "path",
            default="",
            help=f"Multi-view video model folder on the backend (empty: ${CHECKPOINT_ENV}); make one with "
            "`tessera4d mvdiff convert-animate3d`.",
        ),
        ParamSpec(
            "sds_steps",
            "int",
            default=0,
            min=0,
            max=5000,
            help="4D-SDS refinement steps after the reconstruction (Animate3D: 200; each costs about one "
            "sampling step).",
        ),
        ParamSpec(
            "preset",
            "enum",
            default="fast",
            choices=["fast", "quality"],
            help="4D fit preset: fast (CPU-friendly) or quality (GPU).",
        ),
        ParamSpec("fit_iterations", "int", default=0, min=0, help="4D fit steps; 0 uses the preset's."),
        ParamSpec("preview_every", "int", default=5, min=0, help="Send a preview every this many sampling steps."),
        ParamSpec("name", "str", default="", help="Name of the results."),
    ]


@dataclass
class Model:
    """A loaded pipeline and what its folder says about it."""

    pipe: Any
    info: dict
    folder: Path

    @property
    def untrained(self) -> bool:
        return not bool(self.info.get("trained", False))

    @property
    def resolution(self) -> int:
        return int(self.info.get("resolution") or 256)

    @property
    def views(self) -> int:
        return int(self.info.get("views") or 4)

    @property
    def max_frames(self) -> int:
        return int(self.info.get("max_frames") or 16)


def allow_untrained() -> bool:
    return os.environ.get(ALLOW_UNTRAINED_ENV, "") == "1"


def checkpoint_folder(param: str | None) -> Path:
    """The model folder from the param or the environment; InputError saying how to get one."""
    value = (param or "").strip() or os.environ.get(CHECKPOINT_ENV, "").strip()
    if not value:
        raise InputError(
            "No multi-view video model: set the checkpoint parameter (the add-on's Model Folder) or "
            f"{CHECKPOINT_ENV} on the backend to a model folder. Make one from the published Animate3D parts "
            "with `tessera4d mvdiff convert-animate3d SRC DST`."
        )
    return Path(value).expanduser().resolve()


def load_model(ctx: JobContext, folder: Path) -> Model:
    """The pipeline of `folder` on the job's device, through the host's model cache (a second job reuses it)."""
    from ..mvdiff.checkpoint import load_pipeline, model_info

    allow = allow_untrained()

    def load() -> Model:
        pipe = load_pipeline(folder, device=ctx.device, allow_untrained=allow)
        for part in ("vae", "unet", "text_encoder"):
            module = getattr(pipe, part, None)
            if module is not None:
                module.requires_grad_(False)  # inference and SDS only: no gradients into the weights
        return Model(pipe, model_info(folder), folder)

    import torch

    try:
        return ctx.models.get(f"mvdiff:{folder}:{ctx.device}:{'any' if allow else 'trained'}", load)
    except torch.cuda.OutOfMemoryError as exc:
        raise _out_of_memory(ctx, f"loading the model from {folder}", exc) from exc


def _check_frames(frames: int, model: Model) -> int:
    count = int(frames) or model.max_frames
    if count < 2:
        raise InputError(f"Generate at least 2 frames (got {frames}).")
    if count > model.max_frames:
        raise InputError(
            f"The model in {model.folder.name} makes at most {model.max_frames} frames; asked for {count}. "
            "Lower Frames."
        )
    return count


def _out_of_memory(ctx: JobContext, what: str, exc: BaseException) -> InputError:
    freed = ctx.models.release()
    log.warning("CUDA out of memory in %s (%s); %s", what, exc, freed)
    return InputError(
        f"The GPU ran out of memory {what}; the models were released and the backend keeps serving. Try fewer "
        "frames, fewer SDS steps, or the 'fast' preset."
    )


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, C) float32 → (N, size, size, C) by area averaging (bilinear when enlarging)."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(np.ascontiguousarray(images, np.float32)).permute(0, 3, 1, 2)
    if x.shape[-2:] != (size, size):
        mode = "area" if min(x.shape[-2:]) >= size else "bilinear"
        x = F.interpolate(x, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return x.permute(0, 2, 3, 1).numpy().astype(np.float32)


def _over_white(images: np.ndarray, alphas: np.ndarray | None) -> np.ndarray:
    if alphas is None:
        return np.clip(images, 0.0, 1.0).astype(np.float32)
    a = np.clip(alphas, 0.0, 1.0)[..., None]
    return (np.clip(images, 0.0, 1.0) * a + 1.0 - a).astype(np.float32)


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def look_at_centre(c2w: np.ndarray) -> np.ndarray:
    """The point nearest to every camera's optical axis (OpenGL: looking along −Z), least squares."""
    c2w = np.asarray(c2w, np.float64)
    centres, forward = c2w[:, :3, 3], -c2w[:, :3, 2]
    forward = forward / np.linalg.norm(forward, axis=1, keepdims=True)
    projectors = np.eye(3) - forward[:, :, None] * forward[:, None, :]
    point, *_ = np.linalg.lstsq(projectors.sum(0), (projectors @ centres[:, :, None]).sum(0)[:, 0], rcond=None)
    return point


def model_cameras(c2w: np.ndarray) -> np.ndarray:
    """World cameras (V,4,4) around an object → the model's (V,4,4): centred on what they look at, unit distance."""
    from ..mvdiff.cameras import normalize_cameras

    centred = np.asarray(c2w, np.float64).copy()
    centred[:, :3, 3] -= look_at_centre(c2w)
    return normalize_cameras(centred)


def _save_generated(folder: Path, frames: np.ndarray) -> None:
    from PIL import Image

    for v in range(frames.shape[0]):
        (folder / f"view_{v}").mkdir(parents=True, exist_ok=True)
        for f in range(frames.shape[1]):
            Image.fromarray(_to_uint8(frames[v, f])).save(folder / f"view_{v}" / f"frame_{f:04d}.png")


def generate(ctx: JobContext, model: Model, condition: np.ndarray, mask: np.ndarray, cameras: np.ndarray):
    """Sample the multi-view video on a helper thread, streaming progress and previews.

    A generator: `frames = yield from generate(...)`; frames (V, F, R, R, 3) float32.
    """
    import torch

    p = ctx.params
    steps, every = int(p["steps"]), int(p.get("preview_every") or 0)
    previews: collections.deque = collections.deque()

    def solve(progress, check):
        def callback(step: int, total: int, preview) -> None:
            check()
            fraction = 0.5 * step / max(total, 1)
            message = f"sampling step {step}/{total}"
            if every and (step % every == 0 or step == total):
                middle = preview()[:, preview_frame]
                previews.append(Progress("generate", fraction, message, {"preview": _to_uint8(middle)}))
            progress("generate", fraction, message)

        preview_frame = condition.shape[1] // 2
        return model.pipe(
            str(p.get("prompt") or ""),
            condition,
            mask,
            cameras,
            num_frames=condition.shape[1],
            num_inference_steps=steps,
            guidance_scale=float(p["guidance"]),
            seed=int(p["seed"]),
            callback=callback,
            allow_untrained=allow_untrained(),
            free_init_iterations=int(p.get("free_init") or 1),
        ).frames

    try:
        frames = yield from _stream_with_outputs(ctx, solve, previews)
    except torch.cuda.OutOfMemoryError as exc:
        raise _out_of_memory(ctx, f"generating {condition.shape[0]}×{condition.shape[1]} views", exc) from exc
    frames = np.asarray(frames, np.float32)
    _save_generated(ctx.job_dir / GENERATED_FOLDER, frames)
    return frames


def reconstruct(ctx: JobContext, model: Model, frames, alphas, c2w, fov_x: float, rest_mesh, cameras, prompt_images):
    """Stage 1 + 2 (backend.mvdiff.animate) on a helper thread; returns its AnimateResult.

    prompt_images (V, R, R, 3): each view's image prompt for a model with an IP-Adapter (what sampling used).
    """
    import torch

    from ..gaussians4d.fit import PRESETS
    from ..mvdiff.animate import animate
    from ..mvdiff.sds import sds_loss

    p = ctx.params
    sds_steps = int(p.get("sds_steps") or 0)
    preset = PRESETS[str(p.get("preset") or "fast")]
    iterations = int(p.get("fit_iterations") or 0) or None  # None: the preset's (its mesh_iterations with a mesh)

    def solve(progress, check):
        sds = None
        if sds_steps > 0:
            pipe = model.pipe
            device = torch.device(ctx.device)
            image_embeds = None
            with torch.no_grad():
                embeds = pipe.encode_prompt(str(p.get("prompt") or ""), "")
                if getattr(pipe, "image_encoder", None) is not None:
                    image_embeds = pipe.encode_image_prompt(torch.as_tensor(np.asarray(prompt_images, np.float32)))
            cams = torch.as_tensor(np.asarray(cameras, np.float32).reshape(-1, 16), device=device)
            generator = torch.Generator(device=device).manual_seed(int(p["seed"]))

            def sds(renders):
                return sds_loss(
                    pipe, renders, cams, embeds, generator=generator, resolution=model.resolution,
                    image_embeds=image_embeds,
                )  # fmt: skip

        return animate(
            frames,
            alphas,
            c2w,
            fov_x,
            rest_mesh,
            preset=preset,
            iterations=iterations,
            sds=sds,
            sds_steps=sds_steps,
            progress=lambda stage, f, msg: progress(stage, 0.5 + 0.45 * f, msg),
            check_cancelled=check,
            device=ctx.device,
            seed=int(p["seed"]),
        )

    try:
        return (yield from _stream_with_outputs(ctx, solve, collections.deque()))
    except torch.cuda.OutOfMemoryError as exc:
        raise _out_of_memory(ctx, "fitting the 4D motion", exc) from exc
    except InputError as exc:
        if isinstance(exc.__cause__, torch.cuda.OutOfMemoryError):  # fit() reports its own OOM: release too
            ctx.models.release()
        raise


def _check_generated(alphas: np.ndarray) -> None:
    """InputError when the generated (not conditioned) entries show no object on the white background."""
    if alphas.size and not (alphas > 0.5).any():
        raise InputError(
            "The model generated empty views (only white background): try another seed or prompt, or check that "
            "the object is not itself white."
        )


def _summary(model: Model, seconds: dict[str, float]) -> str:
    times = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
    kind = "UNTRAINED test model (random weights: not a real result)" if model.untrained else model.info.get("kind")
    return f"{times}; model {model.folder.name} ({kind})"


# -- animate_object ------------------------------------------------------------------------------------------------


def condition_views(ctx: JobContext) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, tuple]:
    """(images over white (V,H,W,3), alphas (V,H,W), c2w (V,4,4), fov_x, rest mesh) from the job; InputError."""
    a = ctx.arrays
    missing = [k for k in CONDITION_ARRAYS if k not in a]
    if "rest_vertices" in missing or "rest_faces" in missing or ("rest_vertices" in a and len(a["rest_vertices"]) == 0):
        raise InputError(
            "The object has no geometry: animate_object needs the object's mesh (rest_vertices (N,3) and "
            "rest_faces (M,3) with at least one triangle). Select a mesh object with faces."
        )
    if missing:
        raise InputError(f"pipeline.animate_object needs the arrays {', '.join(CONDITION_ARRAYS)}; missing: "
                         f"{', '.join(missing)}.")  # fmt: skip
    rest_mesh = rest_mesh_from_arrays(a)
    if len(rest_mesh[1]) == 0:
        raise InputError("The object has no faces: animate_object moves a surface; give the mesh's triangles.")
    images = np.asarray(a["images"], np.float32)
    alphas = np.asarray(a["alphas"], np.float32)
    c2w = np.asarray(a["c2w"], np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"'images' must be the condition renders (V, H, W, 3), got {images.shape}.")
    v, h, w = images.shape[:3]
    if h != w:
        raise InputError(f"The condition renders must be square (the model's are), got {w}×{h}.")
    if alphas.shape != (v, h, w) or c2w.shape != (v, 4, 4):
        raise InputError(
            f"'alphas' must be (V, H, W) = {(v, h, w)} and 'c2w' (V, 4, 4) = {(v, 4, 4)}; got {alphas.shape} "
            f"and {c2w.shape}."
        )
    for name, arr in (("images", images), ("alphas", alphas), ("c2w", c2w), ("rest_vertices", rest_mesh[0])):
        if not np.isfinite(arr).all():
            raise InputError(f"'{name}' holds NaN or infinite values.")
    if not (alphas > 0.5).any():
        raise InputError("The object is not in any condition render (every alpha is 0): check the object.")
    fov_x = float(ctx.params.get("fov_x") or 0.0)
    if not 0.0 < fov_x < np.pi:
        raise InputError(f"fov_x must be the renders' horizontal field of view in radians (0, π), got {fov_x}.")
    return _over_white(images, alphas), alphas, c2w, fov_x, rest_mesh


class AnimateObject(Plugin):
    """Renders of a static object → multi-view video → the object's own mesh moving (Animate3D)."""

    spec: ClassVar[PluginSpec] = PluginSpec(
        name="pipeline.animate_object",
        summary="Animate a static object from a text prompt: multi-view video diffusion, then its own mesh moves.",
        params=[
            *_model_params(16),
            ParamSpec("fov_x", "float", default=0.0, min=0.0, help="Horizontal field of view of the renders (rad)."),
        ],
        inputs=[
            InputSpec(
                "views",
                "multiview_frames",
                help="images (V,H,W,3) f32 straight colour, alphas (V,H,W) f32, c2w (V,4,4) f32 world camera→world "
                "(OpenGL) at the model's camera ring, fov_x; rest_vertices (N,3) f32 + rest_faces (M,3) i32 in "
                "world space.",
                arrays=CONDITION_ARRAYS,
            )
        ],
        outputs=["mesh_frames"],
    )

    def run(self, ctx: JobContext) -> Iterator[Progress | Output]:
        from ..gaussians4d.export import export_mesh_sequence
        from ..gaussians4d.store import save_model
        from ..mvdiff.animate import estimate_alpha

        p = ctx.params
        name = str(p.get("name") or "Animated object")
        yield Progress("reading", 0.0, "Checking the condition renders and the mesh")
        images, alphas, c2w, fov_x, rest_mesh = condition_views(ctx)
        yield Progress("loading", 0.01, "Loading the multi-view video model")
        clock = time.perf_counter()
        model = load_model(ctx, checkpoint_folder(p.get("checkpoint")))
        seconds = {"load": time.perf_counter() - clock}
        if len(images) != model.views:
            raise InputError(f"The model takes {model.views} condition views; {len(images)} were sent.")
        frames = _check_frames(int(p["frames"]), model)
        r = model.resolution
        condition = np.ones((model.views, frames, r, r, 3), np.float32)
        condition[:, 0] = _resize(images, r)
        mask = np.zeros((model.views, frames), bool)
        mask[:, 0] = True  # frame 0 of every view is the static object, restored after every step
        cameras = model_cameras(c2w)
        yield Progress("generate", 0.02, f"{model.views} views × {frames} frames at {r}², {p['steps']} steps")

        clock = time.perf_counter()
        generated = yield from generate(ctx, model, condition, mask, cameras)
        seconds["generate"] = time.perf_counter() - clock
        gen_alphas = estimate_alpha(generated)
        _check_generated(gen_alphas[:, 1:])
        gen_alphas[:, 0] = _resize(alphas[..., None], r)[..., 0]  # frame 0 is the renders: their own silhouette
        clock = time.perf_counter()
        out = yield from reconstruct(ctx, model, generated, gen_alphas, c2w, fov_x, rest_mesh, cameras, condition[:, 0])
        seconds["4D"] = time.perf_counter() - clock
        positions = out.fit.vertex_frames(out.times)
        rest = np.asarray(rest_mesh[0], np.float32)
        faces = np.asarray(rest_mesh[1], np.int32)
        save_model(ctx.job_dir / "model", out.fit)
        export_mesh_sequence(ctx.job_dir / "mesh_sequence.npz", rest, faces, positions)
        for item in mesh_outputs(rest, faces, positions, name):
            item.meta["untrained"] = model.untrained
            yield item
        yield Progress("done", 1.0, f"{len(rest)} vertices × {len(positions)} frames; {_summary(model, seconds)}")


# -- video_to_4d ---------------------------------------------------------------------------------------------------


def video_frames(ctx: JobContext, count: int, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """`count` frames evenly over the sent video, padded to square with white and resized to size²:
    (images over white (F,size,size,3), alphas (F,size,size) or None)."""
    a = ctx.arrays
    if "images" not in a:
        raise InputError("pipeline.video_to_4d needs the array 'images': the video's frames (F, H, W, 3).")
    images = np.asarray(a["images"], np.float32)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise InputError(f"'images' must be the video's frames (F, H, W, 3), got shape {images.shape}.")
    n, h, w = images.shape[:3]
    alphas = np.asarray(a["alphas"], np.float32) if "alphas" in a else None
    if alphas is not None and alphas.shape != (n, h, w):
        raise InputError(f"'alphas' must be (F, H, W) = {(n, h, w)} like the images, got {alphas.shape}.")
    if not np.isfinite(images).all() or (alphas is not None and not np.isfinite(alphas).all()):
        raise InputError("The video holds NaN or infinite values.")
    if n < 2:
        raise InputError("A video needs at least 2 frames to move; got 1. Pick an image sequence or movie.")
    pick = np.round(np.linspace(0, n - 1, count)).astype(int)
    rgb = _over_white(images[pick], None if alphas is None else alphas[pick])
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    square = np.ones((count, side, side, 4), np.float32)
    square[..., 3] = 0.0
    square[:, top : top + h, left : left + w, :3] = rgb
    square[:, top : top + h, left : left + w, 3] = 1.0 if alphas is None else np.clip(alphas[pick], 0, 1)
    square = _resize(square, size)
    return square[..., :3], (None if alphas is None else square[..., 3])


class VideoTo4D(Plugin):
    """A monocular video → multi-view video → 4D Gaussians + an animated mesh (4Diffusion-style)."""

    spec: ClassVar[PluginSpec] = PluginSpec(
        name="pipeline.video_to_4d",
        summary="Turn a video of an object into 4D: generated views around it, then 4D Gaussians and a mesh.",
        params=[
            *_model_params(0),
            ParamSpec("elevation", "float", default=15.0, min=-30.0, max=60.0, help="Camera elevation (degrees)."),
            ParamSpec("mesh", "bool", default=True, help="Also make an animated mesh (one topology)."),
            ParamSpec("mesh_resolution", "int", default=96, min=16, max=512, help="Voxels for the mesh."),
        ],
        inputs=[
            InputSpec(
                "video",
                "images",
                help="images (F,H,W,3) f32 in [0,1], the object on white; optional alphas (F,H,W) f32.",
                arrays=["images", "alphas"],
            )
        ],
        outputs=["gaussian_frames", "mesh_frames"],
    )

    def run(self, ctx: JobContext) -> Iterator[Progress | Output]:
        from ..gaussians4d.export import export_mesh_sequence
        from ..gaussians4d.store import save_model
        from ..mvdiff.animate import estimate_alpha
        from ..mvdiff.cameras import mvdream_cameras, to_world_cameras

        p = ctx.params
        name = str(p.get("name") or "Video 4D")
        if "images" not in ctx.arrays:
            video_frames(ctx, 1, 8)  # raises the missing-array error before the model loads
        yield Progress("loading", 0.0, "Loading the multi-view video model")
        clock = time.perf_counter()
        model = load_model(ctx, checkpoint_folder(p.get("checkpoint")))
        seconds = {"load": time.perf_counter() - clock}
        frames = _check_frames(int(p["frames"]) or min(model.max_frames, len(ctx.arrays["images"])), model)
        r = model.resolution
        images, alphas = video_frames(ctx, frames, r)
        condition = np.ones((model.views, frames, r, r, 3), np.float32)
        condition[0] = images
        mask = np.zeros((model.views, frames), bool)
        mask[0] = True  # the video is view 0 at every frame; the other views are generated
        cameras = mvdream_cameras(model.views, float(p["elevation"]))
        c2w = to_world_cameras(cameras, np.zeros(3), VIDEO_DISTANCE)
        yield Progress("generate", 0.02, f"{model.views} views × {frames} frames at {r}², {p['steps']} steps")

        clock = time.perf_counter()
        generated = yield from generate(ctx, model, condition, mask, cameras)
        seconds["generate"] = time.perf_counter() - clock
        gen_alphas = estimate_alpha(generated)
        _check_generated(gen_alphas[1:])
        if alphas is not None:
            gen_alphas[0] = alphas  # the video's own silhouette where it is known
        clock = time.perf_counter()
        prompts = np.repeat(images[:1], model.views, axis=0)  # every view's image prompt: the video's first frame
        out = yield from reconstruct(ctx, model, generated, gen_alphas, c2w, float(VIDEO_FOV), None, cameras, prompts)
        seconds["4D"] = time.perf_counter() - clock
        fitted = out.fit.model.cpu()
        save_model(ctx.job_dir / "model", out.fit)
        untrained = model.untrained
        for item in gaussian_frames(fitted, out.times, name, ctx.check_cancelled):
            item.meta["untrained"] = untrained
            yield item
        if p.get("mesh", True):
            yield Progress("mesh", 0.96, "Meshing the Gaussians")
            rest, faces, positions = animated_mesh(fitted, None, out.times, int(p["mesh_resolution"]))
            export_mesh_sequence(ctx.job_dir / "mesh_sequence.npz", rest, faces, positions)
            for item in mesh_outputs(rest, faces, positions, f"{name} mesh"):
                item.meta["untrained"] = untrained
                yield item
        yield Progress("done", 1.0, f"{len(fitted)} Gaussians × {len(out.times)} frames; {_summary(model, seconds)}")

"""Motion tokens for the add-on: `motion.inbetween`, `motion.edit`, `motion.generate`, `motion.train`,
`motion.tokenize` (backend.motion does the work; this module maps the wire onto it).

Clips arrive in the wire's BVH convention (shared/results.py `motion.clip`): params `joints` ("\\n"-joined
names), `fps`, arrays `parents` (J,) int32, `offsets` (J,3), `rotations` (T,J,4), `root_positions` (T,3).
`backend.motion.wire` matches them to the model's skeleton (also when the armature lacks the model's
static top joint, as Blender's BVH importer makes it). Results are `motion.clip`s on the wire's joints;
frames the model keeps are returned exactly as they were sent (bit for bit).

Models stay loaded between jobs in the host's model cache, keyed by folder and file times, so only the
first call on a model pays for loading it. `motion.train` streams the trainer's progress and can be
cancelled: the checkpoint in `out` survives and the next run with the same settings resumes from it; it
ends with no result (the add-on makes `out` the scene's model). `motion.tokenize` writes the token grid to
an .npz (param `out`, default the job folder's tokens.npz) and says where in its last progress message —
there is no token result type on the wire.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shared.errors import InputError
from shared.results import MOTION_CLIP, check_motion_clip
from shared.schemas import InputSpec, ParamSpec, PluginSpec

from ..plugin_host import JobContext, ModelCache, Output, Plugin, Progress, stream_progress

CLIP_ARRAYS = ["parents", "offsets", "rotations", "root_positions"]
MODEL_FILES = ("config.json", "model.safetensors")


_THREADS_LOCK = threading.Lock()


@contextmanager
def inference_threads():
    """One torch CPU thread while a model edits a clip: the tensors are small (a clip's tokens), so extra
    threads only add hand-off cost, and on busy cores they wait on each other. Measured on 2 cores with a
    training run beside it: 3 s per in-betweening call of 247 frames with 2 threads, 45 ms with 1."""
    import torch

    with _THREADS_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def _model_param() -> ParamSpec:
    return ParamSpec(
        "model", "path", required=True, help="Motion model folder on the backend machine (see motion.train)."
    )


def _clip_params() -> list[ParamSpec]:
    return [
        ParamSpec("joints", "str", default="", help="The clip's joint names, one per line, parents first."),
        ParamSpec("fps", "float", default=0.0, min=0.0, help="The clip's frame rate (0: the model's)."),
    ]


def _clip_input(required: bool = True, arrays: list[str] | None = None) -> InputSpec:
    return InputSpec(
        "clip",
        "armature_motion",
        help="parents (J,) int32, offsets (J,3) f32, rotations (T,J,4) f32 local (w,x,y,z), root_positions (T,3) "
        "f32, in the BVH convention (Y-up, world-aligned rest frames).",
        required=required,
        arrays=arrays or CLIP_ARRAYS,
    )


def load_model(models: ModelCache, folder: str):
    """The MotionModel in `folder`, from the cache unless its files changed since it was loaded."""
    from ..motion.model import MotionModel

    path = Path(folder).expanduser()
    if not path.is_dir():
        MotionModel.from_pretrained(path)  # raises the model's own "does not exist" message
    stamps = tuple((path / f).stat().st_mtime_ns if (path / f).exists() else 0 for f in MODEL_FILES)
    key = f"motion:{path.resolve()}:{stamps}"
    return models.get(key, lambda: MotionModel.from_pretrained(path))


def _names(text: str, count: int | None = None) -> list[str]:
    names = [n.strip() for n in str(text or "").split("\n") if n.strip()]
    if count is not None and len(names) != count:
        raise InputError(f"'joints' names {len(names)} joints but the arrays have {count}; send one name per joint.")
    return names


def _array(ctx: JobContext, name: str, plugin: str) -> np.ndarray:
    if name not in ctx.arrays:
        raise InputError(f"{plugin} needs the array '{name}'; it was not sent.")
    return np.asarray(ctx.arrays[name])


def wire_clip(ctx: JobContext, model, plugin: str):
    """(Motion on the model's skeleton, wire names, sent rotations, sent root positions) from the job."""
    from ..motion.wire import motion_from_wire

    parents = _array(ctx, "parents", plugin)
    rotations = _array(ctx, "rotations", plugin).astype(np.float32, copy=False)
    root = _array(ctx, "root_positions", plugin).astype(np.float32, copy=False)
    offsets = _array(ctx, "offsets", plugin)
    names = _names(ctx.params.get("joints", ""), len(parents))
    fps = float(ctx.params.get("fps") or 0.0) or model.fps
    motion = motion_from_wire(model.skeleton, names, parents, offsets, rotations, root, fps, "clip")
    return motion, names, rotations, root


def clip_output(motion, names: list[str], name: str, kept: list[tuple[int, int]]) -> Output:
    from ..motion.wire import motion_to_wire

    rotations, root = motion_to_wire(motion, names)
    meta = {"name": name, "fps": float(motion.fps), "joints": list(names), "kept": [[int(a), int(b)] for a, b in kept]}
    arrays = {"rotations": rotations, "root_positions": root}
    check_motion_clip(arrays, meta)
    return Output(MOTION_CLIP, meta, arrays)


def _restore(out: Output, rotations: np.ndarray, root: np.ndarray, frames: np.ndarray, joints=None) -> None:
    """Frames (and joints) the model keeps get the sent values bit for bit (the skeleton mapping is exact only
    up to float rounding when the model's top joint sits away from the origin)."""
    rot, pos = out.arrays["rotations"], out.arrays["root_positions"]
    if joints is None:
        rot[frames], pos[frames] = rotations[frames], root[frames]
    else:
        rot[np.ix_(frames, joints)] = rotations[np.ix_(frames, joints)]


class MotionInbetween(Plugin):
    """Generate the frames between the kept ones; kept frames come back unchanged."""

    spec: ClassVar[PluginSpec] = PluginSpec(
        name="motion.inbetween",
        summary="Fill in the motion between kept frames of a clip with a motion model (kept frames stay exact).",
        params=[
            _model_param(),
            *_clip_params(),
            ParamSpec(
                "keep",
                "str",
                required=True,
                help="Frames to keep exactly, 0-based inclusive clip frames: e.g. 0-0,12-12,30-30.",
            ),
            ParamSpec(
                "method",
                "enum",
                default="auto",
                choices=["auto", "match", "tokens"],
                help="match: blend the model's library segments that fit each gap best; tokens: the masked token "
                "model; auto: match when the model keeps a library.",
            ),
            ParamSpec(
                "mirror",
                "bool",
                default=True,
                help="Matching may also use the library clips' left-right mirror images (off: handed moves stay "
                "on the side the library has them).",
            ),
            ParamSpec("seed", "int", default=0, min=0, help="Seed of the token sampling (method tokens)."),
        ],
        inputs=[_clip_input()],
        outputs=["motion"],
    )

    def run(self, ctx: JobContext):
        from ..motion.model import INBETWEEN_METHOD_LABELS, parse_ranges

        started = time.perf_counter()
        model = load_model(ctx.models, ctx.params["model"])
        motion, names, rotations, root = wire_clip(ctx, model, self.spec.name)
        keep = parse_ranges(ctx.params["keep"], motion.n_frames, "to keep")
        method = model.inbetween_method(ctx.params.get("method") or "auto")
        used = INBETWEEN_METHOD_LABELS[method]
        yield Progress("inbetween", 0.1, f"{motion.n_frames} frames, keeping {ctx.params['keep']}, by {used}")
        if method == "match" and not model.library_decoded:
            clips = len(model.library_frames)
            yield Progress("inbetween", 0.2, f"decoding the model's library of {clips} clips (once per loaded model)")
        ctx.check_cancelled()
        with inference_threads():
            seed, mirror = int(ctx.params.get("seed") or 0), bool(ctx.params.get("mirror", True))
            result = model.inbetween(motion, keep, seed=seed, method=method, mirror=mirror)
        out = clip_output(result, names, "in-between", keep)
        kept = np.concatenate([np.arange(a, b + 1) for a, b in keep])
        _restore(out, rotations, root, kept)
        ms = (time.perf_counter() - started) * 1000
        yield Progress("done", 1.0, f"in-betweened {motion.n_frames} frames in {ms:.0f} ms")
        yield out


class MotionEdit(Plugin):
    """Regenerate chosen bones over a frame range; everything else comes back unchanged."""

    spec: ClassVar[PluginSpec] = PluginSpec(
        name="motion.edit",
        summary="Regenerate the motion of chosen bones (or body parts) over a frame range with a motion model.",
        params=[
            _model_param(),
            *_clip_params(),
            ParamSpec("frames", "str", required=True, help="Frames to regenerate, 0-based inclusive: e.g. 20-50."),
            ParamSpec("bones", "str", default="", help="Bones to regenerate, one per line."),
            ParamSpec("parts", "str", default="", help="Or body parts to regenerate, comma-separated (left_arm, …)."),
            ParamSpec("seed", "int", default=0, min=0, help="Another seed, another variation."),
        ],
        inputs=[_clip_input()],
        outputs=["motion"],
    )

    def run(self, ctx: JobContext):
        from ..motion.model import parse_ranges
        from ..motion.parts import resolve_parts
        from ..motion.wire import wire_layout

        started = time.perf_counter()
        p = ctx.params
        model = load_model(ctx.models, p["model"])
        motion, names, rotations, root = wire_clip(ctx, model, self.spec.name)
        ranges = parse_ranges(p["frames"], motion.n_frames, "range to edit")
        if len(ranges) != 1:
            raise InputError(f"Edit one frame range at a time (e.g. 20-50), got {p['frames']!r}")
        a, b = ranges[0]
        shift = 1 if wire_layout(model.skeleton, names, ctx.arrays["parents"]) == "without_top" else 0
        joints: set[int] = set()
        for bone in _names(p.get("bones", "")):
            if bone not in names:
                raise InputError(f"Bone {bone!r} is not one of the clip's joints ({', '.join(names[:8])}, …)")
            joints.add(names.index(bone) + shift)
        parts = [s.strip() for s in str(p.get("parts") or "").split(",") if s.strip()]
        if parts:
            joints.update(j for j in resolve_parts(model.skeleton, parts) if j >= shift)
        if not joints:
            raise InputError("Choose the bones (or body parts) to regenerate")
        yield Progress("edit", 0.1, f"{len(joints)} joints over frames {a}-{b}")
        ctx.check_cancelled()
        with inference_threads():
            result = model.edit(motion, (a, b), sorted(joints), seed=int(p.get("seed") or 0))
        t = motion.n_frames
        kept = [r for r in ((0, a - 1), (b + 1, t - 1)) if r[0] <= r[1]]
        out = clip_output(result, names, "edit", kept)
        outside = np.array([f for f in range(t) if not a <= f <= b], np.int64)
        _restore(out, rotations, root, outside)
        untouched = [w for w in range(len(names)) if w + shift not in joints]
        if untouched:
            _restore(out, rotations, root, np.arange(a, b + 1), untouched)
        if shift not in joints:  # the wire root is not regenerated: its path stays as sent
            out.arrays["root_positions"][a : b + 1] = root[a : b + 1]
        ms = (time.perf_counter() - started) * 1000
        yield Progress("done", 1.0, f"regenerated {len(joints)} joints over frames {a}-{b} in {ms:.0f} ms")
        yield out


class MotionGenerate(Plugin):
    """A new clip from a text (when the model was trained with labels)."""

    spec: ClassVar[PluginSpec] = PluginSpec(
        name="motion.generate",
        summary="Generate a new clip for a skeleton from a text prompt with a motion model.",
        params=[
            _model_param(),
            *_clip_params(),
            ParamSpec("text", "str", default="", help="What the motion should be, e.g. 'walk, tired'."),
            ParamSpec("frames", "int", default=120, min=1, help="Length of the clip in frames."),
            ParamSpec("seed", "int", default=0, min=0, help="Another seed, another take."),
        ],
        inputs=[_clip_input(arrays=["parents", "offsets"])],
        outputs=["motion"],
    )

    def run(self, ctx: JobContext):
        from ..motion.wire import wire_layout

        p = ctx.params
        model = load_model(ctx.models, p["model"])
        parents = _array(ctx, "parents", self.spec.name)
        names = _names(p.get("joints", ""), len(parents))
        wire_layout(model.skeleton, names, parents)
        yield Progress("generate", 0.1, f"{p['frames']} frames: {p.get('text') or '(no text)'}")
        ctx.check_cancelled()
        with inference_threads():
            result = model.generate(int(p["frames"]), str(p.get("text") or ""), seed=int(p.get("seed") or 0))
        result.name = str(p.get("text") or "generated")[:60]
        yield Progress("done", 1.0, f"generated {result.n_frames} frames")
        yield clip_output(result, names, result.name, [])


class MotionTokenize(Plugin):
    """A clip → its token grid (time tokens × body parts), written to an .npz."""

    spec: ClassVar[PluginSpec] = PluginSpec(
        name="motion.tokenize",
        summary="Turn a clip (a BVH path or the arrays) into motion tokens, written to an .npz file.",
        params=[
            _model_param(),
            ParamSpec("input", "path", default="", help="BVH file on the backend machine (instead of the arrays)."),
            ParamSpec("out", "path", default="", help="The .npz to write (default: tokens.npz in the job folder)."),
            *_clip_params(),
        ],
        inputs=[_clip_input(required=False)],
        outputs=[],
    )

    def run(self, ctx: JobContext):
        from ..motion.bvh import read_bvh

        p = ctx.params
        model = load_model(ctx.models, p["model"])
        if p.get("input") and any(k in ctx.arrays for k in CLIP_ARRAYS):
            raise InputError("Give the clip either as a BVH path (input) or as arrays, not both.")
        motion = read_bvh(p["input"]) if p.get("input") else wire_clip(ctx, model, self.spec.name)[0]
        with inference_threads():
            tokens = model.tokenize(motion)
        out = Path(p.get("out") or ctx.job_dir / "tokens.npz")
        save_tokens(out, tokens, model)
        what = "time × parts × layers" if tokens.ndim == 3 else "time × parts"
        yield Progress("done", 1.0, f"{' × '.join(map(str, tokens.shape))} tokens ({what}) → {out}")


def save_tokens(out: Path, tokens: np.ndarray, model) -> None:
    """tokens (T', G) int32, parts (G,) names, downsample (frames per token)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, tokens=tokens.astype(np.int32), parts=np.array(list(model.parts)), downsample=model.downsample)
    except OSError as exc:
        raise InputError(f"Cannot write {out}: {exc.strerror or exc}") from None


def train_config(steps: int, overrides: dict[str, Any] | None = None):
    """TrainConfig for `steps` total: 4/9 tokenizer, 3/9 transformer, 2/9 residual transformer (the default run's
    2,000 / 1,500 / 1,000); `overrides` replaces fields."""
    from ..motion.train import TrainConfig

    tok = max(1, round(steps * 4 / 9))
    trans = min(max(0, steps - tok), round(steps * 3 / 9))
    values: dict[str, Any] = {
        "tokenizer_steps": tok,
        "transformer_steps": trans,
        "residual_steps": max(0, steps - tok - trans),
    }
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides or {}) - known)
    if unknown:
        raise InputError(f"Unknown training setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
    defaults = TrainConfig()
    for name, value in (overrides or {}).items():
        _check_setting(name, value, getattr(defaults, name))
    values.update(overrides or {})
    return TrainConfig(**values)


def _check_setting(name: str, value: Any, default: Any) -> None:
    """InputError unless a training setting has its default's type and a usable value: sizes, counts and rates
    positive (steps may be 0, weights and seed ≥ 0), a fraction in [0, 1), a window of at least MIN_WINDOW."""
    from ..motion.model import MIN_WINDOW

    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise InputError(f"Training setting {name!r} must be a JSON object of model sizes, got {value!r}")
        for key, inner in value.items():
            if not isinstance(inner, bool | int | float | list):
                raise InputError(f"Training setting {name}.{key} must be a number, got {inner!r}")
            if isinstance(inner, int | float) and not isinstance(inner, bool) and inner <= 0:
                raise InputError(f"Training setting {name}.{key} must be positive, got {inner!r}")
        return
    numeric = isinstance(default, int | float) and not isinstance(default, bool)
    if numeric and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise InputError(f"Training setting {name!r} must be a number (default {default!r}), got {value!r}")
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
        raise InputError(f"Training setting {name!r} must be a whole number (default {default!r}), got {value!r}")
    if not numeric:
        return
    if name == "held_out_fraction":
        ok, need = 0.0 <= value < 1.0, "in [0, 1)"
    elif name == "window":
        ok, need = value >= MIN_WINDOW, f"at least {MIN_WINDOW} frames"
    elif name.endswith("_steps") or name.endswith("_weight") or name in ("seed", "units_to_mm"):
        ok, need = value >= 0, "0 or more"
    else:
        ok, need = value > 0, "positive"
    if not ok:
        raise InputError(f"Training setting {name!r} must be {need}, got {value!r}")


def library_from_arrays(ctx: JobContext, labels_text: str):
    """A training Library from the add-on's concatenated action clips."""
    from ..motion.dataset import Library
    from ..motion.skeleton import Motion, Skeleton

    name = "motion.train"
    parents = _array(ctx, "parents", name)
    rotations = _array(ctx, "rotations", name)
    root = _array(ctx, "root_positions", name)
    lengths = _array(ctx, "clip_lengths", name).astype(np.int64).reshape(-1)
    names = _names(ctx.params.get("joints", "") or "", None) or [f"joint{j}" for j in range(len(parents))]
    skeleton = Skeleton(_names("\n".join(names), len(parents)), parents, _array(ctx, "offsets", name))
    if (lengths <= 0).any() or int(lengths.sum()) != rotations.shape[0] or root.shape[0] != rotations.shape[0]:
        raise InputError(
            f"'clip_lengths' ({lengths.tolist()}) must be positive and sum to the {rotations.shape[0]} frames sent."
        )
    labels = [s.strip() or None for s in labels_text.split("\n")] if labels_text.strip() else [None] * len(lengths)
    if len(labels) != len(lengths):
        raise InputError(f"'labels' has {len(labels)} lines for {len(lengths)} clips; send one label per clip.")
    fps = float(ctx.params.get("fps") or 30.0)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    motions = [
        Motion(skeleton, rotations[a:b], root[a:b], fps, f"clip{i:03d}")
        for i, (a, b) in enumerate(zip(starts[:-1], starts[1:], strict=True))
    ]
    files = [Path(f"clip{i:03d}") for i in range(len(motions))]
    return Library(skeleton, motions, files, labels)


class MotionTrain(Plugin):
    """Train a motion model on BVH files (a folder) or on the clips sent (the add-on's Actions)."""

    spec: ClassVar[PluginSpec] = PluginSpec(
        name="motion.train",
        summary="Train a motion model (tokenizer, then token transformer) on a folder of BVH files or sent clips.",
        params=[
            ParamSpec("data", "path", default="", help="Folder of BVH files on the backend (empty: the sent clips)."),
            ParamSpec("out", "path", required=True, help="Model folder to write (and resume from)."),
            ParamSpec("labels_from_filenames", "bool", default=True, help="Text labels from the BVH file names."),
            ParamSpec(
                "steps",
                "int",
                default=2000,
                min=1,
                help="Training steps in all: 4/9 tokenizer, 3/9 transformer, 2/9 residual transformer.",
            ),
            ParamSpec("labels", "str", default="", help="Sent clips: one text label per clip, one per line."),
            ParamSpec("joints", "str", default="", help="Sent clips: joint names, one per line."),
            ParamSpec("fps", "float", default=0.0, min=0.0, help="Sent clips: frame rate (0: 30)."),
            ParamSpec("resume", "bool", default=True, help="Resume from the checkpoint in the model folder."),
            ParamSpec(
                "config",
                "str",
                default="",
                help="Advanced: JSON object of TrainConfig fields (backend/motion/train.py), e.g. "
                '{"window": 32, "tokenizer_steps": 500}; they override the steps split.',
            ),
        ],
        inputs=[_clip_input(required=False, arrays=[*CLIP_ARRAYS, "clip_lengths"])],
        outputs=[],
    )

    def run(self, ctx: JobContext):
        from ..motion.dataset import load_library
        from ..motion.train import train

        p = ctx.params
        if not p.get("out"):
            raise InputError("motion.train needs 'out': the model folder to write.")
        try:
            overrides = json.loads(p["config"]) if p.get("config") else {}
        except json.JSONDecodeError as exc:
            raise InputError(f"'config' is not valid JSON: {exc}") from None
        if not isinstance(overrides, dict):
            raise InputError("'config' must be a JSON object of training settings")
        config = train_config(int(p["steps"]), overrides)
        if p.get("data"):
            if not Path(p["data"]).is_dir():
                raise InputError(f"BVH folder '{p['data']}' does not exist on the backend machine")
            library = load_library(p["data"], bool(p.get("labels_from_filenames")))
        else:
            library = library_from_arrays(ctx, str(p.get("labels") or ""))
        yield Progress("data", 0.0, f"{len(library)} clips, {sum(m.n_frames for m in library.motions)} frames")
        report = yield from stream_progress(
            ctx,
            lambda progress, check_cancelled: train(
                library, p["out"], config, progress, check_cancelled, resume=bool(p.get("resume", True))
            ),
        )
        metrics = ", ".join(f"{k} {v}" for k, v in report.metrics.items() if v is not None)
        yield Progress("done", 1.0, f"trained in {report.seconds:.0f} s → {report.model_dir}; held out: {metrics}")


PLUGINS = {cls.spec.name: cls for cls in (MotionInbetween, MotionEdit, MotionGenerate, MotionTokenize, MotionTrain)}

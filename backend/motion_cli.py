"""`tessera4d motion ...`: train a motion model on BVH files, tokenize, in-between, edit and generate clips.

Heavy modules (torch) are imported inside the commands so that `tessera4d --help` stays fast. Errors are one
line on stderr and exit status 1, like `tessera4d rig`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from shared.errors import TesseraError

from .cli_common import consoles as _console
from .cli_common import drop_if_empty
from .cli_common import fail as _fail

motion_app = typer.Typer(
    help="Motion tokens: train a model on BVH clips, then in-between, edit, generate.", no_args_is_help=True
)

ModelArg = Annotated[Path, typer.Argument(help="Motion model folder (from `tessera4d motion train`).")]
ClipArg = Annotated[Path, typer.Argument(help="BVH clip on the model's skeleton.")]


def _load(model: Path):
    from .motion.model import MotionModel

    return MotionModel.from_pretrained(model)


def _read_clip(path: Path):
    from .motion.bvh import read_bvh

    if path.is_dir():
        raise TesseraError(f"{path} is a folder; give one BVH file of it")
    if not path.is_file():
        raise TesseraError(f"BVH file {path} does not exist")
    return read_bvh(path)


def _check_out(path: Path, what: str = "BVH file") -> None:
    """Before the work: --out must be a writable file path (InputError otherwise, e.g. for a folder)."""
    from .formats.paths import prepare_output_file

    prepare_output_file(path, what)


def _write(path: Path, motion) -> None:
    from .motion.bvh import write_bvh

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bvh(path, motion)
    except OSError as exc:
        raise TesseraError(f"Cannot write {exc.filename or path}: {exc.strerror or exc}") from None


@motion_app.command("train")
def train_command(
    data: Annotated[Path, typer.Option("--data", help="Folder of BVH files (subfolders too) sharing one skeleton.")],
    out: Annotated[Path, typer.Option("--out", help="Model folder to write (its checkpoint lets a run resume).")],
    labels_from_filenames: Annotated[
        bool,
        typer.Option(
            help="Text labels from the file names (for --text): `{prefix}_{content}_{style}_{id}.bvh` gives "
            "'content, style', other names their words without numbers."
        ),
    ] = False,
    steps: Annotated[
        int | None, typer.Option(min=2, help="Steps in all: 4/9 tokenizer, 3/9 transformer, 2/9 residual.")
    ] = None,
    tokenizer_steps: Annotated[int | None, typer.Option(min=1, help="Tokenizer steps (instead of --steps).")] = None,
    transformer_steps: Annotated[
        int | None, typer.Option(min=0, help="Transformer steps (instead of --steps).")
    ] = None,
    residual_steps: Annotated[
        int | None, typer.Option(min=0, help="Residual transformer steps (instead of --steps).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Resume from the checkpoint in --out when it matches.")] = True,
    config: Annotated[
        str,
        typer.Option(help="Advanced: JSON of TrainConfig fields (backend/motion/train.py), e.g. '{\"window\": 32}'."),
    ] = "",
) -> None:
    """Train a motion model (tokenizer, token transformer, residual transformer) on a folder of BVH clips."""
    from .formats.paths import prepare_output_folder
    from .motion.dataset import load_library
    from .motion.train import train
    from .plugins.motion import train_config

    console, err_console = _console()
    started = time.perf_counter()
    made_out = not out.exists()
    try:
        try:
            overrides = json.loads(config) if config else {}
        except json.JSONDecodeError as exc:
            raise TesseraError(f"--config is not valid JSON: {exc}") from None
        if not isinstance(overrides, dict):
            raise TesseraError("--config must be a JSON object of training settings")
        per_stage = {"tokenizer_steps": tokenizer_steps, "transformer_steps": transformer_steps}
        per_stage["residual_steps"] = residual_steps
        if steps is not None and any(v is not None for v in per_stage.values()):
            raise TesseraError(
                "Give either --steps or --tokenizer-steps/--transformer-steps/--residual-steps, not both"
            )
        for name, value in per_stage.items():
            if value is not None:
                overrides.setdefault(name, value)
        cfg = train_config(steps or 4500, overrides)
        if data.is_file():
            raise TesseraError(f"--data takes a folder of BVH clips; {data} is a file: put the clips in a folder.")
        if not data.is_dir():
            raise TesseraError(f"BVH folder {data} does not exist")
        prepare_output_folder(out, "Model folder")
        library = load_library(data, labels_from_filenames)
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"))
        with Progress(*columns, TimeElapsedColumn(), console=err_console, transient=True) as bar:
            task = bar.add_task(f"{len(library)} clips", total=1.0)
            report = train(
                library,
                out,
                cfg,
                progress=lambda stage, f, msg: bar.update(task, completed=f, description=f"{stage}: {msg}"),
                resume=resume,
            )
    except (TesseraError, OSError) as exc:
        drop_if_empty(out, made_out)
        if isinstance(exc, TesseraError):
            raise _fail(exc.message) from None
        raise _fail(f"Cannot write {exc.filename or out}: {exc.strerror or exc}") from None
    metrics = ", ".join(f"{k} {v}" for k, v in report.metrics.items() if v is not None) or "none (no clip long enough)"
    labelled = sum(label is not None for label in library.labels)
    console.print(
        f"Trained on {report.train_clips} clips ({report.held_out_clips} held out) in "
        f"{time.perf_counter() - started:.1f} s → {report.model_dir}\nheld-out metrics: {metrics}"
        + (f"\ntext labels from file names: {labelled} of {len(library)} clips" if labels_from_filenames else ""),
        highlight=False,
    )


@motion_app.command("tokenize")
def tokenize_command(
    model: ModelArg,
    clip: ClipArg,
    out: Annotated[
        Path,
        typer.Option("--out", help=".npz to write (added if missing): tokens (T',parts[,layers]), parts, downsample."),
    ],
) -> None:
    """Write a clip's motion tokens (time tokens × body parts × residual quantizer layers)."""
    from .plugins.motion import inference_threads, save_tokens

    console, _ = _console()
    out = out if out.suffix == ".npz" else out.with_name(out.name + ".npz")  # what np.savez writes
    try:
        _check_out(out, "Token file")
        m = _load(model)
        with inference_threads():
            tokens = m.tokenize(_read_clip(clip))
        save_tokens(out, tokens, m)
    except TesseraError as exc:
        raise _fail(exc.message) from None
    shape = " × ".join(map(str, tokens.shape))
    what = "time × parts × layers" if tokens.ndim == 3 else "time × parts"
    console.print(f"{clip.name}: {shape} tokens ({what}) → {out}", highlight=False)


@motion_app.command("inbetween")
def inbetween_command(
    model: ModelArg,
    clip: ClipArg,
    keep: Annotated[str, typer.Option("--keep", help="Frames to keep exactly, 0-based inclusive: 0-9,40-59.")],
    out: Annotated[Path, typer.Option("--out", help="BVH to write (same skeleton and frame count).")],
    method: Annotated[
        str,
        typer.Option(
            help="match: blend the library segments that fit each gap best (the model's training clips); "
            "tokens: the masked token model; auto: match when the model keeps a library."
        ),
    ] = "auto",
    seed: Annotated[int, typer.Option(min=0, help="Seed of the token sampling (method tokens).")] = 0,
    mirror: Annotated[
        bool,
        typer.Option(
            help="Matching may also use the library clips' left-right mirror images; --no-mirror keeps handed "
            "moves on the side the library has them."
        ),
    ] = True,
) -> None:
    """Generate the frames outside --keep; kept frames are written as they were."""
    from .motion.model import INBETWEEN_METHOD_LABELS, parse_ranges
    from .plugins.motion import inference_threads

    console, _ = _console()
    started = time.perf_counter()
    try:
        _check_out(out)
        motion = _read_clip(clip)
        ranges = parse_ranges(keep, motion.n_frames, "to keep")
        m = _load(model)
        used = INBETWEEN_METHOD_LABELS[m.inbetween_method(method)]
        with inference_threads():
            result = m.inbetween(motion, ranges, seed=seed, method=method, mirror=mirror)
        _write(out, result)
    except TesseraError as exc:
        raise _fail(exc.message) from None
    console.print(
        f"{clip.name}: generated {motion.n_frames - sum(b - a + 1 for a, b in ranges)} of {motion.n_frames} frames "
        f"by {used} in {time.perf_counter() - started:.1f} s → {out}",
        highlight=False,
    )


@motion_app.command("edit")
def edit_command(
    model: ModelArg,
    clip: ClipArg,
    frames: Annotated[str, typer.Option("--frames", help="Frames to regenerate, 0-based inclusive: 20-50.")],
    parts: Annotated[str, typer.Option("--parts", help="Body parts to regenerate, comma-separated: left_arm.")],
    out: Annotated[Path, typer.Option("--out", help="BVH to write.")],
    seed: Annotated[int, typer.Option(min=0, help="Another seed, another variation.")] = 0,
) -> None:
    """Regenerate body parts over a frame range; everything else is written as it was."""
    from .motion.model import parse_ranges
    from .motion.parts import resolve_parts
    from .plugins.motion import inference_threads

    console, _ = _console()
    try:
        _check_out(out)
        motion = _read_clip(clip)
        ranges = parse_ranges(frames, motion.n_frames, "range to edit")
        if len(ranges) != 1:
            raise TesseraError(f"Edit one frame range at a time (e.g. 20-50), got {frames!r}")
        m = _load(model)
        names = [p.strip() for p in parts.split(",") if p.strip()]
        if not names:
            raise TesseraError(f"Name the body parts to edit; this model has: {', '.join(m.parts)}")
        joints = resolve_parts(m.skeleton, names)
        with inference_threads():
            result = m.edit(motion, ranges[0], joints, seed=seed)
        _write(out, result)
    except TesseraError as exc:
        raise _fail(exc.message) from None
    a, b = ranges[0]
    console.print(f"{clip.name}: regenerated {', '.join(names)} over frames {a}-{b} → {out}", highlight=False)


@motion_app.command("generate")
def generate_command(
    model: ModelArg,
    frames: Annotated[int, typer.Option("--frames", min=1, help="Length of the clip.")],
    out: Annotated[Path, typer.Option("--out", help="BVH to write.")],
    text: Annotated[str, typer.Option("--text", help="What the motion should be (labelled models).")] = "",
    seed: Annotated[int, typer.Option(min=0, help="Another seed, another take.")] = 0,
) -> None:
    """Generate a new clip, following --text when the model was trained with labels."""
    from .plugins.motion import inference_threads

    console, _ = _console()
    try:
        _check_out(out)
        with inference_threads():
            result = _load(model).generate(frames, text, seed=seed)
        result.name = text or "generated"
        _write(out, result)
    except TesseraError as exc:
        raise _fail(exc.message) from None
    console.print(f"generated {result.n_frames} frames ({text or 'no text'}) → {out}", highlight=False)

"""The `tessera4d` command: serve, keys, plugins, run, rig, motion, fit4d/render4d/export4d.

Sub-apps are plain `typer.Typer()` objects added to the module-level `app`.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared import messages as wire
from shared.errors import TesseraError
from shared.schemas import validate_params

from .job_store import FAILED, JobFolder, JobRecord, jsonable
from .jobs import MODELS, check_device, resolve_devices, run_job
from .plugin_host import JobContext, Plugin, discover_plugins

app = typer.Typer(help="Tessera 4D backend: serve jobs to Blender, or run plugins headless.", no_args_is_help=True)
keys_app = typer.Typer(help="CURVE keys for a backend reachable from other machines.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

console = Console()
err_console = Console(stderr=True)

DEFAULT_BIND = "tcp://127.0.0.1:5571"  # the add-on preferences default to the same
DEFAULT_JOBS_DIR = Path.home() / ".tessera4d" / "jobs"


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(1)


def load_plugins(plugins_from: list[str] | None = None) -> dict[str, type[Plugin]]:
    """Entry-point plugins, plus each module's `PLUGINS` dict (a dev/test option)."""
    plugins = discover_plugins()
    for module_name in plugins_from or []:
        try:
            module = importlib.import_module(module_name)
            plugins.update(module.PLUGINS)
        except (ImportError, AttributeError) as exc:
            raise TesseraError(f"Cannot load plugins from module {module_name!r}: {exc}") from exc
    return plugins


@app.command()
def serve(
    bind: Annotated[str, typer.Option(help="ZeroMQ endpoint to listen on.")] = DEFAULT_BIND,
    jobs_dir: Annotated[Path, typer.Option(help="Folder for job records and results.")] = DEFAULT_JOBS_DIR,
    curve_keys: Annotated[
        Path | None, typer.Option(help="Keys folder (see `keys generate`); required off loopback.")
    ] = None,
    plugins_from: Annotated[
        list[str] | None, typer.Option(help="Dev/test: also register MODULE.PLUGINS.", hidden=True)
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING...")] = "INFO",
    devices: Annotated[
        str, typer.Option(help="Comma-separated devices, one worker each (e.g. cuda:0,cuda:1). Default: every GPU.")
    ] = "",
) -> None:
    """Serve jobs over ZeroMQ until interrupted: one worker per device, jobs queue."""
    from .server import serve as run_server

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        chosen = [check_device(d) for d in devices.split(",") if d.strip()] or None
        run_server(bind, jobs_dir, curve_keys=curve_keys, plugins=load_plugins(plugins_from), devices=chosen)
    except TesseraError as exc:
        raise _fail(exc.message) from None
    except OSError as exc:  # e.g. a jobs folder that cannot be created or written
        raise _fail(f"Cannot use jobs folder {jobs_dir}: {exc}") from None


@keys_app.command("generate")
def keys_generate(keys_dir: Annotated[Path, typer.Argument(help="Folder to write the keys to.")]) -> None:
    """Make a server key pair and a client key pair, and authorise the client."""
    from .security import generate_keys

    try:
        files = generate_keys(keys_dir)
    except TesseraError as exc:
        raise _fail(exc.message) from None
    console.print(f"Wrote CURVE keys to {keys_dir}")
    console.print(f"  backend machine: start with [bold]tessera4d serve --curve-keys {keys_dir}[/] (keep it there)")
    console.print(
        f"  Blender machine: copy {files['server_public'].name}, {files['client_public'].name} and "
        f"{files['client_secret'].name} to a folder and point the add-on's preferences at it"
    )
    console.print(f"  more clients: put their public .key files into {files['authorized']}")


@app.command("plugins")
def list_plugins(
    plugins_from: Annotated[list[str] | None, typer.Option(hidden=True)] = None,
) -> None:
    """List installed plugins and their parameters."""
    try:
        plugins = load_plugins(plugins_from)
    except TesseraError as exc:
        raise _fail(exc.message) from None
    if not plugins:
        console.print("No plugins installed.")
        return
    for name, cls in plugins.items():
        spec = cls.spec
        table = Table(title=f"{name} — {spec.summary}", title_justify="left")
        for column in ("parameter", "type", "default", "range / choices", "help"):
            table.add_column(column)
        for p in spec.params:
            allowed = ", ".join(p.choices) if p.choices else ""
            if p.min is not None or p.max is not None:
                allowed = f"{p.min}..{p.max}"
            default = "(required)" if p.required else repr(p.default)
            table.add_row(p.name, p.type, default, allowed, p.help)
        console.print(table)


def _parse_params(values: list[str]) -> dict[str, str]:
    params = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TesseraError(f"Parameter {item!r} must look like name=value.")
        params[key.strip()] = value
    return params


def _fill_inputs(cls: type[Plugin], params: dict[str, str], inputs: list[Path]) -> None:
    """--input fills the plugin's main path parameter: its one required path parameter, or its only path
    parameter. Other paths (e.g. an optional rest mesh) go by --param. A plugin whose required input is
    arrays (a clip or views sent by the add-on) cannot run here: `run` sends no arrays."""
    sent = [i for i in cls.spec.inputs if i.required]
    if sent:
        command = _OWN_COMMANDS.get(cls.spec.name.split(".")[0], "")
        raise TesseraError(
            f"Plugin '{cls.spec.name}' takes its {sent[0].name} as arrays sent by the add-on or a client "
            f"({', '.join(sent[0].arrays)}); `tessera4d run` sends none."
            + (f" On the command line use {command}." if command else "")
        )
    if not inputs:
        return
    paths = [p for p in cls.spec.params if p.type == "path"]
    required = [p.name for p in paths if p.required]
    main = required if required else [p.name for p in paths]
    if len(main) != 1:
        raise TesseraError(
            f"Plugin '{cls.spec.name}' has {len(paths)} path parameters ({', '.join(p.name for p in paths) or 'none'})"
            " and no single main one; give paths with --param name=PATH instead of --input."
        )
    if len(inputs) > 1:
        raise TesseraError(f"Plugin '{cls.spec.name}' takes one input path ('{main[0]}'); got {len(inputs)}.")
    if main[0] in params:
        raise TesseraError(f"--input and --param {main[0]}=… both give '{main[0]}': give it once.")
    params[main[0]] = str(inputs[0])


# Plugins that need arrays have commands of their own that read files (by the plugin's namespace).
_OWN_COMMANDS = {"motion": "`tessera4d motion --help`", "pipeline": "`tessera4d mvdiff sample`, then `tessera4d fit4d`"}


@app.command()
def run(
    plugin: Annotated[str, typer.Argument(help="Plugin name, e.g. sequence.load_mesh.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for job.json and results/*.npz.")],
    input: Annotated[list[Path] | None, typer.Option("--input", "-i", help="Input path(s).")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="name=value, repeatable.")] = None,
    plugins_from: Annotated[list[str] | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run one plugin here, without a server, writing results like a backend job."""
    logging.basicConfig(level="WARNING")
    try:
        plugins = load_plugins(plugins_from)
        cls = plugins.get(plugin)
        if cls is None:
            raise TesseraError(f"No plugin named {plugin!r} (installed: {', '.join(plugins) or 'none'}).")
        params = _parse_params(param or [])
        _fill_inputs(cls, params, input or [])
        checked = validate_params(cls.spec, params)
        folder = JobFolder(out)
        if (out / "job.json").exists():
            raise TesseraError(f"{out} already holds a job; choose another --out folder.")
    except TesseraError as exc:
        raise _fail(exc.message) from None
    record = _run_with_progress(cls, checked, folder)
    if record.state == FAILED:
        raise _fail(f"{plugin} failed ({record.error_code}): {record.error_message}")
    console.print(
        f"{plugin}: {record.state}, {record.results} result(s) in {record.finished - record.started:.1f} s → {out}"
    )


def _run_with_progress(cls: type[Plugin], params: dict, folder: JobFolder) -> JobRecord:
    job_id = f"{cls.spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    record = JobRecord(id=job_id, plugin=cls.spec.name, params=jsonable(params), created=time.time())
    folder.save(record)
    device = resolve_devices()[0]
    ctx = JobContext(job_id=job_id, params=params, arrays={}, job_dir=folder.path, device=device, models=MODELS)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"))
    columns += (TimeElapsedColumn(),)
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(cls.spec.name, total=1.0)
        warned: set[str] = set()

        def show(msg: wire.Message) -> None:
            if isinstance(msg, wire.Progress):
                bar.update(task, completed=msg.fraction, description=f"{cls.spec.name}: {msg.stage}")
                if msg.warning and msg.warning not in warned:
                    warned.add(msg.warning)
                    bar.console.print(f"[yellow]Warning:[/yellow] {msg.warning}", highlight=False)
            elif isinstance(msg, wire.Done):
                bar.update(task, completed=1.0)

        try:
            run_job(cls, ctx, folder, record, show, threading.RLock())
        except KeyboardInterrupt:
            ctx.cancel_event.set()
            raise
    return record


@app.command("rig")
def rig_command(
    input: Annotated[
        Path, typer.Argument(help="Mesh sequence: an .npz (rest, faces, frames), an OBJ folder or a .pc2.")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Rig file to write (.npz, documented in backend/rig/rig_file.py).")
    ],
    bones: Annotated[
        int, typer.Option(min=0, help="Number of bones; 0 picks the smallest count meeting --tolerance.")
    ] = 0,
    mode: Annotated[
        str, typer.Option(help="skeleton (hierarchy with joints) or free (independent bones).")
    ] = "skeleton",
    max_influences: Annotated[int, typer.Option(min=1, max=8, help="Bones per vertex at most.")] = 4,
    iterations: Annotated[int, typer.Option(min=1, help="Solver iterations.")] = 30,
    tolerance: Annotated[float, typer.Option(min=0.0, help="E_RMS target for --bones 0.")] = 2.0,
    rest_mesh: Annotated[Path | None, typer.Option(help="For a .pc2 INPUT: the mesh it animates.")] = None,
    glb: Annotated[Path | None, typer.Option(help="Also write a skinned, animated glTF binary here.")] = None,
) -> None:
    """Rig a mesh animation: bones, skin weights and bone motion that reproduce it; prints E_RMS and time."""
    from .formats.mesh_sequence import open_mesh_sequence
    from .formats.paths import prepare_output_file
    from .plugins.rig import fewer_bones_note, solve_rig
    from .rig.ssdr import validate_sequence

    started = time.perf_counter()
    try:
        if mode not in ("free", "skeleton"):
            raise TesseraError(f"--mode must be 'free' or 'skeleton', got {mode!r}.")
        if out.is_dir():
            raise TesseraError(
                f"--out {str(out)!r} is a folder: give the rig file's name, e.g. {str(out / 'rig.npz')!r}."
            )
        prepare_output_file(out if out.suffix == ".npz" else out.with_name(out.name + ".npz"), "Rig file")
        if glb is not None:
            if glb.suffix.lower() != ".glb":
                raise TesseraError(f"--glb writes binary glTF: name the file .glb, got {glb.name!r}.")
            prepare_output_file(glb, "glTF file")
        reader = open_mesh_sequence(input, rest_mesh)
        seq = reader.read_all()
        faces = seq.faces if len(seq.faces) else None
        validate_sequence(seq.rest, seq.frames, bones or 1)  # bad input: one line, before any bar
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"))
        with Progress(*columns, TimeElapsedColumn(), console=err_console, transient=True) as bar:
            task = bar.add_task("rig", total=1.0)
            rig = solve_rig(
                seq.rest,
                seq.frames,
                bones=bones,
                mode=mode,
                max_influences=max_influences,
                iterations=iterations,
                tolerance=tolerance,
                faces=faces,
                name=reader.name,
                fps=float(reader.fps or 0.0),
                progress=lambda stage, f, msg: bar.update(task, completed=f, description=f"{stage}: {msg}"),
            )
            bar.update(task, completed=1.0)
        path = rig.save(out)
        if glb is not None:
            from .rig.gltf_export import write_glb

            write_glb(rig, seq.rest, faces, glb)
    except TesseraError as exc:
        raise _fail(exc.message) from None
    except OSError as exc:
        raise _fail(f"Cannot write {exc.filename or out}: {exc.strerror or exc}") from None
    seconds = time.perf_counter() - started
    console.print(
        f"{reader.name}: {rig.bone_count} bones{fewer_bones_note(bones, rig.bone_count)} ({rig.mode}), "
        f"{rig.frame_count} frames, "
        f"E_RMS {rig.e_rms:.3f}, {seconds:.1f} s → {path}" + (f" and {glb}" if glb is not None else ""),
        highlight=False,
    )


from .motion_cli import motion_app  # noqa: E402  (after _fail and the consoles it uses)

app.add_typer(motion_app, name="motion")

from .gaussians4d_cli import register as register_4d  # noqa: E402

register_4d(app)  # fit4d, render4d, export4d

from .mvdiff_cli import mvdiff_app  # noqa: E402
from .mvdiff_tools_cli import dataset_app  # noqa: E402
from .mvdiff_tools_cli import register as register_mvdiff_tools  # noqa: E402

register_mvdiff_tools(mvdiff_app)  # convert-animate3d, train
app.add_typer(mvdiff_app, name="mvdiff")
app.add_typer(dataset_app, name="dataset")

addon_app = typer.Typer(help="The Blender extension.", no_args_is_help=True)
app.add_typer(addon_app, name="addon")


@addon_app.command("build")
def addon_build(
    out: Annotated[Path, typer.Option(help="Folder for the extension zip.")] = Path("dist"),
    validate: Annotated[
        bool, typer.Option(help="Run Blender's own extension validator on the zip (needs bpy).")
    ] = True,
    wheel_cache: Annotated[Path | None, typer.Option(help="Where downloaded wheels are kept between builds.")] = None,
) -> None:
    """Build the installable extension zip (manifest, add-on, protocol copy, pyzmq + msgpack wheels)."""
    from .addon_build import blender_validator, build_extension, validate_with_blender

    try:
        with console.status("Building the extension (downloading wheels on first use)…"):
            report = build_extension(out, wheel_cache=wheel_cache)
        console.print(
            f"Built [bold]{report.zip_path}[/] for {', '.join(report.platforms)} ({len(report.wheels)} wheels)"
        )
        for platform, why in report.skipped.items():
            console.print(f"[yellow]not bundled for {platform}:[/] {why}")
        if validate:
            if blender_validator() is None:
                console.print("[yellow]Blender's validator was not run: bpy is not installed here.[/]")
            else:
                console.print(validate_with_blender(report.zip_path))
    except TesseraError as exc:
        raise _fail(exc.message) from None


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for demo.blend, the contact sheet, logs and caches.")] = Path(
        "demo-out"
    ),
    mesh: Annotated[
        Path | None,
        typer.Option(help="Mesh sequence to load (default: ../shared's horse-gallop, else a built-in sample)."),
    ] = None,
    frames: Annotated[int, typer.Option(min=1, max=48, help="Frames in the contact sheet.")] = 6,
    y_up: Annotated[
        bool | None, typer.Option("--y-up/--z-up", help="Axis convention of --mesh (default: Y-up for ../shared data).")
    ] = None,
    rig_bones: Annotated[int, typer.Option(min=0, help="Bones for the rig-from-motion step (0 skips it).")] = 20,
    fit4d_iterations: Annotated[
        int,
        typer.Option(min=0, help="Steps of the 4D Gaussian fit of the captured mesh sequence (0 skips the 4D step)."),
    ] = 50,
    motion_model: Annotated[
        Path | None,
        typer.Option(
            help="Motion model folder (from `tessera4d motion train`) for the in-between step; default: train a "
            "quick demo model on ../shared's Bandai-Namco clips (a few minutes; skipped when they are absent)."
        ),
    ] = None,
) -> None:
    """Run the main job: backend + real Blender through the add-on. Load a mesh sequence and splats, rig the
    mesh from its motion, capture it from a ring of cameras and fit 4D Gaussians (splat frames + an animated
    mesh), in-between a held-out mocap clip with long gaps with a motion model (trained quickly here unless
    --motion-model is given), save demo.blend, render a contact sheet."""
    from .demo import run_demo

    try:
        result = run_demo(
            out,
            mesh,
            frames,
            y_up,
            rig_bones,
            on_line=lambda line: console.print(f"  {line}", highlight=False, soft_wrap=True),
            motion_model=motion_model,
            fit4d_iterations=fit4d_iterations,
        )
    except TesseraError as exc:
        raise _fail(exc.message) from None
    console.print(f"[bold green]Demo done[/] in {result.seconds:.0f} s: {result.blend} and {result.contact_sheet}")


def main() -> None:
    # Commands show their own progress: no Hugging Face "Loading weights" / "Writing model shards" bars on stderr.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    app()


if __name__ == "__main__":
    main()

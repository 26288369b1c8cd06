"""Blender side of `tessera4d demo` (run by it with the Python that has bpy installed).

It does what a user does: install the extension zip, connect to the backend, load a mesh
sequence and a Gaussian PLY sequence through it, rig the mesh sequence from its motion (an
armature, skin weights and an action), capture the mesh sequence from a ring of cameras at low
resolution and fit 4D Gaussians to it (splat frames and an animated mesh stream back), import a
held-out mocap clip, delete its keys in long gaps and in-between them with a motion model (a new
Action; the thinned-out keys stay in the old one), save the .blend, render frames to a contact
sheet (left to right: the splats, the original mesh sequence, the rigged copy, the 4D fit's
splats and mesh). Everything goes through the add-on's public operators (`bpy.ops.tessera.*`);
the add-on's pump is driven by hand (timers never fire in bpy-as-a-module).
Run by hand:  python blender_addon/batch/demo.py --zip Z --address A --mesh M --gaussians G --out O
  [--motion-model DIR --motion-clip CLIP.bvh] [--fit4d-iterations N]
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import re
import time
from pathlib import Path

import bpy
import numpy as np
from mathutils import Vector

ADDON_MODULE = "bl_ext.user_default.tessera4d"  # where package_install_files(repo="user_default") puts it
FULL_TRAINING_HINT = "tessera4d motion train --data DIR_OF_BVH --out MODEL_DIR"


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def addon_module(name: str):
    return importlib.import_module(f"{ADDON_MODULE}.{name}")


def run_job(submit, timeout: float):
    """Run an operator that submits one job, then drive the add-on's pump until every job has ended (what
    `tessera.wait` does, here by hand so that the job's record stays at hand). Returns the job's record."""
    client = addon_module("session").SESSION.client
    before = set(client.jobs)
    result = submit()
    if result != {"FINISHED"}:
        raise RuntimeError(f"the operator returned {result}")
    (job_id,) = set(client.jobs) - before
    job = client.jobs[job_id]
    pump = addon_module("pump").pump
    deadline = time.monotonic() + timeout
    while not job.state.finished:
        pump(bpy.context, time_budget=0.05)
        if client.state.value not in ("connected", "connecting"):
            raise RuntimeError(
                f"backend {client.state.value} while job {job.id} ({job.plugin}) ran: {client.state_message}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job.id} ({job.plugin}) still running after {timeout:g} s: {job.stage}")
        time.sleep(0.01)
    if job.state.value != "done":
        raise RuntimeError(f"job {job.id} ({job.plugin}) {job.state.value}: {job.message}")
    return job


def install_extension(zip_path: str) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.frame_end = scene.frame_start  # loaders extend the range to cover what they load
    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    if not hasattr(bpy.ops.tessera, "connect"):
        raise RuntimeError(f"The extension in {zip_path} installed but its operators are not registered.")


def bounds(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return points.min(0), points.max(0)


def mesh_bounds(ob) -> tuple[np.ndarray, np.ndarray]:
    """World-space bounds of a mesh object's evaluated geometry over the scene's frame range."""
    scene = bpy.context.scene
    corners = []
    for frame in np.linspace(scene.frame_start, scene.frame_end, 5).round().astype(int):
        scene.frame_set(int(frame))
        evaluated = ob.evaluated_get(bpy.context.evaluated_depsgraph_get())
        corners += [tuple(ob.matrix_world @ Vector(c)) for c in evaluated.bound_box]
    return bounds(np.array(corners))


def splat_bounds(ob) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of a splat sequence, read from its per-frame point meshes (their vertices are the means)."""
    frames = bpy.data.collections[f"{ob.name} frames"].objects
    return bounds(np.array([tuple(c) for f in frames for c in f.bound_box]))


def rig_from_motion(mesh_obj, bones: int):
    """Rig the mesh sequence into a copy (the original keeps its cache): (armature, rigged mesh)."""
    for ob in bpy.context.view_layer.objects:
        ob.select_set(False)
    bpy.context.view_layer.objects.active = mesh_obj
    mesh_obj.select_set(True)
    before = set(bpy.data.objects)
    bpy.ops.tessera.rig_from_motion(bones=bones, mode="SKELETON", max_influences=4, target="COPY")
    bpy.ops.tessera.wait(timeout=600)
    new = [o for o in bpy.data.objects if o not in before]
    arm = next(o for o in new if o.type == "ARMATURE")
    rigged = next(o for o in new if o.type == "MESH")
    return arm, rigged


def select_only(ob) -> None:
    for other in bpy.context.view_layer.objects:
        other.select_set(False)
    bpy.context.view_layer.objects.active = ob
    if ob is not None:
        ob.select_set(True)


def fit_report(out: Path, job_id: str) -> dict:
    """The fit's saved summary (`final`: the last logged step's loss and training PSNR) from its model folder
    in the backend's job folder, {} when it is not there."""
    for config in sorted((out / "jobs").rglob("config.json")):
        if job_id in str(config):
            meta = json.loads(config.read_text()).get("meta", {})
            if meta.get("kind") == "dynamic_gaussians":
                return meta
    return {}


def capture_to_4d(mesh_obj, out: Path, iterations: int, views: int = 6, frames: int = 8, resolution: int = 64):
    """Capture the mesh sequence from a ring of `views` cameras at `frames` times, `resolution`² pixels, and fit
    4D Gaussians to it: (splat sequence object, animated mesh object)."""
    t0 = time.perf_counter()
    select_only(mesh_obj)
    job = run_job(
        lambda: bpy.ops.tessera.capture_to_4d(
            views=views, frames=frames, resolution=resolution, preset="FAST", iterations=iterations
        ),
        timeout=1800,
    )
    name = job.options["capture_source"]
    splats, mesh = bpy.data.objects[name], bpy.data.objects[f"{name} mesh"]
    counts = {len(f.data.vertices) for f in bpy.data.collections[f"{name} frames"].objects}
    meta = fit_report(out, job.id)
    psnr = meta.get("final", {}).get("psnr")
    say(
        f"4D fit of '{mesh_obj.name}' ({views} views × {frames} frames × {resolution}², {iterations} steps): "
        f"'{splats.name}' ({max(counts)} Gaussians, {len(bpy.data.collections[f'{name} frames'].objects)} frames)"
        f"{f', training PSNR {psnr:.1f} dB' if psnr is not None else ''}, mesh '{mesh.name}' "
        f"({len(mesh.data.vertices)} vertices) ({time.perf_counter() - t0:.1f} s)"
    )
    return splats, mesh


def thin_out_keys(action, slot, keep: list[int]) -> None:
    """Keep the action's keys only on scene frames `keep` (an imported BVH keys every frame)."""
    for fc in addon_module("collectors.armature_motion").action_fcurves(action, slot):
        co = np.empty(len(fc.keyframe_points) * 2, np.float32)
        fc.keyframe_points.foreach_get("co", co)
        co = co.reshape(-1, 2)
        kept = co[np.isin(np.round(co[:, 0]), keep)]
        fc.keyframe_points.clear()
        fc.keyframe_points.add(len(kept))
        fc.keyframe_points.foreach_set("co", kept.ravel())
        fc.update()


def inbetween_clip(clip: Path, model: str, keep: list[int], quick: bool):
    """Import `clip`, keep its keys only on clip frames `keep` (0-based), in-between the gaps with `model`: a new
    take becomes the armature's action, the thinned-out original stays (fake user). Returns the armature."""
    t0 = time.perf_counter()
    scene = bpy.context.scene
    saved = (scene.frame_start, scene.frame_end, scene.frame_current, scene.render.fps, scene.render.fps_base)
    if bpy.ops.import_anim.bvh(filepath=str(clip)) != {"FINISHED"}:
        raise RuntimeError(f"Blender could not import {clip}")
    arm = bpy.context.active_object
    fps = 1.0 / float(re.search(r"Frame Time:\s*([0-9.eE+-]+)", clip.read_text(errors="replace")).group(1))
    user = arm.animation_data.action
    first, last = (int(round(x)) for x in user.frame_range)
    n = last - first + 1
    keep = [k for k in keep if k < n]
    thin_out_keys(user, arm.animation_data.action_slot, [first + k for k in keep])
    try:
        scene.frame_start, scene.frame_end = first, last  # the operator in-betweens the scene's frame range
        scene.render.fps, scene.render.fps_base = round(fps), 1.0
        select_only(arm)
        job = run_job(lambda: bpy.ops.tessera.motion_inbetween(model=model), timeout=600)
    finally:
        scene.frame_start, scene.frame_end, scene.frame_current, scene.render.fps, scene.render.fps_base = saved
    arm.scale = (0.01, 0.01, 0.01)  # the Bandai-Namco clips are in centimetres; the rest of the scene in metres
    take = arm.animation_data.action
    if take is user or take.name != job.options.get("motion_result"):
        raise RuntimeError(f"the in-between of '{arm.name}' made no new action ({job.options})")
    note = (
        f"; the model is a quick demo model, rough on purpose: train a full one with `{FULL_TRAINING_HINT}`"
        if quick
        else ""
    )
    say(
        f"in-betweened held-out clip '{clip.stem}': {n} frames, {len(keep)} kept, {n - len(keep)} generated, "
        f"take '{take.name}' on '{arm.name}' ({time.perf_counter() - t0:.1f} s){note}"
    )
    return arm


def stage_scene(mesh_obj, splat_obj, arm_obj=None, fit4d=None, mocap=None) -> None:
    """Put the splats on the left of the mesh, the rigged copy and the 4D fit's splats and mesh on its right
    (a row along +Y), the mocap armature (not rendered) after them, add a camera that frames all and a sun."""
    scene = bpy.context.scene
    lo, hi = mesh_bounds(mesh_obj)
    step = float(hi[1] - lo[1]) + 0.15 * float(np.linalg.norm(hi - lo))
    movers = [arm_obj] if arm_obj is not None else []  # the rigged copy follows its armature: move the armature
    movers += list(fit4d or ())  # the fit's splats and mesh are where the mesh is: one slot each further
    for slot, ob in enumerate(movers, 1):
        ob.location.y += slot * step
    if mocap is not None:
        mocap.location.y += (len(movers) + 1) * step
    if movers:
        bpy.context.view_layer.update()
        hi = hi + np.array([0.0, len(movers) * step, 0.0])
    if splat_obj is not None:
        s_lo, s_hi = splat_bounds(splat_obj)
        gap = 0.2 * float(np.linalg.norm(hi - lo))
        # beside the mesh along -Y, resting on the same ground height
        splat_obj.location = ((lo[0] + hi[0]) / 2, lo[1] - gap - s_hi[1], lo[2] - s_lo[2])
        s_lo, s_hi = s_lo + np.array(splat_obj.location), s_hi + np.array(splat_obj.location)
        lo, hi = np.minimum(lo, s_lo), np.maximum(hi, s_hi)
    centre, radius = Vector(((lo + hi) / 2).tolist()), float(np.linalg.norm(hi - lo) / 2)
    target = bpy.data.objects.new("Demo target", None)
    target.location = centre
    cam = bpy.data.objects.new("Demo camera", bpy.data.cameras.new("Demo camera"))
    direction = Vector((1.0, -0.25, 0.3)).normalized()
    cam.location = centre + direction * radius / math.tan(cam.data.angle / 2) * 1.05
    track = cam.constraints.new("TRACK_TO")
    track.target, track.track_axis, track.up_axis = target, "TRACK_NEGATIVE_Z", "UP_Y"
    sun = bpy.data.objects.new("Demo sun", bpy.data.lights.new("Demo sun", "SUN"))
    sun.rotation_euler = (0.7, 0.2, 0.5)
    sun.data.energy = 3.0
    for ob in (target, cam, sun):
        scene.collection.objects.link(ob)
    scene.camera = cam
    if scene.world is None:
        scene.world = bpy.data.worlds.new("Demo world")
    scene.world.color = (0.05, 0.05, 0.06)


def render_contact_sheet(out: Path, frames: int, columns: int = 3) -> Path:
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 16
    scene.cycles.device = "CPU"
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 480, 320, 100
    scene.render.image_settings.file_format = "PNG"
    tiles = []
    for i, frame in enumerate(np.linspace(scene.frame_start, scene.frame_end, frames).round().astype(int)):
        scene.frame_set(int(frame))
        scene.render.filepath = str(out / "frames" / f"frame_{int(frame):04d}.png")
        bpy.ops.render.render(write_still=True)
        img = bpy.data.images.load(scene.render.filepath)
        px = np.empty(img.size[0] * img.size[1] * 4, np.float32)
        img.pixels.foreach_get(px)
        tiles.append(px.reshape(img.size[1], img.size[0], 4))
        bpy.data.images.remove(img)
        say(f"rendered frame {frame} ({i + 1}/{frames})")
    h, w = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / columns)
    sheet = np.zeros((rows * h, columns * w, 4), np.float32)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[(rows - 1 - r) * h : (rows - r) * h, c * w : (c + 1) * w] = tile  # Blender images start bottom-left
    image = bpy.data.images.new("contact sheet", columns * w, rows * h, alpha=True)
    image.pixels.foreach_set(sheet.ravel())
    image.filepath_raw = str(out / "contact_sheet.png")
    image.file_format = "PNG"
    image.save()
    return out / "contact_sheet.png"


def main() -> None:
    import sys

    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("zip", "address", "mesh", "gaussians", "out"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--y-up", action="store_true", help="the mesh sequence is Y-up (the ../shared data is)")
    parser.add_argument("--rig-bones", type=int, default=20, help="bones for the rig step (0: skip it)")
    parser.add_argument("--fit4d-iterations", type=int, default=50, help="steps of the 4D fit (0: skip it)")
    parser.add_argument("--motion-model", default="", help="motion model folder (none: skip the motion step)")
    parser.add_argument("--motion-clip", default="", help="the BVH clip to in-between (one the model held out)")
    parser.add_argument("--motion-keep", default="", help="clip frames whose keys stay, e.g. 0-9,41-49,146-155")
    parser.add_argument("--quick-motion-model", action="store_true", help="the model is the demo's quick one")
    args = parser.parse_args(sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:])
    out = Path(args.out)
    t0 = time.perf_counter()

    install_extension(args.zip)
    say(f"extension installed from {Path(args.zip).name}")
    bpy.ops.tessera.connect(address=args.address)
    say(f"connected to {args.address}")

    before = set(bpy.data.objects)
    bpy.ops.tessera.load_mesh_sequence(filepath=args.mesh, y_up=args.y_up)
    bpy.ops.tessera.wait(timeout=600)
    mesh_obj = next(o for o in bpy.data.objects if o not in before)
    say(
        f"mesh sequence '{mesh_obj.name}': {len(mesh_obj.data.vertices)} vertices, "
        f"frames {bpy.context.scene.frame_start}-{bpy.context.scene.frame_end}"
    )

    before = set(bpy.data.objects)
    bpy.ops.tessera.load_gaussian_sequence(directory=args.gaussians)
    bpy.ops.tessera.wait(timeout=600)
    splat_obj = next((o for o in bpy.data.objects if o not in before and o.modifiers), None)
    say(f"Gaussian sequence loaded as '{splat_obj.name if splat_obj else '?'}'")

    arm_obj = None
    if args.rig_bones > 0:
        t_rig = time.perf_counter()
        arm_obj, rigged = rig_from_motion(mesh_obj, args.rig_bones)
        say(
            f"rigged '{mesh_obj.name}' into '{rigged.name}': {len(arm_obj.data.bones)} bones, "
            f"E_RMS {float(arm_obj['tessera_e_rms']):.2f} ({time.perf_counter() - t_rig:.1f} s)"
        )
    fit4d = None
    if args.fit4d_iterations > 0:
        fit4d = capture_to_4d(mesh_obj, out, args.fit4d_iterations)
    mocap = None
    if args.motion_model and args.motion_clip:
        keep = [
            k
            for part in args.motion_keep.split(",")
            if part
            for k in range(int(part.split("-")[0]), int(part.split("-")[-1]) + 1)
        ]
        mocap = inbetween_clip(Path(args.motion_clip), args.motion_model, keep, args.quick_motion_model)
    stage_scene(mesh_obj, splat_obj, arm_obj, fit4d, mocap)
    blend = out / "demo.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    say(f"saved {blend}")
    sheet = render_contact_sheet(out, args.frames)
    bpy.ops.wm.save_mainfile()
    bpy.ops.tessera.disconnect()
    say(f"contact sheet {sheet} ({time.perf_counter() - t0:.1f} s in Blender)")


if __name__ == "__main__":
    main()

"""Blender side of `tessera4d demo` (run by it with the Python that has bpy installed).

It does what a user does: install the extension zip, connect to the backend, load a mesh
sequence and a Gaussian PLY sequence through it, rig the mesh sequence from its motion (an
armature, skin weights and an action), save the .blend, render frames to a contact sheet
(left to right: the splats, the original mesh sequence, the rigged copy). Everything goes
through the add-on's public operators (`bpy.ops.tessera.*`).
Run by hand:  python blender_addon/batch/demo.py --zip Z --address A --mesh M --gaussians G --out O
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import bpy
import numpy as np
from mathutils import Vector


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


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


def stage_scene(mesh_obj, splat_obj, arm_obj=None) -> None:
    """Put the splats and the rigged copy beside the mesh, add a camera that frames all and a sun."""
    scene = bpy.context.scene
    lo, hi = mesh_bounds(mesh_obj)
    if arm_obj is not None:  # the rigged copy follows its armature: move the armature along +Y
        gap = 0.15 * float(np.linalg.norm(hi - lo))
        arm_obj.location.y += float(hi[1] - lo[1]) + gap
        bpy.context.view_layer.update()
        hi = hi + np.array([0.0, float(hi[1] - lo[1]) + gap, 0.0])
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
    stage_scene(mesh_obj, splat_obj, arm_obj)
    blend = out / "demo.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    say(f"saved {blend}")
    sheet = render_contact_sheet(out, args.frames)
    bpy.ops.wm.save_mainfile()
    bpy.ops.tessera.disconnect()
    say(f"contact sheet {sheet} ({time.perf_counter() - t0:.1f} s in Blender)")


if __name__ == "__main__":
    main()

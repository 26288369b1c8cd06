"""Blender side of `tessera4d demo` (run by it with the Python that has bpy installed).

It does what a user does: install the extension zip, connect to the backend, load a mesh
sequence and a Gaussian PLY sequence through it, save the .blend, render frames to a contact
sheet. Everything goes through the add-on's public operators (`bpy.ops.tessera.*`).
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
    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    if not hasattr(bpy.ops.tessera, "connect"):
        raise RuntimeError(f"The extension in {zip_path} installed but its operators are not registered.")


def world_bounds(objects) -> tuple[Vector, float]:
    """Centre and radius of the objects' evaluated bounding boxes over the scene's frame range."""
    scene = bpy.context.scene
    points = []
    for frame in np.linspace(scene.frame_start, scene.frame_end, 5).round().astype(int):
        scene.frame_set(int(frame))
        for ob in objects:
            points += [ob.matrix_world @ Vector(c) for c in ob.evaluated_get(bpy.context.evaluated_depsgraph_get()).bound_box]
    pts = np.array([tuple(p) for p in points])
    lo, hi = pts.min(0), pts.max(0)
    return Vector(((lo + hi) / 2).tolist()), float(np.linalg.norm(hi - lo) / 2)


def stage_scene(mesh_obj, splat_obj) -> None:
    """Put the splats beside the mesh, add a camera that frames both, a sun and a floor colour."""
    scene = bpy.context.scene
    centre, radius = world_bounds([mesh_obj])
    if splat_obj is not None:
        _, splat_radius = world_bounds([splat_obj])
        splat_obj.location = (centre.x + radius + splat_radius, centre.y, centre.z)
    centre, radius = world_bounds([o for o in (mesh_obj, splat_obj) if o is not None])
    target = bpy.data.objects.new("Demo target", None)
    target.location = centre
    cam = bpy.data.objects.new("Demo camera", bpy.data.cameras.new("Demo camera"))
    direction = Vector((0.35, -1.0, 0.35)).normalized()
    cam.location = centre + direction * radius / math.tan(cam.data.angle / 2) * 1.1
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
        sheet[(rows - 1 - r) * h:(rows - r) * h, c * w:(c + 1) * w] = tile  # Blender images start bottom-left
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
    args = parser.parse_args(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:])
    out = Path(args.out)
    t0 = time.perf_counter()

    install_extension(args.zip)
    say(f"extension installed from {Path(args.zip).name}")
    bpy.ops.tessera.connect(address=args.address)
    say(f"connected to {args.address}")

    before = set(bpy.data.objects)
    bpy.ops.tessera.load_mesh_sequence(filepath=args.mesh)
    bpy.ops.tessera.wait(timeout=600)
    mesh_obj = next(o for o in bpy.data.objects if o not in before)
    say(f"mesh sequence '{mesh_obj.name}': {len(mesh_obj.data.vertices)} vertices, "
        f"frames {bpy.context.scene.frame_start}-{bpy.context.scene.frame_end}")

    before = set(bpy.data.objects)
    bpy.ops.tessera.load_gaussian_sequence(directory=args.gaussians)
    bpy.ops.tessera.wait(timeout=600)
    splat_obj = next((o for o in bpy.data.objects if o not in before and o.visible_get()), None)
    say(f"Gaussian sequence loaded as '{splat_obj.name if splat_obj else '?'}'")

    stage_scene(mesh_obj, splat_obj)
    blend = out / "demo.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    say(f"saved {blend}")
    sheet = render_contact_sheet(out, args.frames)
    bpy.ops.wm.save_mainfile()
    bpy.ops.tessera.disconnect()
    say(f"contact sheet {sheet} ({time.perf_counter() - t0:.1f} s in Blender)")


if __name__ == "__main__":
    main()

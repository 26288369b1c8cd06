"""Blender side of `tessera4d dataset render`: one animated asset → a multi-view video folder.

Run by backend/mvdiff/dataset.py with the Python that has bpy installed, once per asset (a fresh process, so
one broken file cannot leave state behind for the next):

    python blender_addon/batch/render_dataset.py --job JOB.json

JOB.json: {"asset": path, "out": folder, "result": path, "frames": F, "size": px, "fov_deg": deg,
"fill": margin, "c2w_unit": (V, 4, 4) camera→world at unit distance around the origin (MVDream's cameras,
OpenGL camera axes, +Z up), "elevation_deg": deg (recorded only), "prompt": text}.

It imports the asset (.blend opened, .glb/.gltf/.fbx imported into an empty scene), finds the renderable
objects, samples their evaluated geometry at F times evenly spread over the animation's frame range, refuses
an asset without geometry or without motion, places the unit cameras around the animation's bounds (centre +
distance × unit position, so the normalised cameras are exactly the ones given), and renders every (view,
time) as an RGBA PNG with Workbench (studio lighting, textures where the materials have them, transparent
film). It writes `transforms.json` (D-NeRF layout plus "view", "frame", "center", "distance", "prompt") and a
result json: {"ok": true, ...} or {"ok": false, "error": message naming the file}. The backend never imports
bpy (the layer rule); this script never imports the backend.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

RENDERABLE = {"MESH", "CURVE", "SURFACE", "META", "FONT"}
STILL = 1e-5  # largest vertex movement (relative to the object's size) that still counts as "no animation"
ANTI_ALIASING = "8"


class AssetError(Exception):
    """The asset cannot be rendered; the message names the file and what is wrong."""


def import_asset(path: Path) -> None:
    ext = path.suffix.lower()
    if not path.is_file():
        raise AssetError(f"{path}: no such file.")
    try:
        if ext == ".blend":
            bpy.ops.wm.open_mainfile(filepath=str(path), load_ui=False)
            return
        bpy.ops.wm.read_factory_settings(use_empty=True)
        if ext in (".glb", ".gltf"):
            bpy.ops.import_scene.gltf(filepath=str(path))
        elif ext == ".fbx":
            bpy.ops.import_scene.fbx(filepath=str(path))
        else:
            raise AssetError(f"{path.name}: unsupported file type {ext!r}; use .blend, .glb, .gltf or .fbx.")
    except RuntimeError as exc:  # the importers report unreadable files as RuntimeError
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise AssetError(f"{path.name}: Blender cannot read it ({message}).") from None


def frame_range(scene, imported: bool) -> tuple[float, float]:
    """The .blend's scene range; for imported files the span of the actions the importer made (the importers
    do not always set the scene range)."""
    if imported and bpy.data.actions:
        ranges = [tuple(a.frame_range) for a in bpy.data.actions]
        return float(min(r[0] for r in ranges)), float(max(r[1] for r in ranges))
    return float(scene.frame_start), float(scene.frame_end)


def targets(scene) -> list:
    layer = bpy.context.view_layer.objects
    return [ob for ob in scene.objects if ob.type in RENDERABLE and not ob.hide_render and ob.name in layer]


def set_frame(scene, position: float) -> None:
    whole = math.floor(position)
    scene.frame_set(whole, subframe=float(position - whole))


def world_points(objects) -> np.ndarray:
    """(N, 3) world positions of the evaluated vertices of `objects` at the current frame."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    chunks = []
    for ob in objects:
        ob_eval = ob.evaluated_get(depsgraph)
        mesh = ob_eval.to_mesh()
        try:
            co = np.empty(len(mesh.vertices) * 3, np.float64)
            mesh.vertices.foreach_get("co", co)
        finally:
            ob_eval.to_mesh_clear()
        co = co.reshape(-1, 3)
        m = np.array(ob_eval.matrix_world, np.float64)
        chunks.append(co @ m[:3, :3].T + m[:3, 3])
    return np.concatenate(chunks) if chunks else np.zeros((0, 3))


def sample_geometry(path: Path, scene, objects, positions) -> tuple[np.ndarray, np.ndarray]:
    """World bounds (lo, hi) of the geometry over the sample times; AssetError when there is none or it never
    moves."""
    samples = []
    for position in positions:
        set_frame(scene, position)
        samples.append(world_points(objects))
    if not len(samples[0]):
        raise AssetError(f"{path.name}: no geometry (its objects have no vertices to render).")
    pts = np.concatenate(samples)
    if not np.isfinite(pts).all():
        raise AssetError(f"{path.name}: the geometry has non-finite positions at some frame; check its animation.")
    lo, hi = pts.min(0), pts.max(0)
    size = float(np.linalg.norm(hi - lo)) or 1.0
    same_topology = all(len(s) == len(samples[0]) for s in samples)
    moved = not same_topology or max(float(np.abs(s - samples[0]).max()) for s in samples) > STILL * size
    if not moved:
        raise AssetError(
            f"{path.name}: no animation (nothing moves between frames {positions[0]:g} and {positions[-1]:g}); "
            "the dataset needs animated assets."
        )
    return lo, hi


def render_settings(scene, size: int) -> None:
    render, shading = scene.render, scene.display.shading
    render.engine = "BLENDER_WORKBENCH"
    render.resolution_x = render.resolution_y = size
    render.resolution_percentage = 100
    render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    render.film_transparent = True
    render.use_border = False
    render.use_motion_blur = False
    render.use_compositing = False
    render.use_sequencer = False
    render.use_multiview = False
    render.use_stamp = False
    render.use_file_extension = False
    render.image_settings.file_format = "PNG"
    render.image_settings.color_mode = "RGBA"
    render.image_settings.color_depth = "8"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    shading.light = "STUDIO"
    shading.color_type = "TEXTURE"
    shading.show_object_outline = False
    shading.show_shadows = False
    shading.show_cavity = False
    shading.show_xray = False
    shading.use_dof = False
    shading.show_backface_culling = False
    scene.display.render_aa = ANTI_ALIASING


def render_asset(job: dict) -> dict:
    path = Path(job["asset"])
    out = Path(job["out"])
    frames, size = int(job["frames"]), int(job["size"])
    fov = math.radians(float(job["fov_deg"]))
    unit = np.asarray(job["c2w_unit"], np.float64)
    started = time.perf_counter()

    import_asset(path)
    scene = bpy.context.scene
    objects = targets(scene)
    if not objects:
        raise AssetError(f"{path.name}: no geometry (no visible mesh, curve or text object to render).")
    start, end = frame_range(scene, imported=path.suffix.lower() != ".blend")
    if end <= start:
        raise AssetError(f"{path.name}: no animation (its frame range is the single frame {start:g}).")
    positions = np.linspace(start, end, frames)
    lo, hi = sample_geometry(path, scene, objects, positions)
    centre = (lo + hi) / 2
    radius = float(np.linalg.norm(hi - lo)) / 2 or 1.0
    distance = float(job["fill"]) * radius / math.sin(fov / 2)

    for ob in scene.objects:  # only the asset's renderable objects, and no cameras or lights of its own
        if ob.type in RENDERABLE and ob not in objects:
            ob.hide_render = True
    render_settings(scene, size)
    cams = []
    for v, m in enumerate(unit):
        world = m.copy()
        world[:3, 3] = centre + distance * m[:3, 3]
        data = bpy.data.cameras.new(f"tessera_dataset_{v}")
        data.sensor_fit, data.angle = "HORIZONTAL", fov
        data.clip_start, data.clip_end = distance * 1e-3, distance * 10 + radius * 4
        cam = bpy.data.objects.new(f"tessera_dataset_{v}", data)
        scene.collection.objects.link(cam)
        cam.matrix_world = Matrix(world.tolist())
        cams.append((cam, world))

    (out / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    times = (positions - start) / (end - start)
    for t, position in enumerate(positions):
        set_frame(scene, position)
        for v, (cam, world) in enumerate(cams):
            scene.camera = cam
            name = f"images/v{v}_f{t:03d}.png"
            scene.render.filepath = str(out / name)
            if bpy.ops.render.render(write_still=True) != {"FINISHED"}:
                raise AssetError(f"{path.name}: Blender could not render view {v} at frame {position:g}.")
            entries.append(
                {"file_path": name, "transform_matrix": world.tolist(), "time": float(times[t]), "view": v, "frame": t}
            )
    entries.sort(key=lambda e: (e["view"], e["frame"]))  # view-major, like the capture collector
    meta = {
        "camera_angle_x": fov,
        "w": size,
        "h": size,
        "num_views": len(cams),
        "num_frames": frames,
        "center": centre.tolist(),
        "distance": distance,
        "elevation_deg": float(job.get("elevation_deg", 0.0)),
        "prompt": job.get("prompt", ""),
        "source": path.name,
        "frame_range": [start, end],
        "frames": entries,
    }
    (out / "transforms.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return {"ok": True, "views": len(cams), "frames": frames, "seconds": time.perf_counter() - started}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, type=Path)
    args = parser.parse_args(argv)
    job = json.loads(args.job.read_text(encoding="utf-8"))
    result_path = Path(job["result"])
    try:
        result = render_asset(job)
    except AssetError as exc:
        result = {"ok": False, "error": str(exc)}
    result_path.write_text(json.dumps(result), encoding="utf-8")
    return 0 if result["ok"] else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

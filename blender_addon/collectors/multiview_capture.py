"""Multi-view video of the animated object (or the whole scene), rendered in Blender for the 4D fit.

Workbench renders with flat lighting (the material's viewport colour, or the mesh's colour attribute
when it has one) on a transparent film, so each image is the object's own colour and its alpha is the
silhouette: no shading that changes with the view, which is what a multi-view fit wants. The cameras are
either a ring that `capture` creates around the object (in a temporary collection, removed afterwards)
or the user's camera objects. `frames` times are spread evenly over the scene's frame range (subframes
included, so the times are exactly evenly spaced).

Everything `capture` changes (active camera, render engine and settings, colour management, Workbench
shading, the current frame, other objects' render visibility) is put back afterwards, also on errors.
The add-on cannot import `backend`, so the ring maths (the same as backend.gaussians4d.cameras.ring_cameras
with up_axis "Z") lives here.
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import NamedTuple

import bpy
import numpy as np
from mathutils import Matrix, Vector

from ..shared.errors import InputError
from . import object_kind

RENDERABLE = {"MESH", "CURVE", "CURVES", "SURFACE", "META", "FONT", "POINTCLOUD", "VOLUME", "GREASEPENCIL"}
FILL = 1.15  # the ring's distance leaves this margin around the object's bounding sphere
# a ring framing a path this many times the object's size: suggest `follow` (samba, 1.33×: mesh path 1 2.02 →
# 1.77 % followed; the horse galloping in place, 1.03×, would gain nothing)
TRAVELS_FAR = 1.25
# Workbench samples per pixel: smooth silhouettes like a splat renderer's. 128² on llvmpipe (horse, 17k
# triangles): OFF 22 ms, FXAA 31 ms, "5" 49 ms, "8" 64 ms per image.
ANTI_ALIASING = "8"


class CapturedViews(NamedTuple):
    """One entry per (view, time), view-major: entry v * frames + t."""

    images: np.ndarray  # (F, H, W, 3) float32 in [0, 1], straight colour (not composited)
    alphas: np.ndarray  # (F, H, W) float32 in [0, 1]
    c2w: np.ndarray  # (F, 4, 4) float32 camera → world, NeRF/OpenGL (x right, y up, looking −Z)
    fov_x: float  # horizontal field of view, radians (square images: also vertical)
    times: np.ndarray  # (F,) float32 in [0, 1] over the scene's frame range
    scene_frames: np.ndarray  # (F,) float64 scene frame (with subframe) of each entry
    note: str | None = None  # advice on the capture (an object that travels far, seen by one ring)


def ring_c2w(n: int, centre, radius: float, elevation_deg: float = 15.0, start_deg: float = 0.0) -> np.ndarray:
    """(n, 4, 4) camera→world matrices (Blender/OpenGL camera axes) evenly around `centre` (Z up), looking
    at it. Azimuth 0 is on +X and the ring turns towards +Y."""
    centre = np.asarray(centre, np.float64)
    az = np.radians(start_deg + 360.0 * np.arange(n) / n)
    el = math.radians(elevation_deg)
    out = np.tile(np.eye(4), (n, 1, 1))
    for i, a in enumerate(az):
        eye = centre + radius * np.array([math.cos(el) * math.cos(a), math.cos(el) * math.sin(a), math.sin(el)])
        forward = (centre - eye) / np.linalg.norm(centre - eye)
        right = np.cross(forward, (0.0, 0.0, 1.0))
        right /= np.linalg.norm(right)
        up = np.cross(right, forward)
        out[i, :3, 0], out[i, :3, 1], out[i, :3, 2], out[i, :3, 3] = right, up, -forward, eye
    return out


# active or selected but not captured: cameras, lights, empties with nothing renderable parented to them (an
# armature stands for the meshes it moves, an empty for the objects parented to it)
NOT_CAPTURED = {"CAMERA", "LIGHT", "LIGHT_PROBE", "LIGHTPROBE", "SPEAKER"}


def _captured(ob: bpy.types.Object) -> bool:
    if ob.type == "EMPTY":
        return _instancer(ob) or any(_renders(child) for child in ob.children_recursive)
    return ob.type not in NOT_CAPTURED


def _instancer(ob: bpy.types.Object) -> bool:
    """An empty that instances a collection (a linked asset as studios bring them in): it renders."""
    return ob.type == "EMPTY" and ob.instance_type == "COLLECTION" and ob.instance_collection is not None


def _renders(ob: bpy.types.Object) -> bool:
    return ob.type in RENDERABLE or _instancer(ob)


def capture_subjects(context: bpy.types.Context, follow_mesh: str = "") -> list[bpy.types.Object]:
    """What Capture to 4D renders: the active object and the other selected ones. Left out: cameras, lights and
    empties with nothing under them (so selecting the cameras to capture from does not make them subjects), and
    the mesh named `follow_mesh` unless it is the active one (selected to pick it, it is not part of the
    capture). Empty: the whole scene."""
    active = context.active_object
    chosen = [active] if active is not None and _captured(active) else []
    chosen += [
        ob
        for ob in context.selected_objects
        if _captured(ob) and ob not in chosen and not (follow_mesh and ob.name == follow_mesh)
    ]
    return chosen


def subjects_label(subjects) -> str:
    """'Body', 'Body' and 2 more, or the whole scene: what a capture of `subjects` renders, for the panel."""
    if not subjects:
        return "the whole scene"
    more = f" and {len(subjects) - 1} more" if len(subjects) > 1 else ""
    return f"'{subjects[0].name}'{more}"


def capture(
    context: bpy.types.Context,
    obj: bpy.types.Object | list[bpy.types.Object] | None,
    views: int,
    frames: int,
    resolution: int,
    cameras: list[bpy.types.Object] | None = None,
    *,
    elevation_deg: float = 15.0,
    fov_deg: float = 40.0,
    azimuth_start_deg: float = 0.0,
    follow: bool = False,
    progress=None,
) -> CapturedViews:
    """Render `obj` (an object with its children, or a list of them; an armature stands for the meshes it
    moves, an empty for its children; None or []: every renderable object of the scene) from `views` ring
    cameras (or the given camera objects; `views` is then ignored) at `frames` times over the scene's frame
    range, as `resolution`² RGBA images. The ring's first camera is at `azimuth_start_deg` (0: on +X, turning towards
    +Y, which is also where the multi-view model's ring starts; -90: on −Y, Blender's front view).
    With `follow`, the ring moves with the object: at each time it is centred on the object's bounding box
    there, at the distance that frames the largest of those boxes, so an object that travels stays as large in
    the views as it is (one ring framing its whole path makes it small). It does not move the given cameras.
    Without `follow`, an object that travels over TRAVELS_FAR × its own size gets a `note` suggesting it.
    `progress(done, total)` is called after each render when given.

    Raises InputError when there is nothing to render or the cameras cannot be used.
    """
    scene = context.scene
    subjects = [] if obj is None else list(obj) if isinstance(obj, list | tuple) else [obj]
    targets = _targets(scene, subjects)
    if frames < 1 or resolution < 8:
        raise InputError(f"Capture needs at least 1 frame and 8 pixels (got {frames} frames, {resolution} px).")
    if cameras:
        fov_x = _cameras_fov(cameras)
    elif views < 2:
        raise InputError(f"A multi-view capture needs at least 2 views around the object, got {views}.")
    else:
        fov_x = math.radians(fov_deg)
    start, end = scene.frame_start, scene.frame_end
    positions = np.linspace(start, end, frames) if frames > 1 else np.array([float(start)])
    times = ((positions - start) / (end - start) if end > start else np.zeros(frames)).astype(np.float32)

    saved = _Saved()
    collection = None
    tmp = tempfile.mkdtemp(prefix="tessera-capture-")
    png = os.path.join(tmp, "view.png")
    frame_current, subframe = scene.frame_current, scene.frame_subframe
    try:
        centres = None  # follow: the ring's centre at each time
        note = None
        if cameras:
            cam_objects = list(cameras)
        else:
            boxes = [_bounds_at(context, targets, p) for p in positions]
            lo, hi = np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)
            largest = max(float(np.linalg.norm(b[1] - b[0])) for b in boxes)
            if follow:
                centres = [(b[0] + b[1]) / 2 for b in boxes]
                centre, half_diag = centres[0], largest / 2 or 1.0
            else:
                centre, half_diag = (lo + hi) / 2, float(np.linalg.norm(hi - lo)) / 2 or 1.0
                travel = 2 * half_diag / max(largest, 1e-12)
                if travel > TRAVELS_FAR:
                    note = (
                        f"The object travels {travel:.1f}× its own size, so it is small in a ring that frames its "
                        "whole path: Ring Follows Object keeps it large in every view."
                    )
            distance = FILL * half_diag / math.sin(fov_x / 2)
            collection = bpy.data.collections.new("Tessera capture cameras")
            scene.collection.children.link(collection)
            cam_objects = []
            for i, m in enumerate(ring_c2w(views, centre, distance, elevation_deg, azimuth_start_deg)):
                data = bpy.data.cameras.new(f"Tessera capture {i}")
                data.sensor_fit, data.angle = "HORIZONTAL", fov_x
                data.clip_start, data.clip_end = distance * 1e-3, distance * 10 + half_diag * 4
                cam = bpy.data.objects.new(f"Tessera capture {i}", data)
                collection.objects.link(cam)
                cam.matrix_world = Matrix(m.tolist())
                cam_objects.append(cam)
        _render_settings(scene, context.view_layer, targets, bool(subjects), resolution, png, saved)
        saved.set(scene, "camera", cam_objects[0])
        n_views = len(cam_objects)
        images = np.empty((n_views * frames, resolution, resolution, 3), np.float32)
        alphas = np.empty((n_views * frames, resolution, resolution), np.float32)
        c2w = np.empty((n_views * frames, 4, 4), np.float32)
        for t, position in enumerate(positions):
            whole = math.floor(position)
            scene.frame_set(whole, subframe=float(position - whole))
            if centres is not None:
                ring = ring_c2w(n_views, centres[t], distance, elevation_deg, azimuth_start_deg)
                for cam, m in zip(cam_objects, ring, strict=True):
                    cam.matrix_world = Matrix(m.tolist())
            for v, cam in enumerate(cam_objects):
                scene.camera = cam
                if bpy.ops.render.render(write_still=True) != {"FINISHED"}:
                    raise InputError(f"Blender could not render view {v} at frame {position:.2f}.")
                rgba = _read_png(png, resolution)
                e = v * frames + t
                images[e], alphas[e] = rgba[..., :3], rgba[..., 3]
                c2w[e] = _normalised(cam.matrix_world)
                if progress is not None:
                    progress(t * n_views + v + 1, n_views * frames)
    finally:
        scene.frame_set(frame_current, subframe=subframe)
        saved.restore()
        if collection is not None:
            for cam in list(collection.objects):
                data = cam.data
                bpy.data.objects.remove(cam)
                bpy.data.cameras.remove(data)
            bpy.data.collections.remove(collection)
        if os.path.exists(png):
            os.remove(png)
        os.rmdir(tmp)
    if not alphas.any():
        what = subjects_label(subjects) if subjects else "The scene"
        raise InputError(
            f"{what} did not appear in any captured view: check that it is enabled in renders (the camera icon, "
            "its collection's too) and that its collection is not excluded from this view layer"
            + (", and that the selected cameras look at it." if cameras else ".")
        )
    entry_times = np.tile(times, n_views)
    return CapturedViews(images, alphas, c2w, float(fov_x), entry_times, np.tile(positions, n_views), note)


class _Saved:
    """Attribute values to put back, in reverse order of change."""

    def __init__(self):
        self._items: list[tuple[object, str, object]] = []

    def set(self, owner, attr: str, value) -> None:
        self._items.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, value)

    def restore(self) -> None:
        for owner, attr, value in reversed(self._items):
            setattr(owner, attr, value)
        self._items.clear()


def _targets(scene: bpy.types.Scene, subjects: list[bpy.types.Object]) -> list[bpy.types.Object]:
    """The objects to render: each subject with its shown renderable children (an armature: the meshes it moves
    instead), or every shown renderable object of the scene when there are no subjects."""
    if not subjects:
        targets = [ob for ob in scene.objects if _shown(ob)]
        if not targets:
            raise InputError("The scene has no visible object to capture: add or unhide the animated object.")
        return targets
    targets = []
    for obj in subjects:
        for ob in _subject_targets(scene, obj):
            if ob not in targets:
                targets.append(ob)
    return targets


def _shown(ob: bpy.types.Object) -> bool:
    return _renders(ob) and not ob.hide_render and ob.visible_get()


def _subject_targets(scene: bpy.types.Scene, obj: bpy.types.Object) -> list[bpy.types.Object]:
    if obj.type == "ARMATURE" or (obj.type == "EMPTY" and not _instancer(obj)):
        # a character's rig stands for the meshes it moves, a group's empty for the objects parented to it
        children = obj.children_recursive  # once: Blender walks the whole scene for it
        deformed = (ob for ob in scene.objects if any(m.type == "ARMATURE" and m.object == obj for m in ob.modifiers))
        shown = [ob for ob in dict.fromkeys([*children, *deformed]) if _shown(ob)]
        if shown:
            return shown
        if obj.type == "ARMATURE":
            raise InputError(
                f"Armature '{obj.name}' moves no visible mesh to capture: select the character's mesh (or show it)."
            )
        raise InputError(f"Empty '{obj.name}' has no visible object parented to it to capture: select the object.")
    if not _renders(obj):
        raise InputError(f"'{obj.name}' is {object_kind(obj)}: select the object to capture.")
    if obj.hide_render:
        raise InputError(f"'{obj.name}' is disabled in renders: enable it (the camera icon) to capture it.")
    hiding = _collection_hiding(scene, obj)
    if hiding is not None:
        raise InputError(
            f"'{obj.name}' is in collection '{hiding.name}', which is disabled in renders: enable the "
            "collection (the camera icon in the Outliner) to capture it."
        )
    return [obj, *(ob for ob in obj.children_recursive if _shown(ob))]  # parts parented to it: wheels, eyes


def _collection_hiding(scene, obj) -> bpy.types.Collection | None:
    """A collection of the scene holding `obj` that is disabled in renders (so `obj` renders nothing), or None."""
    return next((c for c in scene.collection.children_recursive if c.hide_render and obj.name in c.all_objects), None)


def _cameras_fov(cameras) -> float:
    fovs = []
    for cam in cameras:
        if cam.type != "CAMERA" or cam.data.type != "PERSP":
            raise InputError(f"'{cam.name}' is not a perspective camera: capture uses perspective cameras only.")
        if cam.data.shift_x or cam.data.shift_y:
            raise InputError(f"Camera '{cam.name}' has a lens shift: set Shift X/Y to 0 to capture with it.")
        sensor = cam.data.sensor_height if cam.data.sensor_fit == "VERTICAL" else cam.data.sensor_width
        fovs.append(2.0 * math.atan(0.5 * sensor / cam.data.lens))  # square images: both axes
    if max(fovs) - min(fovs) > 1e-6:
        raise InputError("The selected cameras have different focal lengths: give them one lens to capture.")
    return fovs[0]


def _bounds_at(context, targets, position: float) -> tuple[np.ndarray, np.ndarray]:
    """World bounding box of the targets' evaluated geometry at scene frame `position` (with subframe)."""
    scene = context.scene
    whole = math.floor(position)
    scene.frame_set(whole, subframe=float(position - whole))
    depsgraph = context.evaluated_depsgraph_get()
    corners = []
    for ob in targets:
        if _instancer(ob):
            continue  # its empty's box is its display size: the instances' own boxes below
        ob_eval = ob.evaluated_get(depsgraph)
        m = ob_eval.matrix_world
        corners += [tuple(m @ Vector(c)) for c in ob_eval.bound_box]
    instancers = {ob for ob in targets if _instancer(ob)}
    if instancers:
        for inst in depsgraph.object_instances:
            if inst.is_instance and inst.parent is not None and inst.parent.original in instancers:
                if inst.object.type in RENDERABLE:
                    m = inst.matrix_world
                    corners += [tuple(m @ Vector(c)) for c in inst.object.bound_box]
    if not corners:
        raise InputError("The captured collection instances hold nothing that renders: check their collections.")
    pts = np.array(corners, np.float64)
    if not np.isfinite(pts).all():
        raise InputError("The object's bounds are not finite at some frame: check its animation.")
    return pts.min(axis=0), pts.max(axis=0)


def _render_settings(scene, view_layer, targets, alone: bool, resolution: int, png: str, saved: _Saved) -> None:
    render, shading = scene.render, scene.display.shading
    saved.set(render, "engine", "BLENDER_WORKBENCH")
    for attr, value in (
        ("resolution_x", resolution),
        ("resolution_y", resolution),
        ("resolution_percentage", 100),
        ("pixel_aspect_x", 1.0),
        ("pixel_aspect_y", 1.0),
        ("film_transparent", True),
        ("use_border", False),
        ("use_motion_blur", False),
        ("use_compositing", False),
        ("use_sequencer", False),
        ("use_multiview", False),
        ("use_stamp", False),
        ("use_file_extension", True),
        ("filepath", png),
    ):
        saved.set(render, attr, value)
    for attr, value in (("file_format", "PNG"), ("color_mode", "RGBA"), ("color_depth", "8"), ("compression", 0)):
        saved.set(render.image_settings, attr, value)
    # The pixels as the material's colours: no look, curve or output override, one view layer (the user's).
    saved.set(render.image_settings, "color_management", "FOLLOW_SCENE")
    saved.set(scene.display_settings, "display_device", "sRGB")
    for attr, value in (
        ("view_transform", "Standard"),
        ("look", "None"),
        ("exposure", 0.0),
        ("gamma", 1.0),
        ("use_curve_mapping", False),
    ):
        saved.set(scene.view_settings, attr, value)
    for layer in scene.view_layers:  # (use_single_layer is ignored in background mode)
        saved.set(layer, "use", layer == view_layer)
    has_colours = all(ob.type == "MESH" and ob.data.color_attributes.active_color is not None for ob in targets)
    for attr, value in (
        ("light", "FLAT"),
        ("color_type", "VERTEX" if has_colours else "MATERIAL"),
        ("show_object_outline", False),
        ("show_shadows", False),
        ("show_cavity", False),
        ("show_xray", False),
        ("show_specular_highlight", False),
        ("use_dof", False),
        ("show_backface_culling", False),
    ):
        saved.set(shading, attr, value)
    saved.set(scene.display, "render_aa", ANTI_ALIASING)
    if alone:  # render the targets alone, every other object off
        for ob in scene.objects:
            if ob not in targets and _renders(ob) and not ob.hide_render:
                saved.set(ob, "hide_render", True)


def _read_png(path: str, resolution: int) -> np.ndarray:
    """(H, W, 4) float32 straight RGBA of the rendered PNG, top row first."""
    image = bpy.data.images.load(path, check_existing=False)
    try:
        pixels = np.empty(resolution * resolution * 4, np.float32)
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    return pixels.reshape(resolution, resolution, 4)[::-1]


def _normalised(matrix_world) -> np.ndarray:
    """The camera's world matrix without scale: rotation columns of unit length."""
    m = np.array(matrix_world, np.float64)
    m[:3, :3] /= np.linalg.norm(m[:3, :3], axis=0, keepdims=True)
    return m.astype(np.float32)

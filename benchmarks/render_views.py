"""Render a mesh-sequence npz into a D-NeRF multi-view video folder with real Blender (bpy).

The sequence (DESIGN §6 npz: `rest`, `faces`, `frames`, Y up like the data in ../shared/data/mesh-sequences)
is played by a MESH_CACHE modifier in a scratch scene, coloured per vertex from its rest position (smooth
stripes a few per body length, so the images have texture a fit can lock onto), and rendered by the add-on's
multi-view capture (Workbench, flat colour, transparent film; with `--lighting studio`, Workbench's studio light
instead, which follows the view and adds specular highlights, so the shading changes with the view and with
time as parts turn: a lit capture):

  - transforms_train.json: `views` ring cameras (elevation 15°) × `frames` times evenly over the sequence;
  - transforms_test.json: `test_views` held-out cameras at azimuths between the ring's and other elevations,
    at the same times.

With `--follow`, both rings move with the object (centred on its bounding box at each time, framing the largest
of those boxes), as the capture's `follow` does: an object that travels stays large in the views.

Cameras are written in the npz's own coordinates (Y up), so the sequence's vertices line up with them. Time t
shows sequence frame `round(t * (T - 1))` exactly when `frames` divides the sequence evenly, otherwise the
nearest frame (frame_indices() says which).

    .venv/bin/python benchmarks/render_views.py ../shared/data/mesh-sequences/horse-gallop.npz out/horse \\
        --views 8 --frames 16 --size 128 --test-views 3
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
SEQUENCES = REPO.parent / "shared" / "data" / "mesh-sequences"  # the real mesh animations, NAME.npz

from backend.formats.mesh_sequence import load_mesh_sequence  # noqa: E402
from backend.gaussians4d.cameras import cameras_from_nerf  # noqa: E402
from backend.gaussians4d.data import MultiViewVideo, write_transforms  # noqa: E402

Y_UP_TO_Z_UP = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], np.float64)  # (x, y, z) → (x, -z, y)
TRAIN_ELEVATION = 15.0
TEST_ELEVATIONS = (35.0, 0.0, 25.0, -10.0, 50.0)
FOV_DEG = 40.0
STRIPES = 3.0  # colour periods along the rest pose's longest side
DETAIL = 11.0  # the "detailed" pattern's second layer: periods along the longest side
PATTERNS = ("stripes", "detailed")
LIGHTING = ("flat", "studio")  # flat: the add-on's capture; studio: Workbench's studio light, following the view


def addon_module(module: str) -> types.ModuleType:
    """An add-on module (e.g. "collectors.multiview_capture") imported from blender_addon/ without installing
    the extension.

    A bare package with the add-on's folder on its path gives the module its relative imports; its `.shared`
    is this process's `shared`, so its InputError is shared.errors.InputError.
    """
    name = "tessera_addon_for_benchmarks"
    if name not in sys.modules:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(REPO / "blender_addon")]
        sys.modules[name] = pkg
        sys.modules[f"{name}.shared"] = importlib.import_module("shared")
        sys.modules[f"{name}.shared.errors"] = importlib.import_module("shared.errors")
    return importlib.import_module(f"{name}.{module}")


def frame_indices(sequence_frames: int, frames: int) -> np.ndarray:
    """The sequence frames rendered for `frames` evenly spaced times (int, nearest frame)."""
    return np.round(np.linspace(0, sequence_frames - 1, frames)).astype(np.int64)


def vertex_colours(rest: np.ndarray, pattern: str = "stripes") -> np.ndarray:
    """(V, 4) RGBA in [0, 1] over the rest pose, a different phase and axis per channel: "stripes", smooth
    stripes STRIPES per body length; "detailed", those plus finer ones (DETAIL per body length, other axes), as a
    textured asset has."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}: one of {', '.join(PATTERNS)}")
    lo, hi = rest.min(axis=0), rest.max(axis=0)
    u = (rest - lo) / float((hi - lo).max() or 1.0)  # longest side → [0, 1]
    phase = 2 * np.pi * STRIPES * np.stack([u[:, 0] + u[:, 1], u[:, 1] - 0.5 * u[:, 2], u[:, 2] + 0.3 * u[:, 0]], -1)
    stripes = np.sin(phase + np.array([0.0, 2.1, 4.2]))
    if pattern == "stripes":
        rgb = 0.5 + 0.4 * stripes
    else:
        fine = 2 * np.pi * DETAIL * np.stack([u[:, 2] - u[:, 0], u[:, 0] + 0.6 * u[:, 1], u[:, 1] - u[:, 2]], -1)
        rgb = 0.5 + 0.25 * stripes + 0.2 * np.sin(fine + np.array([1.0, 3.0, 5.0]))
    return np.concatenate([rgb, np.ones((len(rest), 1))], -1).astype(np.float32)


def held_out_c2w(capture, n: int, views: int, centre, distance: float) -> np.ndarray:
    """(n, 4, 4) test cameras halfway between ring cameras (spread around) at other elevations than the ring's."""
    step = 360.0 / views
    between = np.floor(np.arange(n) * views / max(n, 1)) + 0.5
    c2w = [
        capture.ring_c2w(1, centre, distance, TEST_ELEVATIONS[i % len(TEST_ELEVATIONS)], step * k)
        for i, k in enumerate(between)
    ]
    return np.concatenate(c2w) if c2w else np.empty((0, 4, 4))


def _mesh_object(bpy, scene, name: str, rest_z: np.ndarray, faces: np.ndarray, colours: np.ndarray):
    me = bpy.data.meshes.new(name)
    me.vertices.add(len(rest_z))
    me.vertices.foreach_set("co", rest_z.astype(np.float32).ravel())
    me.loops.add(faces.size)
    me.loops.foreach_set("vertex_index", faces.astype(np.int32).ravel())
    me.polygons.add(len(faces))
    me.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    me.polygons.foreach_set("loop_total", np.full(len(faces), 3, np.int32))
    me.update(calc_edges=True)
    attr = me.color_attributes.new("rest colour", "FLOAT_COLOR", "POINT")
    attr.data.foreach_set("color", colours.ravel())
    me.color_attributes.active_color = attr
    ob = bpy.data.objects.new(name, me)
    scene.collection.objects.link(ob)
    return ob


def _cameras(bpy, collection, c2w_z: np.ndarray, fov: float, prefix: str) -> list:
    from mathutils import Matrix

    cams = []
    for i, m in enumerate(c2w_z):
        data = bpy.data.cameras.new(f"{prefix} {i}")
        data.sensor_fit, data.angle = "HORIZONTAL", fov
        cam = bpy.data.objects.new(f"{prefix} {i}", data)
        collection.objects.link(cam)
        cam.matrix_world = Matrix(m.tolist())
        cams.append(cam)
    return cams


def render_sequence_views(
    npz_path: str | Path,
    out_dir: str | Path,
    views: int = 8,
    frames: int = 16,
    size: int = 128,
    test_views: int = 3,
    pattern: str = "stripes",
    lighting: str = "flat",
    follow: bool = False,
) -> Path:
    """Render `npz_path` into the D-NeRF folder `out_dir` (see the module docstring) and return `out_dir`.

    Works in a scratch scene that is removed afterwards, so a Blender session's own scene is left alone.
    """
    import bpy

    if lighting not in LIGHTING:
        raise ValueError(f"unknown lighting {lighting!r}: one of {', '.join(LIGHTING)}")
    capture = addon_module("collectors.multiview_capture")
    out_dir = Path(out_dir)
    sequence = load_mesh_sequence(npz_path)  # checked: shapes, finite values, one topology
    rest, faces = sequence.rest, sequence.faces
    picked = sequence.frames[frame_indices(sequence.frame_count, frames)]
    to_z = Y_UP_TO_Z_UP[:3, :3]
    picked_z = (picked @ to_z.T).astype(np.float32)

    scene = bpy.data.scenes.new("render_views scratch")
    collection = bpy.data.collections.new("render_views cameras")
    scene.collection.children.link(collection)
    cache_dir = tempfile.mkdtemp(prefix="tessera-render-views-")
    pc2_path = Path(cache_dir) / "sequence.pc2"
    try:
        ob = _mesh_object(bpy, scene, Path(npz_path).stem, (rest @ to_z.T), faces, vertex_colours(rest, pattern))
        _write_pc2(pc2_path, picked_z)
        mod = ob.modifiers.new("sequence", "MESH_CACHE")
        mod.cache_format, mod.filepath = "PC2", str(pc2_path)
        mod.play_mode, mod.time_mode, mod.frame_start = "SCENE", "FRAME", 1
        mod.forward_axis, mod.up_axis, mod.deform_mode = "POS_Y", "POS_Z", "OVERWRITE"
        scene.frame_start, scene.frame_end = 1, frames

        lo, hi = picked_z.reshape(-1, 3).min(axis=0), picked_z.reshape(-1, 3).max(axis=0)
        centre, half_diag = (lo + hi) / 2, float(np.linalg.norm(hi - lo)) / 2
        if follow:  # the rings move with the object's box, as the capture's `follow` (capture.capture)
            lo, hi = picked_z.min(axis=1), picked_z.max(axis=1)  # (T,3) each
            centre, half_diag = (lo[0] + hi[0]) / 2, float(np.linalg.norm(hi - lo, axis=1).max()) / 2
        fov = math.radians(FOV_DEG)
        distance = capture.FILL * half_diag / math.sin(fov / 2)
        train_c2w = capture.ring_c2w(views, centre, distance, TRAIN_ELEVATION)
        test_c2w = held_out_c2w(capture, test_views, views, centre, distance)
        for split, c2w in (("train", train_c2w), ("test", test_c2w)):
            if not len(c2w):
                continue
            cams = _cameras(bpy, collection, c2w, fov, split)
            if follow:
                _follow(cams, (lo + hi) / 2 - centre)
            with bpy.context.temp_override(scene=scene, view_layer=scene.view_layers[0]), _lit(capture, lighting):
                got = capture.capture(bpy.context, ob, len(cams), frames, size, cameras=cams)
            _write_split(out_dir, split, got, size)
    finally:
        for ob_ in list(scene.objects):
            data = ob_.data
            bpy.data.objects.remove(ob_)
            if isinstance(data, bpy.types.Mesh):
                bpy.data.meshes.remove(data)
            elif isinstance(data, bpy.types.Camera):
                bpy.data.cameras.remove(data)
        for action in [a for a in bpy.data.actions if a.name.startswith(FOLLOW_ACTION)]:
            bpy.data.actions.remove(action)
        bpy.data.collections.remove(collection)
        bpy.data.scenes.remove(scene)
        pc2_path.unlink(missing_ok=True)
        Path(cache_dir).rmdir()
    return out_dir


FOLLOW_ACTION = "render_views follow"


def _follow(cams: list, offsets: np.ndarray) -> None:
    """Key each camera's location at scene frames 1..T: where it is, moved by `offsets` (T,3)."""
    for cam in cams:
        base = np.array(cam.location)
        for t, offset in enumerate(offsets):
            cam.location = base + offset
            cam.keyframe_insert("location", frame=t + 1)
        cam.animation_data.action.name = f"{FOLLOW_ACTION} {cam.name}"


@contextlib.contextmanager
def _lit(capture, lighting: str):
    """While capturing, the add-on's render settings (flat light) with Workbench's studio light instead (for
    "studio"): the capture still restores everything it changed afterwards."""
    if lighting == "flat":
        yield
        return
    flat = capture._render_settings

    def studio(scene, view_layer, targets, alone, resolution, png, saved):
        flat(scene, view_layer, targets, alone, resolution, png, saved)
        shading = scene.display.shading
        for attr, value in (
            ("light", "STUDIO"),
            ("show_specular_highlight", True),
            ("use_world_space_lighting", False),
        ):
            saved.set(shading, attr, value)

    capture._render_settings = studio
    try:
        yield
    finally:
        capture._render_settings = flat


def _write_pc2(path: Path, frames: np.ndarray) -> None:
    pc2 = addon_module("appliers.pc2")
    pc2.create(path, frames.shape[1], start_frame=0.0)
    pc2.append(path, frames)


def _write_split(out_dir: Path, split: str, got, size: int) -> None:
    """Captured arrays (Blender's Z-up world) → a MultiViewVideo in the npz's Y-up world → json + PNGs."""
    c2w_y = np.linalg.inv(Y_UP_TO_Z_UP) @ got.c2w.astype(np.float64)
    a = got.alphas[..., None]
    video = MultiViewVideo(
        images=(got.images * a + (1.0 - a)).astype(np.float32),  # over white, load_transforms' default
        alphas=got.alphas,
        cameras=cameras_from_nerf(c2w_y, size, size, camera_angle_x=got.fov_x),
        times=got.times,
        names=[f"{split}_{i}" for i in range(len(got.times))],
    )
    write_transforms(out_dir, video, split)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("npz", type=Path, help="mesh-sequence npz (rest, faces, frames)")
    parser.add_argument("out", type=Path, help="output folder (transforms_train.json, transforms_test.json, PNGs)")
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--test-views", type=int, default=3)
    parser.add_argument(
        "--pattern", default="stripes", choices=PATTERNS, help="the vertex colours (see vertex_colours)"
    )
    parser.add_argument("--lighting", default="flat", choices=LIGHTING, help="flat (the capture's) or studio")
    parser.add_argument("--follow", action="store_true", help="the rings move with the object (capture's follow)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    render_sequence_views(
        args.npz, args.out, args.views, args.frames, args.size, args.test_views, args.pattern, args.lighting,
        args.follow,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    images = (args.views + args.test_views) * args.frames
    print(f"{images} images of {args.size}² in {seconds:.1f} s ({1000 * seconds / images:.0f} ms each) → {args.out}")


if __name__ == "__main__":
    main()

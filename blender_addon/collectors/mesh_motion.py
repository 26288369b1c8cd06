"""The motion of a mesh object as arrays: whatever animates it (shape keys, modifiers,
MESH_CACHE / Alembic), evaluated through the depsgraph frame by frame.

`rest` is the mesh data's own vertices (undeformed), `frames` the evaluated vertices per
scene frame and `faces` the rest mesh's triangles. Object-level motion (keyed location /
rotation / scale, a moving parent, constraints) is baked into `frames`: they are expressed in
the object's space at the first frame (`object_matrix`, its world matrix there), so a rig
placed at that matrix reproduces the motion in world space. The scene's current frame is
restored afterwards.
"""

from __future__ import annotations

from typing import NamedTuple

import bpy
import numpy as np

from ..shared.errors import InputError
from . import object_kind

MOTION_EPSILON = 1e-6  # relative to the mesh size: below this nothing moves


class MotionError(InputError):
    """The object's animation cannot be rigged (not a mesh, topology changes, too short, static)."""


class CollectedMotion(NamedTuple):
    rest: np.ndarray  # (V, 3) float32, the mesh data's undeformed vertices
    frames: np.ndarray  # (T, V, 3) float32, evaluated, in the object's space at the first frame
    faces: np.ndarray  # (F, 3) int32
    object_matrix: np.ndarray  # (4, 4) float64, the object's world matrix at the first frame
    object_moves: bool  # its world matrix changes over the range (baked into `frames`)


def vertex_positions(mesh: bpy.types.Mesh) -> np.ndarray:
    """(V, 3) float32 vertex positions with foreach_get."""
    out = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", out)
    return out.reshape(-1, 3)


def triangles(mesh: bpy.types.Mesh) -> np.ndarray:
    """(F, 3) int32 vertex indices of the mesh's loop triangles (F may be 0)."""
    mesh.calc_loop_triangles()
    out = np.empty(len(mesh.loop_triangles) * 3, np.int32)
    mesh.loop_triangles.foreach_get("vertices", out)
    return out.reshape(-1, 3)


TOPOLOGY_MODIFIERS = {
    "SUBSURF", "MULTIRES", "MIRROR", "TRIANGULATE", "SOLIDIFY", "BEVEL", "EDGE_SPLIT", "WELD", "WIREFRAME",
    "ARRAY", "DECIMATE", "REMESH", "SKIN", "SCREW",
}  # fmt: skip


def trailing_topology_modifiers(ob: bpy.types.Object) -> list[bpy.types.Modifier]:
    """The topology modifiers at the end of the stack (Subdivision last, as characters have it), switched on:
    they shape the moving mesh, not its motion, so the motion is read without them and they stay after the rig.
    Switched-off modifiers between them do not count."""
    found = []
    for mod in reversed(ob.modifiers):
        if not mod.show_viewport:
            continue
        if mod.type not in TOPOLOGY_MODIFIERS:
            break
        found.append(mod)
    return found[::-1]


def evaluated_motion(
    context: bpy.types.Context, ob: bpy.types.Object, frame_start: int, frame_end: int
) -> CollectedMotion:
    """The motion of `ob` over frames start..end (inclusive); see CollectedMotion.

    Raises MotionError with what to change when the motion cannot be rigged.
    """
    if ob is None or ob.type != "MESH":
        what = f"'{ob.name}' is {object_kind(ob)}" if ob is not None else "No object is active"
        raise MotionError(f"{what}: select the animated mesh object to rig.")
    count = frame_end - frame_start + 1
    if count < 2:
        raise MotionError(
            f"The frame range {frame_start}..{frame_end} holds {max(count, 0)} frame(s); rigging from motion "
            "needs at least 2: widen the scene's frame range to the animation."
        )
    rest = vertex_positions(ob.data)
    faces = triangles(ob.data)
    v = len(rest)
    if v == 0:
        raise MotionError(f"Mesh '{ob.name}' has no vertices.")
    frames = np.empty((count, v, 3), np.float32)
    matrices = np.empty((count, 4, 4), np.float64)
    scene = context.scene
    frame_current, subframe = scene.frame_current, scene.frame_subframe
    trailing = trailing_topology_modifiers(ob)
    for mod in trailing:
        mod.show_viewport = False  # read the motion of the mesh they smooth; switched back on below
    try:
        for i, frame in enumerate(range(frame_start, frame_end + 1)):
            scene.frame_set(frame)
            depsgraph = context.evaluated_depsgraph_get()
            ob_eval = ob.evaluated_get(depsgraph)
            mesh = ob_eval.to_mesh()
            try:
                n = len(mesh.vertices)
                if n != v:
                    if i == 0:
                        raise MotionError(
                            f"Mesh '{ob.name}' evaluates to {n} vertices but its data has {v}: a modifier before "
                            "the animation's changes the topology (e.g. Subdivision, Remesh). Move it to the end "
                            "of the stack, or disable or apply it, before rigging."
                        )
                    raise MotionError(
                        f"Mesh '{ob.name}' changes vertex count at frame {frame} ({v} → {n}); "
                        "rigging needs one topology."
                    )
                mesh.vertices.foreach_get("co", frames[i].reshape(-1))
                matrices[i] = np.array(ob_eval.matrix_world, np.float64)
            finally:
                ob_eval.to_mesh_clear()
    finally:
        for mod in trailing:
            mod.show_viewport = True
        scene.frame_set(frame_current, subframe=subframe)
    size = float(np.linalg.norm(rest.max(axis=0) - rest.min(axis=0))) or 1.0
    relative = np.linalg.inv(matrices[0]) @ matrices  # each frame's object space → the first frame's
    object_moves = bool(np.abs(relative - np.eye(4)).max() > MOTION_EPSILON)
    if object_moves:
        frames = (frames @ relative[:, :3, :3].transpose(0, 2, 1) + relative[:, None, :3, 3]).astype(np.float32)
    if not np.isfinite(frames).all():
        t = int(np.argwhere(~np.isfinite(frames))[0][0])
        raise MotionError(f"Mesh '{ob.name}' has NaN or infinite vertex positions at frame {frame_start + t}.")
    if float(np.abs(frames - frames[0]).max()) <= MOTION_EPSILON * size:
        raise MotionError(
            f"Mesh '{ob.name}' does not move over frames {frame_start}..{frame_end}: nothing moves, so there is "
            "nothing to rig. Animate it (shape keys, modifiers, a mesh cache) or set the frame range to its animation."
        )
    return CollectedMotion(rest, frames, faces, matrices[0], object_moves)


def without_final_hold(frames: np.ndarray) -> np.ndarray:
    """(T', V, 3) the frames up to the first one of the final hold: a 9-frame sequence in a 250-frame scene is
    rigged over its 9 frames, not 250 (keys hold their last value after the action ends: playback is the same)."""
    scale = max(float(np.abs(frames).max(initial=0.0)), 1e-12)
    moving = np.flatnonzero(np.abs(frames - frames[-1:]).reshape(len(frames), -1).max(1) > 1e-6 * scale)
    return frames[: int(moving.max()) + 2 if len(moving) else 2]

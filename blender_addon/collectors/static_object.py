"""A static mesh object as the multi-view model and the 4D fit need it: its evaluated surface in world space
(triangles), plus how to dress a copy of it (material per triangle, UVs per triangle corner) so the animated
take that comes back renders like the original.

The mesh is the object's evaluated mesh (modifiers applied) at the scene's first frame, the frame the condition
renders are made at; the user's mesh data is only read.
"""

from __future__ import annotations

from typing import NamedTuple

import bpy
import numpy as np

from ..shared.errors import InputError
from . import object_kind


class ObjectSurface(NamedTuple):
    vertices: np.ndarray  # (N, 3) float32, world space
    faces: np.ndarray  # (M, 3) int32 triangles
    materials: np.ndarray  # (M,) int32 material slot of each triangle
    uvs: np.ndarray | None  # (M, 3, 2) float32 active UV map at each triangle corner, or None


def world_surface(context: bpy.types.Context, ob: bpy.types.Object) -> ObjectSurface:
    """The evaluated, triangulated surface of `ob` at the scene's first frame; InputError if it has none."""
    if ob is None or ob.type != "MESH":
        what = f"'{ob.name}' is {object_kind(ob)}" if ob is not None else "No object is active"
        raise InputError(f"{what}: select the static mesh object to animate.")
    scene = context.scene
    frame_current, subframe = scene.frame_current, scene.frame_subframe
    try:
        scene.frame_set(scene.frame_start)
        ob_eval = ob.evaluated_get(context.evaluated_depsgraph_get())
        mesh = ob_eval.to_mesh()
        try:
            count = len(mesh.vertices)
            local = np.empty(count * 3, np.float32)
            mesh.vertices.foreach_get("co", local)
            mesh.calc_loop_triangles()
            tris = len(mesh.loop_triangles)
            faces = np.empty(tris * 3, np.int32)
            mesh.loop_triangles.foreach_get("vertices", faces)
            materials = np.empty(tris, np.int32)
            mesh.loop_triangles.foreach_get("material_index", materials)
            uvs = None
            layer = mesh.uv_layers.active
            if layer is not None and tris:
                loops = np.empty(tris * 3, np.int32)
                mesh.loop_triangles.foreach_get("loops", loops)
                per_loop = np.empty(len(mesh.loops) * 2, np.float32)
                layer.data.foreach_get("uv", per_loop)
                uvs = per_loop.reshape(-1, 2)[loops].reshape(tris, 3, 2)
            matrix = np.array(ob_eval.matrix_world, np.float64)
        finally:
            ob_eval.to_mesh_clear()
    finally:
        scene.frame_set(frame_current, subframe=subframe)
    if count == 0 or tris == 0:
        raise InputError(
            f"'{ob.name}' has no geometry to animate ({count} vertices, {tris} faces): select a mesh with faces."
        )
    world = local.reshape(-1, 3).astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
    if not np.isfinite(world).all():
        raise InputError(f"'{ob.name}' has NaN or infinite vertex positions.")
    faces = faces.reshape(-1, 3)
    if np.linalg.det(matrix[:3, :3]) < 0:  # a mirroring transform (negative scale) turns the faces inside out:
        faces = faces[:, ::-1].copy()  # wind them the other way, as Blender draws them, and their UVs with them
        uvs = None if uvs is None else uvs[:, ::-1].copy()
    return ObjectSurface(world.astype(np.float32), faces, materials, uvs)

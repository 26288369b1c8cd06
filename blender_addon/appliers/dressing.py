"""Dress an animated take like the object it was made from: the source's materials (per triangle) and its
active UV map (per triangle corner), so the take renders like the original. The take's mesh has one polygon
per triangle the collector sent, in order (appliers.mesh_sequence.build_mesh), which is what makes the
per-triangle data line up; if Blender's validation dropped degenerate triangles the dressing is skipped."""

from __future__ import annotations

import bpy
import numpy as np


def dress_like(target: bpy.types.Object, source: bpy.types.Object | None, materials, uvs, uv_name="UVMap") -> bool:
    """Copy material slots, per-triangle material indices and UVs onto `target`; False when they do not fit."""
    mesh = target.data
    materials = np.asarray(materials, np.int32)
    if len(mesh.polygons) != len(materials):
        return False
    if source is not None:
        for slot in source.material_slots:
            mesh.materials.append(slot.material)
        if len(source.material_slots):
            top = len(source.material_slots) - 1
            mesh.polygons.foreach_set("material_index", np.clip(materials, 0, top))
    if uvs is not None:
        layer = mesh.uv_layers.new(name=uv_name)
        layer.data.foreach_set("uv", np.ascontiguousarray(uvs, np.float32).ravel())
    mesh.update()
    return True

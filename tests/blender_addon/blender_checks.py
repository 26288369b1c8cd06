"""Helpers the Blender tests share: evaluated positions, connecting, reopening."""

from __future__ import annotations

import numpy as np


def evaluated_positions(bpy, ob, frame: int) -> np.ndarray:
    """(V, 3) float32 vertex positions of `ob` after modifiers at scene frame `frame`."""
    bpy.context.scene.frame_set(frame)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    mesh = ob.evaluated_get(depsgraph).data
    out = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", out)
    return out.reshape(-1, 3)


def connect(bpy, backend) -> None:
    assert bpy.ops.tessera.connect(address=backend.address, timeout=30) == {"FINISHED"}


def load_and_wait(bpy, path, **kw) -> None:
    assert bpy.ops.tessera.load_mesh_sequence(filepath=str(path), **kw) == {"FINISHED"}
    assert bpy.ops.tessera.wait(timeout=120) == {"FINISHED"}

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


def load_one_frame_per_chunk(bpy, path) -> None:
    """Start loading a mesh sequence through the generic plugin runner, one frame per result, so a test can act
    between frames (the job runs on; pump or wait to apply it)."""
    runtime = bpy.context.window_manager.tessera
    runtime.plugin = "sequence.load_mesh"
    runtime.params["path"].string_value = str(path)
    runtime.params["chunk_frames"].int_value = 1
    assert bpy.ops.tessera.run_plugin() == {"FINISHED"}

"""Save and load fitted 4D Gaussian models as a model folder (config.json + model.safetensors).

The folder layout is the one `backend/motion/pretrained.py` writes for every learned model here (one module,
"gaussians", with its `DynamicGaussiansConfig`), so the same loader checks apply: a missing folder, file or
tensor, or a shape that does not match the config, is an `InputError` naming the folder and the problem.
Fit facts (seconds, iterations, final losses, the rest mesh's faces for mesh-bound fits) travel as meta and
extra arrays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from backend.gaussians4d.model import DynamicGaussians, DynamicGaussiansConfig
from backend.motion.pretrained import load_pretrained, save_pretrained

MODULE = "gaussians"


def save_model(folder: str | Path, result: Any) -> Path:
    """Write `result` (a FitResult, or a bare DynamicGaussians) to `folder`; returns the folder.

    meta holds {"kind": "dynamic_gaussians", "seconds", "iterations", "preset", "history" (last entry),
    "captured_times" ([first, last] time fitted)} when `result` is a FitResult; a mesh-bound fit also stores
    its rest mesh as arrays "rest_vertices", "rest_faces".
    """
    model = result if isinstance(result, DynamicGaussians) else result.model
    meta: dict[str, Any] = {"kind": "dynamic_gaussians", "num_gaussians": len(model), "knots": model.knots}
    arrays: dict[str, np.ndarray] = {}
    if not isinstance(result, DynamicGaussians):
        meta.update(seconds=float(result.seconds), iterations=int(result.iterations), preset=result.preset)
        if result.captured_times is not None:
            meta["captured_times"] = [float(t) for t in result.captured_times]
        if result.history:
            meta["final"] = {k: float(v) for k, v in result.history[-1].items()}
        if result.rest_mesh is not None:
            vertices, faces = result.rest_mesh
            arrays["rest_vertices"] = np.asarray(vertices, dtype=np.float32)
            arrays["rest_faces"] = np.asarray(faces, dtype=np.int32)
    return save_pretrained(folder, {MODULE: model}, {MODULE: model.config}, arrays, meta, trained=True)


def load_model(folder: str | Path) -> tuple[DynamicGaussians, dict[str, Any]]:
    """Load a folder written by `save_model`: (model in eval mode on the CPU, meta).

    meta is the saved meta plus "rest_mesh": (vertices (V,3) f32, faces (F,3) i32) or None.
    """
    loaded = load_pretrained(folder, {MODULE: (DynamicGaussiansConfig, DynamicGaussians)})
    meta = dict(loaded.meta)
    if "rest_vertices" in loaded.arrays and "rest_faces" in loaded.arrays:
        meta["rest_mesh"] = (loaded.arrays["rest_vertices"], loaded.arrays["rest_faces"])
    else:
        meta["rest_mesh"] = None
    return loaded.modules[MODULE], meta

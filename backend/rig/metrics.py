"""Error metrics for skinning decompositions.

E_RMS is the metric of Kavan et al. 2010 that the skinning-decomposition literature (SSDR, Dem Bones
comparisons) reports, as defined in `../shared/data/README.md`:

    E_RMS = 1000 · ‖A − Â‖_F / sqrt(3·T·V) · 2 / diag

with `diag` the bounding-box diagonal of the rest pose. It is unitless (the RMS vertex error in
thousandths of the rest pose's half diagonal), so meshes of any scale compare.
"""

from __future__ import annotations

import numpy as np


def bbox_diagonal(rest: np.ndarray) -> float:
    """Length of the axis-aligned bounding-box diagonal of `rest` (V,3), in the mesh's units."""
    rest = np.asarray(rest, dtype=np.float64)
    return float(np.linalg.norm(rest.max(axis=0) - rest.min(axis=0)))


def e_rms_from_sse(sse: float, frames: int, vertices: int, diag: float) -> float:
    """E_RMS from a summed squared error (mesh units²) over `frames`·`vertices` points."""
    if diag <= 0.0:
        return 0.0 if sse <= 0.0 else float("inf")
    return float(1000.0 * np.sqrt(max(sse, 0.0) / (3.0 * frames * vertices)) * 2.0 / diag)


def e_rms(frames: np.ndarray, reconstruction: np.ndarray, rest: np.ndarray) -> float:
    """E_RMS (Kavan et al. 2010) of `reconstruction` against `frames`, both (T,V,3); `rest` (V,3).

    Accumulates in float64 one frame at a time, so a float32 input of any length costs no extra copy.
    """
    frames = np.asarray(frames)
    reconstruction = np.asarray(reconstruction)
    if frames.shape != reconstruction.shape or frames.ndim != 3 or frames.shape[2] != 3:
        raise ValueError(f"e_rms needs two (T,V,3) arrays of one shape, got {frames.shape} and {reconstruction.shape}.")
    t, v, _ = frames.shape
    sse = 0.0
    for a, b in zip(frames, reconstruction, strict=True):
        d = a.astype(np.float64) - b.astype(np.float64)
        sse += float(np.einsum("ij,ij->", d, d))
    return e_rms_from_sse(sse, t, v, bbox_diagonal(rest))

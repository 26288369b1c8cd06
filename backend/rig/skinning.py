"""Linear blend skinning, exactly as the `rig` result type defines it (shared/results.py):

    v_t = Σ_k w[v,k] · (pose[t,b] @ inv(rest[b])) @ [rest_v, 1],   b = index[v,k]

Functions over arrays; no per-vertex Python loops.
"""

from __future__ import annotations

import numpy as np

# Budget for the (chunk, V, K, 3) gather in linear_blend_skin: bounds memory on long sequences.
_CHUNK_FLOATS = 1 << 24


def bone_transforms(pose_matrices: np.ndarray, rest_matrices: np.ndarray) -> np.ndarray:
    """Skinning transforms (T,B,4,4) = pose_matrices (T,B,4,4) @ inv(rest_matrices (B,4,4)).

    Each maps a rest-pose point (object space) to its place in frame t if it moved with bone b.
    Computed in float64 and returned as float64 (callers cast as they need).
    """
    pose = np.asarray(pose_matrices, dtype=np.float64)
    inv_rest = np.linalg.inv(np.asarray(rest_matrices, dtype=np.float64))
    return pose @ inv_rest[None]


def linear_blend_skin(
    rest: np.ndarray, weight_index: np.ndarray, weight_value: np.ndarray, transforms: np.ndarray
) -> np.ndarray:
    """Skin `rest` (V,3) with sparse weights (V,K) and transforms (T,B,4,4) or (T,B,3,4); → (T,V,3) float32.

    Blends the K transforms of each vertex first (V,3,4 per frame), then applies the blend to the vertex:
    one gather and one small einsum per chunk of frames.
    """
    rest = np.asarray(rest, dtype=np.float64)
    index = np.asarray(weight_index, dtype=np.int64)
    value = np.asarray(weight_value, dtype=np.float64)
    m = np.asarray(transforms, dtype=np.float64)[..., :3, :]  # (T,B,3,4)
    t, v, k = m.shape[0], rest.shape[0], index.shape[1]
    out = np.empty((t, v, 3), np.float32)
    hom = np.concatenate([rest, np.ones((v, 1))], axis=1)  # (V,4)
    step = max(1, _CHUNK_FLOATS // max(1, v * k * 12))
    for s in range(0, t, step):
        blended = np.einsum("vk,tvkij->tvij", value, m[s : s + step][:, index])  # (chunk,V,3,4)
        out[s : s + step] = np.einsum("tvij,vj->tvi", blended, hom)
    return out

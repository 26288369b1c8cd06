"""Result types: the arrays and meta each kind of streamed result carries.

Both sides use these checks: the backend before it sends, the add-on before it writes
anything into the user's scene. Units are the source data's (no axis conversion).

mesh.rest        arrays: rest (V,3) float32, faces (F,3) int32 (F may be 0)
                 meta:   name (str), frames (int, total frames to expect), fps (float, optional)
mesh.frames      arrays: positions (N,V,3) float32, N ≥ 1 consecutive frames
                 meta:   start (int, index of the first frame in the sequence)
rig              arrays: parents (B,) int32 (-1 = root), rest_matrices (B,4,4) f32 (bone → object
                         in the rest pose, rigid), pose_matrices (T,B,4,4) f32 (bone → object per
                         frame, rigid), weight_index (V,K) int32, weight_value (V,K) f32 (≥ 0,
                         rows sum to 1; unused slots have weight 0)
                 meta:   name (str), bone_names (list of B str), mode ("free" | "skeleton"),
                         e_rms (float, Kavan et al. 2010), fps (float, optional)
                 Skinning: v_t = Σ_k w[v,k] · (pose[t,b] @ inv(rest[b])) @ [rest_v, 1], b = index[v,k]
gaussians.frame  arrays: means (N,3) f32, scales (N,3) f32 (log scale, as in 3DGS PLY),
                         rotations (N,4) f32 (w,x,y,z), opacities (N,) f32 (logit),
                         sh_dc (N,3) f32, optional sh_rest (N,K,3) f32
                 meta:   name (str), frame (int), frames (int, total), ply (str, file name)
motion.clip      arrays: rotations (T,J,4) f32 unit quaternions (w,x,y,z), LOCAL to the parent joint with
                         world-aligned rest frames (BVH convention, Y-up), root_positions (T,3) f32 (the
                         root joint's position per frame, the armature's units)
                 meta:   name (str), fps (number), joints (list of J joint names, parent before child),
                         kept (list of [a, b] inclusive 0-based clip frame ranges the model left exactly
                         as they were sent; [] when none)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .codec import all_finite
from .errors import ErrorCode, InputError

MESH_REST = "mesh.rest"
MESH_FRAMES = "mesh.frames"
GAUSSIANS_FRAME = "gaussians.frame"
RIG = "rig"
MOTION_CLIP = "motion.clip"

RESULT_TYPES = (MESH_REST, MESH_FRAMES, GAUSSIANS_FRAME, RIG, MOTION_CLIP)
UNIT_TOLERANCE = 1e-3  # a motion clip's quaternions: | |q| - 1 | at most this

GAUSSIAN_ARRAYS = ("means", "scales", "rotations", "opacities", "sh_dc")
SH_C0 = 0.28209479177387814  # the degree-0 real spherical harmonic: RGB = 0.5 + SH_C0 · sh_dc (3DGS's f_dc)


def _need(arrays: dict[str, np.ndarray], name: str, what: str) -> np.ndarray:
    if name not in arrays:
        raise InputError(f"{what} is missing its '{name}' array.", ErrorCode.BAD_INPUT)
    return arrays[name]


def _check(arr: np.ndarray, name: str, what: str, dtype: str, shape: tuple[int | None, ...]) -> None:
    if arr.dtype != np.dtype(dtype):
        raise InputError(f"{what}: '{name}' must be {dtype}, got {arr.dtype}.")
    if arr.ndim != len(shape) or any(s is not None and d != s for d, s in zip(arr.shape, shape, strict=False)):
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise InputError(f"{what}: '{name}' must have shape {want}, got {tuple(arr.shape)}.")
    if arr.dtype.kind == "f" and not all_finite(arr):
        bad = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise InputError(f"{what}: '{name}' has a NaN or infinite value at index {bad}.")


def check_mesh_rest(arrays: dict[str, np.ndarray], meta: dict[str, Any], what: str = "Mesh sequence") -> None:
    rest = _need(arrays, "rest", what)
    faces = _need(arrays, "faces", what)
    _check(rest, "rest", what, "float32", (None, 3))
    _check(faces, "faces", what, "int32", (None, 3))
    if rest.shape[0] == 0:
        raise InputError(f"{what} has no vertices.")
    if faces.size and (faces.min() < 0 or faces.max() >= rest.shape[0]):
        raise InputError(
            f"{what}: faces refer to vertex {int(faces.max()) if faces.max() >= rest.shape[0] else int(faces.min())}"
            f" but the mesh has {rest.shape[0]} vertices (0..{rest.shape[0] - 1})."
        )
    frames = meta.get("frames")
    if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
        raise InputError(f"{what}: meta 'frames' must be a positive frame count, got {frames!r}.")


def check_mesh_frames(
    arrays: dict[str, np.ndarray], meta: dict[str, Any], vertex_count: int, what: str = "Mesh sequence"
) -> np.ndarray:
    """Check one chunk of frames against the rest mesh's vertex count; return positions (N,V,3)."""
    pos = _need(arrays, "positions", what)
    if pos.ndim == 3 and pos.shape[1] != vertex_count:
        start = meta.get("start", "?")
        raise InputError(
            f"{what} changes vertex count at frame {start} ({vertex_count} → {pos.shape[1]}); "
            "a mesh sequence needs one topology for all frames."
        )
    _check(pos, "positions", what, "float32", (None, vertex_count, 3))
    if pos.shape[0] == 0:
        raise InputError(f"{what}: a frames chunk must hold at least one frame.")
    start = meta.get("start")
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise InputError(f"{what}: meta 'start' must be a frame index ≥ 0, got {start!r}.")
    return pos


def check_gaussians(arrays: dict[str, np.ndarray], what: str = "Gaussian frame") -> int:
    """Check one Gaussian frame; return its Gaussian count."""
    means = _need(arrays, "means", what)
    _check(means, "means", what, "float32", (None, 3))
    n = means.shape[0]
    _check(_need(arrays, "scales", what), "scales", what, "float32", (n, 3))
    _check(_need(arrays, "rotations", what), "rotations", what, "float32", (n, 4))
    _check(_need(arrays, "opacities", what), "opacities", what, "float32", (n,))
    _check(_need(arrays, "sh_dc", what), "sh_dc", what, "float32", (n, 3))
    if "sh_rest" in arrays:
        _check(arrays["sh_rest"], "sh_rest", what, "float32", (n, None, 3))
    return n


def check_rig(
    arrays: dict[str, np.ndarray], meta: dict[str, Any], vertex_count: int | None = None, what: str = "Rig"
) -> int:
    """Check a rig result (see the module docstring); return its bone count."""
    parents = _need(arrays, "parents", what)
    _check(parents, "parents", what, "int32", (None,))
    b = parents.shape[0]
    if b == 0:
        raise InputError(f"{what} has no bones.")
    _check(_need(arrays, "rest_matrices", what), "rest_matrices", what, "float32", (b, 4, 4))
    pose = _need(arrays, "pose_matrices", what)
    _check(pose, "pose_matrices", what, "float32", (None, b, 4, 4))
    index = _need(arrays, "weight_index", what)
    _check(index, "weight_index", what, "int32", (vertex_count, None))
    weights = _need(arrays, "weight_value", what)
    _check(weights, "weight_value", what, "float32", index.shape)
    if ((parents < -1) | (parents >= b)).any():
        raise InputError(f"{what}: parents must be -1 (root) or a bone index below {b}.")
    depth = np.zeros(b, np.int64)  # walking up from every bone must reach a root within b steps
    node = parents.astype(np.int64).copy()
    for _ in range(b):
        alive = node >= 0
        if not alive.any():
            break
        depth[alive] += 1
        node[alive] = parents[node[alive]]
    else:
        if (node >= 0).any():
            raise InputError(f"{what}: the bone hierarchy has a cycle (bone {int(np.argmax(node >= 0))}).")
    if index.size and ((index < 0) | (index >= b)).any():
        raise InputError(f"{what}: weight_index refers to bones outside 0..{b - 1}.")
    if (weights < 0).any():
        raise InputError(f"{what}: skin weights must be ≥ 0.")
    sums = weights.sum(axis=1)
    if index.size and not np.allclose(sums, 1.0, atol=1e-4):
        bad = int(np.argmax(np.abs(sums - 1.0)))
        raise InputError(f"{what}: the skin weights of vertex {bad} sum to {sums[bad]:.6f}, not 1.")
    names = meta.get("bone_names")
    if not isinstance(names, list) or len(names) != b or not all(isinstance(n, str) and n for n in names):
        raise InputError(f"{what}: meta 'bone_names' must list {b} non-empty names.")
    if len(set(names)) != b:
        raise InputError(f"{what}: bone names must be unique.")
    if meta.get("mode") not in ("free", "skeleton"):
        raise InputError(f"{what}: meta 'mode' must be 'free' or 'skeleton', got {meta.get('mode')!r}.")
    return b


def check_motion_clip(
    arrays: dict[str, np.ndarray], meta: dict[str, Any], joint_count: int | None = None, what: str = "Motion clip"
) -> tuple[int, int]:
    """Check a motion.clip result (see the module docstring); return (frames T, joints J)."""
    rotations = _need(arrays, "rotations", what)
    _check(rotations, "rotations", what, "float32", (None, joint_count, 4))
    t, j = rotations.shape[0], rotations.shape[1]
    if t == 0 or j == 0:
        raise InputError(f"{what} is empty ({t} frames, {j} joints).")
    _check(_need(arrays, "root_positions", what), "root_positions", what, "float32", (t, 3))
    norms = np.linalg.norm(rotations, axis=-1)
    off = np.abs(norms - 1.0)
    if (off > UNIT_TOLERANCE).any():
        frame, joint = np.unravel_index(int(np.argmax(off)), off.shape)
        raise InputError(
            f"{what}: rotation of joint {joint} at frame {frame} is not a unit quaternion "
            f"(|q| = {norms[frame, joint]:.6f})."
        )
    name = meta.get("name")
    if not isinstance(name, str):
        raise InputError(f"{what}: meta 'name' must be a string, got {name!r}.")
    fps = meta.get("fps")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not np.isfinite(fps) or fps <= 0:
        raise InputError(f"{what}: meta 'fps' must be a positive number, got {fps!r}.")
    joints = meta.get("joints")
    if not isinstance(joints, list) or len(joints) != j or not all(isinstance(n, str) and n for n in joints):
        raise InputError(f"{what}: meta 'joints' must list {j} non-empty joint names (one per rotation column).")
    if len(set(joints)) != j:
        raise InputError(f"{what}: joint names must be unique.")
    kept = meta.get("kept")
    if not isinstance(kept, list):
        raise InputError(f"{what}: meta 'kept' must be a list of [first, last] frame ranges, got {kept!r}.")
    for r in kept:
        if (
            not isinstance(r, (list, tuple))
            or len(r) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in r)
            or not 0 <= r[0] <= r[1] < t
        ):
            raise InputError(f"{what}: kept range {r!r} must be [first, last] with 0 ≤ first ≤ last < {t}.")
    return t, j

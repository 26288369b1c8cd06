"""Rotation helpers for motion data: quaternions (w, x, y, z), 3×3 matrices, continuous 6D, Euler angles.

Conventions: unit quaternions are stored scalar first (w, x, y, z); matrices act on column vectors
(`v' = R v`); the 6D form is the first two columns of the matrix, concatenated (Zhou et al. 2019,
"On the Continuity of Rotation Representations"), so `m[..., :, 0]` is 6D[..., 0:3] and `m[..., :, 1]`
is 6D[..., 3:6].

Numpy functions work on any leading shape. The `*_torch` twins are what models and losses need: same
maths, differentiable, any leading shape. Euler angles use scipy.spatial.transform.Rotation: it handles
all twelve axis orders, intrinsic and extrinsic, vectorised, and is tested upstream against the same
edge cases (gimbal lock) we would otherwise have to re-derive; it has no torch twin because the model
never sees Euler angles.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

# ---------------------------------------------------------------------------------------------- numpy


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """(..., 4) → unit quaternions (..., 4)."""
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    """(..., 4) → conjugate, the inverse of a unit quaternion."""
    return q * np.array([1.0, -1.0, -1.0, -1.0], dtype=q.dtype)


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a·b (apply b first, then a); (..., 4) × (..., 4) → (..., 4), broadcasting."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def quat_rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors v (..., 3) by unit quaternions q (..., 4)."""
    w = q[..., :1]
    u = q[..., 1:]
    t = 2.0 * np.cross(u, v)
    return v + w * t + np.cross(u, t)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternions (..., 4) → rotation matrices (..., 3, 3)."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    m = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    )  # fmt: skip
    return m.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) → unit quaternions (..., 4) with w ≥ 0 (Shepperd's method)."""
    return _matrix_to_quat(m, np)


def matrix_to_6d(m: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) → continuous 6D (..., 6): first column, then second column."""
    return np.concatenate([m[..., :, 0], m[..., :, 1]], axis=-1)


def sixd_to_matrix(d6: np.ndarray) -> np.ndarray:
    """Continuous 6D (..., 6) → rotation matrices (..., 3, 3) by Gram-Schmidt (any non-degenerate input)."""
    a = d6[..., 0:3] / np.linalg.norm(d6[..., 0:3], axis=-1, keepdims=True)
    b = d6[..., 3:6] - np.sum(a * d6[..., 3:6], axis=-1, keepdims=True) * a
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.stack([a, b, np.cross(a, b)], axis=-1)


def quat_slerp(q0: np.ndarray, q1: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    """Spherical interpolation along the shorter arc; q0, q1 (..., 4), t broadcastable to (...)."""
    t = np.asarray(t, dtype=np.float64)[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)
    dot = np.abs(dot)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    sin = np.sin(theta)
    near = sin < 1e-6
    safe = np.where(near, 1.0, sin)
    w0 = np.where(near, 1.0 - t, np.sin((1.0 - t) * theta) / safe)
    w1 = np.where(near, t, np.sin(t * theta) / safe)
    return quat_normalize(w0 * q0 + w1 * q1).astype(np.result_type(q0.dtype, np.float32))


def euler_to_quat(angles_deg: np.ndarray, order: str) -> np.ndarray:
    """Euler angles in degrees (..., 3) → quaternions (..., 4), w ≥ 0.

    `order` is scipy's: upper case ("ZXY") is intrinsic, R = Rz·Rx·Ry — the BVH convention for
    channels listed in that order; lower case is extrinsic.
    """
    flat = np.asarray(angles_deg, dtype=np.float64).reshape(-1, 3)
    xyzw = Rotation.from_euler(order, flat, degrees=True).as_quat()
    q = np.concatenate([xyzw[:, 3:], xyzw[:, :3]], axis=-1)
    q = np.where(q[:, :1] < 0, -q, q)
    return q.reshape(np.shape(angles_deg)[:-1] + (4,))


def quat_to_euler(q: np.ndarray, order: str) -> np.ndarray:
    """Quaternions (..., 4) → Euler angles in degrees (..., 3) in scipy's canonical range for `order`."""
    flat = np.asarray(q, dtype=np.float64).reshape(-1, 4)
    angles = Rotation.from_quat(np.concatenate([flat[:, 1:], flat[:, :1]], axis=-1)).as_euler(order, degrees=True)
    return angles.reshape(np.shape(q)[:-1] + (3,))


def yaw_quat(yaw: np.ndarray) -> np.ndarray:
    """Rotations by `yaw` radians (...) about +Y → quaternions (..., 4)."""
    yaw = np.asarray(yaw, dtype=np.float64)
    zero = np.zeros_like(yaw)
    return np.stack([np.cos(yaw / 2), zero, np.sin(yaw / 2), zero], axis=-1)


def quat_yaw(q: np.ndarray) -> np.ndarray:
    """Heading angle (radians) of rotations q (..., 4): the twist of q about the world Y axis.

    Degenerate only when q turns Y upside down (a 180° swing about a horizontal axis).
    """
    return 2.0 * np.arctan2(q[..., 2], q[..., 0])


# ---------------------------------------------------------------------------------------------- torch


def quat_conjugate_torch(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) → conjugate, the inverse of a unit quaternion."""
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def quat_multiply_torch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a·b; (..., 4) × (..., 4) → (..., 4), broadcasting."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def quat_to_matrix_torch(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternions (..., 4) → rotation matrices (..., 3, 3)."""
    w, x, y, z = q.unbind(-1)
    m = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )  # fmt: skip
    return m.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat_torch(m: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) → unit quaternions (..., 4) with w ≥ 0."""
    return _matrix_to_quat(m, torch)


def matrix_to_6d_torch(m: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) → continuous 6D (..., 6)."""
    return torch.cat([m[..., :, 0], m[..., :, 1]], dim=-1)


def sixd_to_matrix_torch(d6: torch.Tensor) -> torch.Tensor:
    """Continuous 6D (..., 6) → rotation matrices (..., 3, 3), differentiable Gram-Schmidt."""
    a = torch.nn.functional.normalize(d6[..., 0:3], dim=-1)
    b = d6[..., 3:6] - (a * d6[..., 3:6]).sum(-1, keepdim=True) * a
    b = torch.nn.functional.normalize(b, dim=-1)
    return torch.stack([a, b, torch.linalg.cross(a, b)], dim=-1)


def yaw_matrix_torch(yaw: torch.Tensor) -> torch.Tensor:
    """Rotations by `yaw` radians (...) about +Y → matrices (..., 3, 3)."""
    c, s = torch.cos(yaw), torch.sin(yaw)
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)
    return torch.stack([c, zero, s, zero, one, zero, -s, zero, c], dim=-1).reshape(yaw.shape + (3, 3))


# ---------------------------------------------------------------------------------------------- shared


def _matrix_to_quat(m, xp):
    """Shepperd's method, branch-free: build the four candidates and keep the best-conditioned one."""
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    m01, m02, m10, m12, m20, m21 = m[..., 0, 1], m[..., 0, 2], m[..., 1, 0], m[..., 1, 2], m[..., 2, 0], m[..., 2, 1]
    stack = np.stack if xp is np else torch.stack
    kw = {"axis": -1} if xp is np else {"dim": -1}
    trace = stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], **kw)
    candidates = stack(
        [
            stack([trace[..., 0], m21 - m12, m02 - m20, m10 - m01], **kw),
            stack([m21 - m12, trace[..., 1], m10 + m01, m02 + m20], **kw),
            stack([m02 - m20, m10 + m01, trace[..., 2], m21 + m12], **kw),
            stack([m10 - m01, m20 + m02, m21 + m12, trace[..., 3]], **kw),
        ],
        **({"axis": -2} if xp is np else {"dim": -2}),
    )
    best = trace.argmax(-1) if xp is torch else np.argmax(trace, axis=-1)
    if xp is np:
        q = np.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
        norm = np.sqrt(np.maximum(np.take_along_axis(trace, best[..., None], axis=-1), 1e-12))
        q = q / (2.0 * norm)
        return np.where(q[..., :1] < 0, -q, q)
    index = best[..., None, None].expand(best.shape + (1, 4))
    q = torch.gather(candidates, -2, index)[..., 0, :]
    norm = torch.sqrt(torch.clamp(torch.gather(trace, -1, best[..., None]), min=1e-12))
    q = q / (2.0 * norm)
    return torch.where(q[..., :1] < 0, -q, q)

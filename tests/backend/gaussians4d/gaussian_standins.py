"""Stand-in dynamic Gaussian models with known shape and motion, for the mesh and export tests.

`RigidCloud` has the duck type of `DynamicGaussians` (`.at(t)` → dict of torch tensors, `len()`): Gaussians
at canonical points `p` move rigidly, x(t) = Rz(spin·t) (p − c) + c + velocity·t, and their orientations
turn with them, so where any point of the canonical shape goes at time t is known exactly.
"""

from __future__ import annotations

import numpy as np
import torch


def rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (...,4) w,x,y,z quaternions."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def lattice(lo, hi, spacing: float) -> np.ndarray:
    """Points of a regular lattice filling the box [lo, hi] (M,3)."""
    axes = [np.arange(a, b + 1e-9, spacing) for a, b in zip(lo, hi, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def ball_points(radius: float, spacing: float, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Lattice points inside a ball."""
    pts = lattice([-radius] * 3, [radius] * 3, spacing)
    return pts[np.linalg.norm(pts, axis=1) <= radius] + np.asarray(centre)


def box_points(half: tuple[float, float, float], spacing: float) -> np.ndarray:
    """Lattice points filling the box [−half, half] (the lattice is centred, so the cloud is symmetric)."""
    half = np.asarray(half)
    counts = np.floor(2 * half / spacing + 1e-9).astype(int)
    start = -counts * spacing / 2
    return lattice(start, -start, spacing)


def sphere_shell(count: int, radius: float, tangent_sigma: float, normal_sigma: float) -> RigidCloud:
    """Flat Gaussians on a sphere (Fibonacci points), their thin axis (local z) along the normal: the
    kind of surface sheet a fitted 3DGS has, with nothing inside."""
    i = np.arange(count) + 0.5
    polar, azimuth = np.arccos(1 - 2 * i / count), np.pi * (1 + 5**0.5) * i
    normal = np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], 1)
    axis = np.cross([0.0, 0.0, 1.0], normal)  # turns z onto the normal
    sin = np.linalg.norm(axis, axis=1, keepdims=True)
    angle = np.arctan2(sin, normal[:, 2:])
    quats = np.concatenate([np.cos(angle / 2), axis / np.maximum(sin, 1e-12) * np.sin(angle / 2)], axis=1)
    sigma = np.tile([tangent_sigma, tangent_sigma, normal_sigma], (count, 1))
    return RigidCloud(radius * normal, sigma=sigma, opacity=0.9, quats=quats)


class RigidCloud:
    """Gaussians at canonical `points` moving rigidly over t ∈ [0, 1] (see the module docstring)."""

    def __init__(
        self,
        points: np.ndarray,
        *,
        sigma: float | np.ndarray = 0.04,
        opacity: float | np.ndarray = 0.8,
        quats: np.ndarray | None = None,
        spin: float = 0.0,
        velocity=(0.0, 0.0, 0.0),
        centre=(0.0, 0.0, 0.0),
    ):
        n = len(points)
        self.points = np.asarray(points, np.float64).reshape(n, 3)
        self.scales = np.broadcast_to(np.asarray(sigma, np.float64), (n, 3)).copy()
        self.opacities = np.broadcast_to(np.asarray(opacity, np.float64), (n,)).copy()
        self.quats = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)) if quats is None else np.asarray(quats, np.float64)
        self.colors = np.clip(0.5 + 0.5 * self.points / (np.abs(self.points).max() + 1e-9), 0, 1)
        self.spin = spin
        self.velocity = np.asarray(velocity, np.float64)
        self.centre = np.asarray(centre, np.float64)

    def __len__(self) -> int:
        return len(self.points)

    def move(self, x: np.ndarray, t: float, t_from: float = 0.0) -> np.ndarray:
        """Where points x (…,3) at time `t_from` are at time `t`."""
        c_from = self.centre + self.velocity * t_from
        c_to = self.centre + self.velocity * t
        return (x - c_from) @ rot_z(self.spin * (t - t_from)).T + c_to

    def at(self, t: float) -> dict[str, torch.Tensor]:
        half = 0.5 * self.spin * t
        turn = np.array([np.cos(half), 0.0, 0.0, np.sin(half)])
        arrays = {
            "means": self.move(self.points, t),
            "quats": quat_mul(turn, self.quats),
            "scales": self.scales,
            "opacities": self.opacities,
            "colors": self.colors,
        }
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in arrays.items()}

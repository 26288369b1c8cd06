"""Built-in procedural samples for the demo (when ../shared/data is absent) and for tests.

These are synthetic, made here by formulas: no captured or third-party data. They are
deterministic (same arguments, same arrays) so tests can compare exact values.

- `twisting_bar`: a subdivided box that bends and twists over time (a mesh sequence).
- `gaussian_sample_sequence`: coloured Gaussians on a torus that spins and breathes.
"""

from __future__ import annotations

import numpy as np

from shared.results import SH_C0

from .formats.gaussian_ply import GaussianFrame
from .formats.mesh_sequence import MeshSequence
from .motion.rotations import quat_multiply as _quat_mul


def _box(extents: tuple[float, float, float], subdivisions: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed box surface, each triangle split in 4 `subdivisions` times (shared edges stay shared)."""
    import trimesh

    box = trimesh.creation.box(extents=extents)
    vertices, faces = np.asarray(box.vertices, np.float64), np.asarray(box.faces, np.int64)
    for _ in range(subdivisions):
        vertices, faces = trimesh.remesh.subdivide(vertices, faces)
    return vertices, faces


def twisting_bar(
    frames: int = 48,
    subdivisions: int = 5,
    length: float = 2.0,
    width: float = 0.4,
    twist: float = np.pi / 2,
    bend: float = np.pi / 3,
    fps: float = 24.0,
) -> MeshSequence:
    """A bar along +Z (base at z=0) that twists about Z and bends towards ±X, one cycle over `frames`.

    subdivisions=5 gives 6,146 vertices / 12,288 triangles (each level multiplies faces by 4).
    `twist` and `bend` are the peak angles in radians at the top of the bar; units are metres.
    Frame t has phase s = sin(2π t / frames): twist angle s·twist·z/length, bend angle s·bend·z/length.
    """
    vertices, faces = _box((width, width, length), subdivisions)
    rest = vertices + np.array([0.0, 0.0, length / 2])
    x, y, z = rest[:, 0], rest[:, 1], rest[:, 2]
    u = z / length  # 0 at the base, 1 at the top
    out = np.empty((frames, rest.shape[0], 3), np.float32)
    for t in range(frames):  # per frame, vectorised over vertices
        s = np.sin(2 * np.pi * t / frames)
        a = s * twist * u
        xt, yt = x * np.cos(a) - y * np.sin(a), x * np.sin(a) + y * np.cos(a)
        k = s * bend / length  # curvature of the bent centre line (1/m)
        if abs(k) < 1e-9:
            xb, zb = xt, z
        else:
            r = 1.0 / k
            theta = k * z
            xb, zb = r - (r - xt) * np.cos(theta), (r - xt) * np.sin(theta)
        out[t, :, 0], out[t, :, 1], out[t, :, 2] = xb, yt, zb
    return MeshSequence(rest.astype(np.float32), faces.astype(np.int32), out, "twisting_bar", fps)


def gaussian_sample_sequence(frames: int = 24, n: int = 2000, sh_degree: int = 0, seed: int = 0) -> list[GaussianFrame]:
    """`frames` frames of `n` Gaussians on a torus (major radius 1, minor 0.3) spinning about +Z.

    One full turn over the sequence; the minor radius breathes ±20 %. Colours follow the
    position around the torus. Scales are log-scale (≈2.5 cm), opacities logit(0.9),
    rotations w,x,y,z. sh_degree > 0 adds small view-dependent sh_rest (N, (d+1)²-1, 3).
    The Gaussian at index i is the same point on the torus in every frame.
    """
    rng = np.random.default_rng(seed)
    phi = rng.uniform(0, 2 * np.pi, n)  # around the major circle
    psi = rng.uniform(0, 2 * np.pi, n)  # around the tube
    q0 = rng.normal(size=(n, 4))
    q0 /= np.linalg.norm(q0, axis=1, keepdims=True)
    scales = np.log(rng.uniform(0.015, 0.035, (n, 3)))
    rgb = 0.5 + 0.5 * np.stack([np.cos(phi), np.cos(phi + 2.094), np.cos(phi + 4.189)], axis=1)
    sh_dc = (rgb - 0.5) / SH_C0
    opacities = np.full(n, np.log(0.9 / 0.1))
    k = (sh_degree + 1) ** 2 - 1
    sh_rest = rng.normal(scale=0.05, size=(n, k, 3)) if k > 0 else None
    out = []
    for t in range(frames):
        angle = 2 * np.pi * t / frames
        minor = 0.3 * (1 + 0.2 * np.sin(2 * angle))
        ring = 1.0 + minor * np.cos(psi)
        means = np.stack([ring * np.cos(phi + angle), ring * np.sin(phi + angle), minor * np.sin(psi)], axis=1)
        spin = np.array([np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2)])
        out.append(
            GaussianFrame(
                means=means.astype(np.float32),
                scales=scales.astype(np.float32),
                rotations=_quat_mul(spin, q0).astype(np.float32),
                opacities=opacities.astype(np.float32),
                sh_dc=sh_dc.astype(np.float32),
                sh_rest=None if sh_rest is None else sh_rest.astype(np.float32),
                name=f"torus_{t:04d}",
            )
        )
    return out

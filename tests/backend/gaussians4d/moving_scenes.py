"""Synthetic multi-view videos with known motion, rendered with the project's rasterizer, for the fit tests.

`moving_block_video`: a colourful block of Gaussians that slides and turns (x(t) = Rz(0.8 t) p + (0.3 t, 0, 0.1 t));
`fading_block_video`: the same, its colours changing over time.
`hinge_mesh` + `hinge_video`: two boxes joined at a hinge, the right one swinging about the y axis by
`HINGE_ANGLE`·t; the images show Gaussians densely sampled on the mesh surface, so the true motion of every
vertex is known. `travel_video`: the same mesh moving as a whole, far between frames (`travel_pose`).
`small_traveller_video`: a small cube crossing the whole view (a chicken crossing a wide capture).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import trimesh

from backend.gaussians4d.cameras import Cameras, ring_cameras
from backend.gaussians4d.data import MultiViewVideo
from backend.gaussians4d.mesh_bound import normal_quats
from backend.gaussians4d.rasterize import EPS2D, rasterize

HALF_SIZE = np.array([0.5, 0.3, 0.25])
HINGE_ANGLE = 0.7  # radians at t = 1


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _render(points_at, colors, cams, times, size: int, scale, normals_at=None) -> MultiViewVideo:
    """Render Gaussians at points_at(t) (N,3) with `colors` (N,3), or colors(t), from `cams` (Cameras, or
    cams(t) for cameras that move) at every time, of size `scale` (or scale(t)), over white. With
    normals_at(t) (N,3) they are discs in the surface (a tenth as thick) with a 0.03 px² low-pass filter: a
    surface with a crisp silhouette, like a rendered mesh, rather than the rasterizer's round, filtered blobs."""
    colors_at = colors if callable(colors) else (lambda t: colors)
    cams_at = cams if callable(cams) else (lambda t: cams)
    n = len(colors_at(0.0))
    images, alphas, viewmats, Ks, entry_times = [], [], [], [], []
    flat = normals_at is not None
    scale_at = scale if callable(scale) else (lambda t: scale)
    for t in times:
        cams = cams_at(t)
        scales = torch.full((n, 3), scale_at(t)) * (torch.tensor([1.0, 1.0, 0.1]) if flat else 1.0)
        quats = normal_quats(F.normalize(torch.as_tensor(normals_at(t), dtype=torch.float32), dim=1)) if flat else None
        with torch.no_grad():
            rgb, alpha, _ = rasterize(
                torch.as_tensor(points_at(t), dtype=torch.float32),
                torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1) if quats is None else quats,
                scales,
                torch.full((n,), 0.9),
                torch.as_tensor(colors_at(t), dtype=torch.float32),
                torch.as_tensor(cams.viewmats),
                torch.as_tensor(cams.Ks),
                size,
                size,
                backgrounds=torch.ones(len(cams), 3),
                eps2d=0.03 if flat else EPS2D,
            )
        images.append(rgb.clamp(0, 1).numpy())
        alphas.append(alpha[..., 0].numpy())
        viewmats.append(cams.viewmats)
        Ks.append(cams.Ks)
        entry_times += [t] * len(cams)
    return MultiViewVideo(
        images=np.concatenate(images).astype(np.float32),
        alphas=np.concatenate(alphas).astype(np.float32),
        cameras=Cameras(np.concatenate(viewmats), np.concatenate(Ks), size, size),
        times=np.asarray(entry_times, dtype=np.float32),
        names=[f"entry_{i:03d}" for i in range(len(entry_times))],
    )


def cameras(views: int, size: int, *, elevation_deg: float = 20.0, start_deg: float = 0.0) -> Cameras:
    return ring_cameras(
        views, radius=3.0, elevation_deg=elevation_deg, fov_deg=40.0, width=size, height=size, start_deg=start_deg
    )


def moving_block_video(cams: Cameras, times, size: int, count: int = 300, seed: int = 0) -> MultiViewVideo:
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1.0, 1.0, (count, 3)) * HALF_SIZE
    colors = np.clip((0.5 + 0.5 * np.tanh(2.0 * points / HALF_SIZE)) * np.array([1.0, 0.8, 0.6]), 0.0, 1.0)
    return _render(
        lambda t: points @ _rot_z(0.8 * t).T + np.array([0.3 * t, 0.0, 0.1 * t]), colors, cams, times, size, 0.06
    )


GROWTH = (0.3, 1.0)  # growing_block_video's size at t = 0 and t = 1 (its points' spread about its centre)


def growing_block_video(cams: Cameras, times, size: int, count: int = 300, seed: int = 0) -> MultiViewVideo:
    """moving_block_video's block, still, growing from 0.3 to 1 × its size (a scale animation, a pop-in)."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1.0, 1.0, (count, 3)) * HALF_SIZE
    colors = np.clip((0.5 + 0.5 * np.tanh(2.0 * points / HALF_SIZE)) * np.array([1.0, 0.8, 0.6]), 0.0, 1.0)
    grown = lambda t: GROWTH[0] + (GROWTH[1] - GROWTH[0]) * t  # noqa: E731
    return _render(lambda t: points * grown(t), colors, cams, times, size, lambda t: 0.06 * grown(t))


def fading_block_video(cams: Cameras, times, size: int, count: int = 300, seed: int = 0) -> MultiViewVideo:
    """moving_block_video's block, its colours turning to their complement over time (as shading changes when a
    part turns to or from the light)."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1.0, 1.0, (count, 3)) * HALF_SIZE
    warm = np.clip((0.5 + 0.5 * np.tanh(2.0 * points / HALF_SIZE)) * np.array([1.0, 0.8, 0.6]), 0.0, 1.0)
    cool = 1.0 - warm
    return _render(
        lambda t: points @ _rot_z(0.8 * t).T + np.array([0.3 * t, 0.0, 0.1 * t]),
        lambda t: (1 - t) * warm + t * cool,
        cams,
        times,
        size,
        0.06,
    )


def hinge_mesh() -> tuple[np.ndarray, np.ndarray]:
    """A 1.2 × 0.4 × 0.4 box split at x = 0, edges ≤ 0.13: (vertices (V,3) f32, faces (F,3) i32)."""
    box = trimesh.creation.box(extents=(1.2, 0.4, 0.4))
    vertices, faces = trimesh.remesh.subdivide_to_size(box.vertices, box.faces, max_edge=0.13)
    return vertices.astype(np.float32), faces.astype(np.int32)


def hinge_pose(points: np.ndarray, t: float) -> np.ndarray:
    """Points of the rest mesh at time t: x > 0 swings about the y axis through the origin."""
    moved = points @ _rot_y(HINGE_ANGLE * t).T
    return np.where(points[:, :1] > 0, moved, points)


def _hinge_mesh_video(pose, cams: Cameras, times, size: int, seed: int) -> MultiViewVideo:
    """Discs densely sampled on the hinge mesh's surface, coloured in stripes, moved by pose(points, t)."""
    vertices, faces = hinge_mesh()
    mesh = trimesh.Trimesh(vertices, faces)
    surface, face = trimesh.sample.sample_surface_even(mesh, 4000, seed=seed)
    normals = mesh.face_normals[face]
    colors = 0.5 + 0.4 * np.stack(
        [np.sin(9 * surface[:, 0]), np.cos(11 * surface[:, 1] + 3 * surface[:, 0]), np.sin(13 * surface[:, 2])], -1
    )

    def posed_normals(t):  # the pose moves rigid pieces, so a short step along the normal turns with them
        return pose(surface + 1e-3 * normals, t) - pose(surface, t)

    return _render(lambda t: pose(surface, t), colors, cams, times, size, 0.02, posed_normals)


def hinge_video(cams: Cameras, times, size: int, seed: int = 0) -> MultiViewVideo:
    return _hinge_mesh_video(hinge_pose, cams, times, size, seed)


TRAVEL = np.array([0.5, 0.25, 0.1])  # the travelling box's displacement at t = 1
TURN = 0.9  # its turn about z at t = 1, radians


def travel_pose(points: np.ndarray, t: float) -> np.ndarray:
    """Points of the hinge mesh at time t when the whole box travels and turns (a rigid motion, far per step)."""
    return points @ _rot_z(TURN * t).T + TRAVEL * t


def travel_video(cams: Cameras, times, size: int, seed: int = 0) -> MultiViewVideo:
    return _hinge_mesh_video(travel_pose, cams, times, size, seed)


SMALL_START, SMALL_END = np.array([-0.7, -0.7, -0.25]), np.array([0.7, 0.7, 0.25])  # its centre at t = 0 and 1
SMALL_HALF = 0.1  # its half size


def small_traveller_video(cams: Cameras, times, size: int, seed: int = 0) -> MultiViewVideo:
    """A cube 0.2 across travelling diagonally from SMALL_START to SMALL_END (about 8× its size)."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-SMALL_HALF, SMALL_HALF, (400, 3))
    colors = np.clip(0.5 + 2.0 * points, 0.0, 1.0)
    return _render(lambda t: points + SMALL_START + (SMALL_END - SMALL_START) * t, colors, cams, times, size, 0.03)


def followed_small_traveller_video(views: int, times, size: int, seed: int = 0) -> MultiViewVideo:
    """small_traveller_video seen by a ring that moves with the cube (the capture's follow): centred on it at
    every time, 1 unit away."""

    def ring_at(t: float) -> Cameras:
        centre = SMALL_START + (SMALL_END - SMALL_START) * t
        return ring_cameras(views, center=centre, radius=1.0, elevation_deg=20.0, fov_deg=40.0, width=size, height=size)

    return small_traveller_video(ring_at, times, size, seed)

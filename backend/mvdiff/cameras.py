"""Cameras of the multi-view video model, in MVDream's convention (as Animate3D's pipeline builds them).

The world is +Z up; cameras are camera→world matrices with OpenGL / Blender camera axes (x right, y up, looking
along −Z), on a sphere of radius 1 around the origin, looking at it. A camera at elevation e and azimuth a sits
at (cos e·cos a, cos e·sin a, sin e): azimuth 0 is on +X (Blender's right view), 90 on +Y, 180 on −X, 270 on −Y
(Blender's front view) — each step of the ring moves the camera to its own right. This is `get_camera` /
`generate_c2w` in Animate3D's `animatediff/pipelines/pipeline.py` and MVDream's z-up `camera_utils`, so the camera
embedding sees the matrices it was trained with. The model reads each camera as its 4×4 matrix flattened row by
row to 16 numbers (`embedding_input`).

The same matrices, scaled and moved (`to_world_cameras`), are the cameras that render the condition views of a
user's object in Blender and that the 4D fitter uses: a Blender camera's `matrix_world` and a NeRF
`transform_matrix` use exactly these axes.
"""

from __future__ import annotations

import numpy as np

from shared.errors import InputError


def _look_at_origin(position: np.ndarray) -> np.ndarray:
    """(4, 4) camera→world for a camera at `position` looking at the origin with +Z up (OpenGL camera axes)."""
    forward = -position / np.linalg.norm(position)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, up, -forward], axis=1)
    c2w[:3, 3] = position
    return c2w


def mvdream_cameras(views: int = 4, elevation_deg: float = 15.0, azimuth_start_deg: float = 0.0) -> np.ndarray:
    """(V, 4, 4) float32 camera→world matrices at unit distance, evenly spread in azimuth (MVDream's ring).

    `views` cameras at `elevation_deg` above the horizon, azimuths `azimuth_start_deg + k·360/V`.
    """
    if int(views) < 1:
        raise InputError(f"views must be at least 1, got {views}.")
    if not -89.0 <= float(elevation_deg) <= 89.0:
        raise InputError(f"elevation_deg must be within ±89° (the up vector is +Z), got {elevation_deg}.")
    elevation = np.radians(float(elevation_deg))
    cameras = []
    for k in range(int(views)):
        azimuth = np.radians(float(azimuth_start_deg) + 360.0 * k / int(views))
        position = np.array(
            [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)]
        )
        cameras.append(_look_at_origin(position))
    return np.stack(cameras).astype(np.float32)


def _check_c2w(c2w: np.ndarray, name: str) -> np.ndarray:
    c2w = np.asarray(c2w, dtype=np.float64)
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
        raise InputError(f"{name} must have shape (V, 4, 4), got {c2w.shape}.")
    if not np.isfinite(c2w).all():
        raise InputError(f"{name} contains NaN or infinite values.")
    return c2w


def normalize_cameras(c2w: np.ndarray) -> np.ndarray:
    """(V, 4, 4) float32: the cameras moved along their direction from the origin to unit distance."""
    c2w = _check_c2w(c2w, "cameras").copy()
    distance = np.linalg.norm(c2w[:, :3, 3], axis=1, keepdims=True)
    if (distance < 1e-8).any():
        raise InputError("A camera sits at the origin; the model's cameras must look at the object from outside.")
    c2w[:, :3, 3] /= distance
    return c2w.astype(np.float32)


def embedding_input(c2w: np.ndarray) -> np.ndarray:
    """(V, 16) float32: what the camera embedding reads — normalised camera→world matrices, flattened by rows."""
    return normalize_cameras(c2w).reshape(-1, 16)


def to_world_cameras(c2w_norm: np.ndarray, center, distance: float) -> np.ndarray:
    """(V, 4, 4) float32 camera→world in world units: the unit-distance cameras placed `distance` from `center`.

    The rotation is unchanged, so each camera still looks at `center` when the normalised ones looked at the
    origin. Use the result as a Blender camera's `matrix_world` or a NeRF `transform_matrix`.
    """
    c2w = normalize_cameras(c2w_norm).astype(np.float64)
    center = np.asarray(center, dtype=np.float64).reshape(-1)
    if center.shape != (3,) or not np.isfinite(center).all():
        raise InputError(f"center must be 3 finite numbers, got {center!r}.")
    if not (np.isfinite(distance) and float(distance) > 0.0):
        raise InputError(f"distance must be a positive number, got {distance!r}.")
    c2w[:, :3, 3] = center + float(distance) * c2w[:, :3, 3]
    return c2w.astype(np.float32)

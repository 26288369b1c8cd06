"""Pinhole cameras for the 4D Gaussian fitter, in gsplat's convention.

`viewmats` are world→camera matrices in the OpenCV convention (x right, y down, z forward) and `Ks` are pixel
intrinsics; pixel (row i, col j) has its centre at (x = j + 0.5, y = i + 0.5). NeRF / Blender
`transform_matrix` entries are camera→world in the OpenGL convention (x right, y up, looking along −Z), so
`viewmat = inv(c2w @ diag(1, −1, −1, 1))`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.errors import InputError

# OpenGL camera axes (y up, looking −Z) → OpenCV camera axes (y down, looking +Z), and back (its own inverse).
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Cameras:
    """C pinhole cameras sharing one image size."""

    viewmats: np.ndarray  # (C, 4, 4) float32 world→camera, OpenCV
    Ks: np.ndarray  # (C, 3, 3) float32 pixel intrinsics
    width: int
    height: int

    def __post_init__(self) -> None:
        viewmats = np.asarray(self.viewmats, dtype=np.float32)
        Ks = np.asarray(self.Ks, dtype=np.float32)
        if viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4):
            raise InputError(f"Camera viewmats must have shape (C, 4, 4), got {viewmats.shape}.")
        if Ks.shape != (len(viewmats), 3, 3):
            raise InputError(
                f"Camera Ks must have shape ({len(viewmats)}, 3, 3) to match the viewmats, got {Ks.shape}."
            )
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise InputError(f"Image size must be positive, got {self.width}×{self.height}.")
        if not (np.isfinite(viewmats).all() and np.isfinite(Ks).all()):
            raise InputError("Camera matrices contain NaN or infinite values.")
        object.__setattr__(self, "viewmats", viewmats)
        object.__setattr__(self, "Ks", Ks)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    def __len__(self) -> int:
        return len(self.viewmats)

    def subset(self, idx) -> Cameras:
        """The cameras at `idx` (an int, slice, index array or boolean mask), always as a batch."""
        if isinstance(idx, (int, np.integer)):
            idx = [int(idx)]
        return Cameras(self.viewmats[idx], self.Ks[idx], self.width, self.height)

    def centers(self) -> np.ndarray:
        """(C, 3) camera positions in world coordinates."""
        R, t = self.viewmats[:, :3, :3], self.viewmats[:, :3, 3]
        return -np.einsum("cji,cj->ci", R, t)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points (P, 3) into every camera: pixel xy (C, P, 2) and camera-space depth z (C, P).

        Points at or behind the camera plane (z ≤ 0) get NaN pixel coordinates.
        """
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        cam = np.einsum("cij,pj->cpi", self.viewmats[:, :3, :3].astype(np.float64), points)
        cam += self.viewmats[:, None, :3, 3]
        z = cam[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = cam[..., :2] / np.where(z > 0, z, np.nan)[..., None]
        K = self.Ks.astype(np.float64)
        xy = np.stack(
            [K[:, None, 0, 0] * uv[..., 0] + K[:, None, 0, 2], K[:, None, 1, 1] * uv[..., 1] + K[:, None, 1, 2]], -1
        )
        return xy.astype(np.float32), z.astype(np.float32)


def _intrinsics(count: int, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float32)
    return np.repeat(K[None], count, axis=0)


def cameras_from_nerf(
    c2w_gl: np.ndarray,
    width: int,
    height: int,
    *,
    camera_angle_x: float | None = None,
    camera_angle_y: float | None = None,
    fl_x: float | None = None,
    fl_y: float | None = None,
    cx: float | None = None,
    cy: float | None = None,
) -> Cameras:
    """Cameras from NeRF/Blender camera→world matrices (C, 4, 4) (OpenGL axes) and the transforms.json
    intrinsics: `fl_x` (pixels) or `camera_angle_x` (radians, horizontal field of view), else `camera_angle_y`
    (vertical, square pixels); `fl_y` defaults to `fl_x`, the principal point to the image centre."""
    c2w = np.asarray(c2w_gl, dtype=np.float64)
    if c2w.ndim == 2:
        c2w = c2w[None]
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
        raise InputError(f"Camera transform_matrix entries must be 4×4, got shape {c2w.shape}.")
    if fl_x is None and camera_angle_x is None and camera_angle_y is not None:
        if not 0.0 < camera_angle_y < np.pi:
            raise InputError(f"camera_angle_y must be a field of view in radians in (0, π), got {camera_angle_y}.")
        fl_x = 0.5 * height / np.tan(0.5 * camera_angle_y)
    if fl_x is None:
        if camera_angle_x is None:
            raise InputError("The cameras need an intrinsic: give camera_angle_x (radians) or fl_x (pixels).")
        if not 0.0 < camera_angle_x < np.pi:
            raise InputError(f"camera_angle_x must be a field of view in radians in (0, π), got {camera_angle_x}.")
        fl_x = 0.5 * width / np.tan(0.5 * camera_angle_x)
    fl_y = fl_x if fl_y is None else fl_y
    cx = 0.5 * width if cx is None else cx
    cy = 0.5 * height if cy is None else cy
    try:
        viewmats = np.linalg.inv(c2w @ _GL_TO_CV)
    except np.linalg.LinAlgError as exc:
        raise InputError("A camera transform_matrix is singular (not a rigid camera pose).") from exc
    return Cameras(viewmats.astype(np.float32), _intrinsics(len(c2w), fl_x, fl_y, cx, cy), width, height)


def nerf_c2w(cameras: Cameras) -> np.ndarray:
    """(C, 4, 4) float32 NeRF/OpenGL camera→world matrices of `cameras` (the inverse of cameras_from_nerf)."""
    return (np.linalg.inv(cameras.viewmats.astype(np.float64)) @ _GL_TO_CV).astype(np.float32)


def look_at_viewmat(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(4, 4) world→camera matrix (OpenCV axes) of a camera at `eye` looking at `target` with `up` upwards."""
    forward = np.asarray(target, np.float64) - np.asarray(eye, np.float64)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:
        raise InputError("A camera looks straight along the up axis; lower its elevation below 90°.")
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])  # rows: camera axes in world coordinates
    viewmat = np.eye(4)
    viewmat[:3, :3] = R
    viewmat[:3, 3] = -R @ np.asarray(eye, np.float64)
    return viewmat


def ring_cameras(
    n: int,
    *,
    center=(0.0, 0.0, 0.0),
    radius: float,
    elevation_deg: float = 15.0,
    fov_deg: float = 40.0,
    width: int,
    height: int,
    up_axis: str = "Z",
    start_deg: float = 0.0,
) -> Cameras:
    """`n` cameras evenly spaced in azimuth on a ring around `center`, all looking at it.

    `fov_deg` is the horizontal field of view; `up_axis` is "Z" (Blender) or "Y". Azimuth 0 is on +X; with Z up
    the ring turns from +X towards +Y, with Y up from +X towards −Z (the same turn seen from above).
    """
    if n < 1:
        raise InputError(f"A camera ring needs at least one camera, got {n}.")
    if radius <= 0:
        raise InputError(f"The camera ring radius must be positive, got {radius}.")
    if not 0.0 < fov_deg < 180.0:
        raise InputError(f"fov_deg must be in (0, 180), got {fov_deg}.")
    axis = up_axis.upper()
    if axis not in ("Z", "Y"):
        raise InputError(f"up_axis must be 'Z' or 'Y', got {up_axis!r}.")
    center = np.asarray(center, dtype=np.float64)
    az = np.radians(start_deg + 360.0 * np.arange(n) / n)
    el = np.radians(elevation_deg)
    a, b, h = np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.full(n, np.sin(el))
    if axis == "Z":
        offsets, up = np.stack([a, b, h], -1), np.array([0.0, 0.0, 1.0])
    else:
        offsets, up = np.stack([a, h, -b], -1), np.array([0.0, 1.0, 0.0])
    viewmats = np.stack([look_at_viewmat(center + radius * o, center, up) for o in offsets])
    fx = 0.5 * width / np.tan(0.5 * np.radians(fov_deg))
    return Cameras(viewmats.astype(np.float32), _intrinsics(n, fx, fx, 0.5 * width, 0.5 * height), width, height)

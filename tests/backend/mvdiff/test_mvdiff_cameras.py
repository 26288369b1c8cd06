"""MVDream camera convention: unit-distance ring, +Z up, OpenGL camera axes, azimuth 0 = Blender front view."""

from __future__ import annotations

import numpy as np
import pytest

from backend.mvdiff.cameras import embedding_input, mvdream_cameras, normalize_cameras, to_world_cameras
from shared.errors import InputError


def animate3d_reference(elevation: float, azimuth: float) -> np.ndarray:
    """Animate3D's `generate_c2w` (animatediff/pipelines/pipeline.py), written out independently."""
    el, az = np.radians(elevation), np.radians(azimuth)
    pos = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    lookat = -pos / np.linalg.norm(pos)
    right = np.cross(lookat, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, lookat)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, up, -lookat], axis=-1)
    c2w[:3, 3] = pos
    return c2w


def test_ring_matches_animate3ds_own_construction():
    cams = mvdream_cameras(4, elevation_deg=15.0, azimuth_start_deg=0.0)
    assert cams.shape == (4, 4, 4) and cams.dtype == np.float32
    for k, azimuth in enumerate([0.0, 90.0, 180.0, 270.0]):
        np.testing.assert_allclose(cams[k], animate3d_reference(15.0, azimuth), atol=1e-6)


def test_cameras_sit_on_the_unit_sphere_and_look_at_the_origin_with_z_up():
    cams = mvdream_cameras(6, elevation_deg=30.0, azimuth_start_deg=10.0).astype(np.float64)
    pos = cams[:, :3, 3]
    np.testing.assert_allclose(np.linalg.norm(pos, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(pos[:, 2], np.sin(np.radians(30.0)), atol=1e-6)
    rot = cams[:, :3, :3]
    np.testing.assert_allclose(rot.transpose(0, 2, 1) @ rot, np.broadcast_to(np.eye(3), rot.shape), atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-6)
    # OpenGL camera: it looks along its −Z axis, so +Z points away from the origin; its +Y leans to world +Z.
    np.testing.assert_allclose(rot[:, :, 2], pos, atol=1e-6)
    assert (rot[:, 2, 1] > 0).all()
    # camera x axis is horizontal (no roll)
    np.testing.assert_allclose(rot[:, 2, 0], 0.0, atol=1e-6)


def test_azimuth_zero_is_on_plus_x_and_the_ring_turns_to_the_cameras_right():
    cams = mvdream_cameras(4, elevation_deg=0.0)
    np.testing.assert_allclose(cams[:, :3, 3], [[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]], atol=1e-6)
    # the next camera of the ring lies on this camera's right (its +x axis)
    for k in range(4):
        step = cams[(k + 1) % 4, :3, 3] - cams[k, :3, 3]
        assert step @ cams[k, :3, 0] > 0


def test_embedding_input_is_the_normalised_matrix_flattened_by_rows():
    cams = mvdream_cameras(4)
    far = cams.copy()
    far[:, :3, 3] *= 3.5
    emb = embedding_input(far)
    assert emb.shape == (4, 16) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, cams.reshape(4, 16), atol=1e-6)
    assert emb[0, 3] == pytest.approx(cams[0, 0, 3], abs=1e-6)  # row-major: [0, 3] is the x translation


def test_world_cameras_look_at_the_center_from_the_distance():
    cams = mvdream_cameras(4, elevation_deg=15.0)
    center = np.array([1.0, -2.0, 0.5])
    world = to_world_cameras(cams, center, 3.0)
    np.testing.assert_allclose(np.linalg.norm(world[:, :3, 3] - center, axis=1), 3.0, atol=1e-5)
    np.testing.assert_allclose(world[:, :3, :3], cams[:, :3, :3], atol=1e-7)
    to_center = center - world[:, :3, 3]
    np.testing.assert_allclose(-world[:, :3, 2] * 3.0, to_center, atol=1e-5)
    np.testing.assert_allclose(normalize_cameras(to_world_cameras(cams, [0, 0, 0], 5.0)), cams, atol=1e-6)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: mvdream_cameras(0), "views"),
        (lambda: mvdream_cameras(4, elevation_deg=90.0), "elevation"),
        (lambda: embedding_input(np.zeros((4, 3, 4))), "(V, 4, 4)"),
        (lambda: embedding_input(np.tile(np.eye(4), (2, 1, 1))), "origin"),
        (lambda: to_world_cameras(mvdream_cameras(), [0, 0], 2.0), "center"),
        (lambda: to_world_cameras(mvdream_cameras(), [0, 0, 0], -1.0), "distance"),
        (lambda: to_world_cameras(np.full((4, 4, 4), np.nan), [0, 0, 0], 1.0), "NaN"),
    ],
)
def test_bad_camera_input_is_an_input_error_that_names_the_problem(call, words):
    with pytest.raises(InputError) as err:
        call()
    assert words in str(err.value)

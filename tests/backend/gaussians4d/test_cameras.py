import math

import numpy as np
import pytest

from backend.gaussians4d.cameras import Cameras, cameras_from_nerf, nerf_c2w, ring_cameras
from shared.errors import InputError


def random_c2w(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(count, 3, 3)))
    q *= np.sign(np.linalg.det(q))[:, None, None]  # proper rotations
    c2w = np.tile(np.eye(4), (count, 1, 1))
    c2w[:, :3, :3] = q
    c2w[:, :3, 3] = rng.normal(size=(count, 3)) * 3
    return c2w.astype(np.float32)


def test_nerf_c2w_round_trip():
    c2w = random_c2w(5)
    cams = cameras_from_nerf(c2w, 64, 48, camera_angle_x=0.7)
    np.testing.assert_allclose(nerf_c2w(cams), c2w, atol=1e-5)
    np.testing.assert_allclose(cams.centers(), c2w[:, :3, 3], atol=1e-5)


def test_nerf_camera_looks_down_its_minus_z_axis_with_y_up():
    # An OpenGL camera at (0, 0, 4) with identity rotation looks at the origin along −Z, y up.
    c2w = np.eye(4, dtype=np.float32)
    c2w[2, 3] = 4.0
    cams = cameras_from_nerf(c2w, 100, 80, camera_angle_x=math.radians(90))
    assert cams.Ks[0, 0, 0] == pytest.approx(50.0)  # 0.5 W / tan(45°)
    assert cams.Ks[0, 1, 1] == pytest.approx(50.0)
    xy, z = cams.project(np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    np.testing.assert_allclose(xy[0, 0], [50.0, 40.0], atol=1e-4)
    np.testing.assert_allclose(z[0], [4.0, 4.0, 4.0], atol=1e-5)
    np.testing.assert_allclose(xy[0, 1], [50.0 + 50.0 / 4.0, 40.0], atol=1e-4)  # +X is to the right
    np.testing.assert_allclose(xy[0, 2], [50.0, 40.0 - 50.0 / 4.0], atol=1e-4)  # +Y (up) is towards row 0


def test_explicit_intrinsics_override_the_field_of_view():
    cams = cameras_from_nerf(random_c2w(2), 64, 64, camera_angle_x=1.0, fl_x=70.0, fl_y=71.0, cx=30.0, cy=33.0)
    np.testing.assert_allclose(cams.Ks[1], [[70, 0, 30], [0, 71, 33], [0, 0, 1]])


def test_missing_intrinsics_are_an_input_error():
    with pytest.raises(InputError, match="camera_angle_x"):
        cameras_from_nerf(random_c2w(1), 64, 64)


@pytest.mark.parametrize("up_axis", ["Z", "Y"])
def test_ring_cameras_look_at_the_centre(up_axis):
    center = np.array([0.3, -0.2, 0.5])
    cams = ring_cameras(
        6, center=center, radius=2.5, elevation_deg=20, fov_deg=40, width=96, height=64, up_axis=up_axis
    )
    assert len(cams) == 6
    xy, z = cams.project(center[None])
    np.testing.assert_allclose(xy[:, 0], np.tile([48.0, 32.0], (6, 1)), atol=1e-3)
    np.testing.assert_allclose(z[:, 0], 2.5, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(cams.centers() - center, axis=1), 2.5, atol=1e-5)
    up = np.eye(3)[2 if up_axis == "Z" else 1]
    heights = (cams.centers() - center) @ up
    np.testing.assert_allclose(heights, 2.5 * math.sin(math.radians(20)), atol=1e-5)
    # The world's up direction points up in every image (towards row 0).
    xy_up, _ = cams.project((center + 0.1 * up)[None])
    assert (xy_up[:, 0, 1] < 32.0).all()
    np.testing.assert_allclose(cams.Ks[:, 0, 0], 48.0 / math.tan(math.radians(20)), rtol=1e-6)


def test_ring_cameras_are_evenly_spaced_and_start_on_plus_x():
    cams = ring_cameras(4, radius=1.0, elevation_deg=0.0, width=32, height=32)
    np.testing.assert_allclose(cams.centers(), [[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]], atol=1e-6)


def test_project_marks_points_behind_the_camera():
    cams = ring_cameras(1, radius=2.0, elevation_deg=0.0, width=32, height=32)
    xy, z = cams.project(np.array([[4.0, 0.0, 0.0]]))  # behind the camera at (2, 0, 0)
    assert z[0, 0] == pytest.approx(-2.0)
    assert np.isnan(xy[0, 0]).all()


def test_subset_keeps_a_batch_and_the_image_size():
    cams = ring_cameras(5, radius=2.0, width=40, height=30)
    one = cams.subset(3)
    assert len(one) == 1 and (one.width, one.height) == (40, 30)
    np.testing.assert_array_equal(one.viewmats[0], cams.viewmats[3])
    assert len(cams.subset(np.array([True, False, True, False, True]))) == 3
    assert len(cams.subset(slice(1, 3))) == 2


def test_bad_camera_shapes_are_input_errors():
    with pytest.raises(InputError, match="viewmats"):
        Cameras(np.zeros((2, 3, 4)), np.zeros((2, 3, 3)), 8, 8)
    with pytest.raises(InputError, match="Ks"):
        Cameras(np.tile(np.eye(4), (2, 1, 1)), np.zeros((3, 3, 3)), 8, 8)

"""Quaternion, matrix, 6D and Euler helpers: numpy and torch agree, conversions round-trip."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from backend.motion import rotations as R


def random_quats(n=200, seed=0):
    xyzw = Rotation.random(n, random_state=seed).as_quat()
    return np.concatenate([xyzw[:, 3:], xyzw[:, :3]], axis=1)


def same_rotation(a, b, atol=1e-9):
    return np.allclose(np.abs(np.sum(a * b, axis=-1)), 1.0, atol=atol)


def test_quat_matrix_round_trip_and_scipy_agreement():
    q = random_quats()
    m = R.quat_to_matrix(q)
    assert np.allclose(m, Rotation.from_quat(np.roll(q, -1, axis=1)).as_matrix(), atol=1e-12)
    assert same_rotation(R.matrix_to_quat(m), q)
    assert (R.matrix_to_quat(m)[:, 0] >= 0).all()


def test_quat_multiply_composes_like_matrices_and_rotates_vectors():
    a, b = random_quats(seed=1), random_quats(seed=2)
    assert np.allclose(R.quat_to_matrix(R.quat_multiply(a, b)), R.quat_to_matrix(a) @ R.quat_to_matrix(b))
    v = np.random.default_rng(0).normal(size=(200, 3))
    assert np.allclose(R.quat_rotate(a, v), (R.quat_to_matrix(a) @ v[..., None])[..., 0])


def test_6d_round_trip_and_gram_schmidt_of_noisy_input():
    m = R.quat_to_matrix(random_quats())
    assert np.allclose(R.sixd_to_matrix(R.matrix_to_6d(m)), m, atol=1e-12)
    noisy = R.sixd_to_matrix(R.matrix_to_6d(m) + 0.01)
    assert np.allclose(noisy @ np.swapaxes(noisy, -1, -2), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(noisy), 1.0)


def test_torch_twins_match_numpy():
    q = random_quats()
    m = R.quat_to_matrix(q)
    qt = torch.tensor(q)
    assert np.allclose(R.quat_to_matrix_torch(qt).numpy(), m)
    assert np.allclose(R.matrix_to_quat_torch(torch.tensor(m)).numpy(), R.matrix_to_quat(m))
    assert np.allclose(R.quat_multiply_torch(qt, qt.flip(0)).numpy(), R.quat_multiply(q, q[::-1]))
    d6 = R.matrix_to_6d(m) + 0.05
    assert np.allclose(R.sixd_to_matrix_torch(torch.tensor(d6)).numpy(), R.sixd_to_matrix(d6))
    assert np.allclose(R.matrix_to_6d_torch(torch.tensor(m)).numpy(), R.matrix_to_6d(m))
    yaw = np.linspace(-3, 3, 7)
    assert np.allclose(R.yaw_matrix_torch(torch.tensor(yaw)).numpy(), R.quat_to_matrix(R.yaw_quat(yaw)))


@pytest.mark.parametrize("order", ["ZXY", "XYZ", "YZX", "zyx", "ZYZ"])
def test_euler_round_trip(order):
    q = random_quats(seed=3)
    assert same_rotation(R.euler_to_quat(R.quat_to_euler(q, order), order), q)


def test_bvh_euler_convention_is_intrinsic_product_in_listed_order():
    z, x, y = 30.0, -20.0, 50.0
    rz = Rotation.from_euler("z", z, degrees=True).as_matrix()
    rx = Rotation.from_euler("x", x, degrees=True).as_matrix()
    ry = Rotation.from_euler("y", y, degrees=True).as_matrix()
    assert np.allclose(R.quat_to_matrix(R.euler_to_quat(np.array([z, x, y]), "ZXY")), rz @ rx @ ry)


def test_slerp_hits_endpoints_takes_short_arc_and_keeps_constant_rate():
    a, b = R.yaw_quat(0.2), R.yaw_quat(1.4)
    assert np.allclose(R.quat_slerp(a, b, 0.0), a) and np.allclose(R.quat_slerp(a, b, 1.0), b)
    mid = R.quat_slerp(a, -b, np.array([0.25, 0.5]))  # -b is the same rotation: the short arc is the same
    assert np.allclose(R.quat_yaw(mid), [0.5, 0.8])


def test_quat_yaw_is_heading_of_a_tilted_body():
    tilt = R.euler_to_quat(np.array([0.0, 0.0, 89.0]), "XYZ")  # lying along X, as Bandai-Namco's hips rest
    for yaw in (-2.5, 0.3, 1.9):
        assert np.isclose(R.quat_yaw(R.quat_multiply(R.yaw_quat(yaw), tilt)), yaw)

"""Evaluation metrics and in-betweening baselines: zeros on identical input, hand-computed values."""

import numpy as np
import pytest
from synthetic_motion import humanoid, random_motion

from backend.motion.metrics import (
    foot_skate,
    interpolation_inbetween,
    l2p,
    l2q,
    mpjpe_mm,
    npss,
    position_stats,
    zero_velocity_inbetween,
)
from backend.motion.rotations import quat_slerp
from backend.motion.skeleton import Motion, forward_kinematics
from shared.errors import InputError


def test_identical_inputs_score_zero():
    motion = random_motion(humanoid(), frames=12)
    pos, rot = forward_kinematics(motion.skeleton, motion.rotations, motion.root_positions)
    mean, std = position_stats(pos)
    assert l2p(pos, pos, mean, std) == 0.0
    assert l2q(rot, rot) == 0.0
    assert npss(rot.reshape(12, -1), rot.reshape(12, -1)) == pytest.approx(0.0, abs=1e-12)
    assert mpjpe_mm(pos, pos, 10.0) == 0.0


def test_l2p_normalises_by_std():
    true = np.zeros((2, 5, 3, 3))
    pred = true.copy()
    pred[..., 1, 0] = 1.0  # one coordinate off by one unit, std 2 there
    std = np.ones((3, 3))
    std[1, 0] = 2.0
    assert l2p(pred, true, np.zeros((3, 3)), std) == pytest.approx(0.5)


def test_l2q_ignores_quaternion_sign_and_measures_differences():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(6, 2, 4))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    flipped = q.copy()
    flipped[::2] *= -1  # same rotations, signs alternating over time
    assert l2q(flipped, q) == pytest.approx(0.0, abs=1e-12)
    true = np.tile([1.0, 0, 0, 0], (3, 1, 1))
    pred = np.tile([0.0, 1, 0, 0], (3, 1, 1))
    assert l2q(pred, true) == pytest.approx(np.sqrt(2))


def test_npss_known_values():
    true = np.array([[1.0], [1.0]])  # all power at DC
    pred = np.array([[1.0], [-1.0]])  # all power at the Nyquist frequency
    assert npss(pred, true) == pytest.approx(1.0)
    assert npss(2 * true, true) == pytest.approx(0.0)  # normalised spectra: scale does not matter


def test_mpjpe_is_root_aligned_and_in_millimetres():
    true = np.zeros((4, 2, 3))
    true[:, 1] = [0, 1, 0]
    pred = true + 5.0  # a global shift only
    assert mpjpe_mm(pred, true, 10.0) == 0.0
    pred[:, 1, 0] += 1.0
    assert mpjpe_mm(pred, true, 10.0) == pytest.approx(5.0)  # (0 + 1 unit) / 2 joints × 10 mm


def test_foot_skate_counts_sliding_on_the_ground_only():
    t = np.arange(5)
    feet = np.zeros((5, 2, 3))
    feet[:, 0, 0] = t * 0.1  # sliding on the floor at 0.1 units/frame
    feet[:, 1, 0] = t * 0.1
    feet[:, 1, 1] = 10.0  # same speed, in the air
    assert foot_skate(feet, [0, 1], fps=30, height_threshold=2.0) == pytest.approx(0.5 * 3.0)
    assert foot_skate(np.zeros((5, 1, 3)), [0], fps=30, height_threshold=2.0) == 0.0


def constant_rate_motion():
    """A clip that is itself a constant-rate SLERP / linear root move between its end poses."""
    sk = humanoid()
    a, b = random_motion(sk, frames=2, seed=4).rotations
    alpha = np.linspace(0, 1, 11)
    rot = quat_slerp(a.astype(np.float64), b.astype(np.float64), alpha[:, None])
    root = np.array([0, 90, 0]) + alpha[:, None] * np.array([50.0, 0.0, 20.0])
    return Motion(sk, rot, root, 30.0)


def test_interpolation_baseline_is_exact_on_a_constant_rate_slerp():
    motion = constant_rate_motion()
    filled = interpolation_inbetween(motion, 2, 9)  # context frame 1, target frame 9
    assert np.allclose(filled.root_positions, motion.root_positions, atol=1e-4)
    assert np.allclose(np.abs(np.sum(filled.rotations * motion.rotations, axis=-1)), 1.0, atol=1e-6)
    assert np.allclose(filled.global_positions(), motion.global_positions(), atol=1e-3)


def test_zero_velocity_baseline_holds_the_last_context_frame():
    motion = constant_rate_motion()
    filled = zero_velocity_inbetween(motion, 3, 7)
    assert np.array_equal(filled.rotations[3:7], np.repeat(motion.rotations[2:3], 4, axis=0))
    assert np.array_equal(filled.root_positions[7:], motion.root_positions[7:])
    assert np.array_equal(filled.rotations[:3], motion.rotations[:3])
    with pytest.raises(InputError, match="context frame before"):
        zero_velocity_inbetween(motion, 0, 3)
    with pytest.raises(InputError, match="target frame after"):
        interpolation_inbetween(motion, 5, 11)

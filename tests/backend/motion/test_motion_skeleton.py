"""Skeleton structure checks and forward kinematics (numpy and torch)."""

import numpy as np
import pytest
import torch
from synthetic_motion import humanoid, random_motion

from backend.motion.rotations import euler_to_quat, quat_to_matrix
from backend.motion.skeleton import Skeleton, forward_kinematics, forward_kinematics_torch, global_rotations_torch
from shared.errors import InputError


def chain3() -> Skeleton:
    return Skeleton(("a", "b", "c"), np.array([-1, 0, 1]), np.array([[0, 0, 0], [1, 0, 0], [1, 0, 0]]))


def test_fk_of_a_three_joint_chain_by_hand():
    rz90 = euler_to_quat(np.array([0.0, 0.0, 90.0]), "XYZ")
    rotations = np.stack([rz90, rz90, np.array([1.0, 0, 0, 0])])[None]
    positions, global_rot = forward_kinematics(chain3(), rotations, np.array([[0.0, 0.0, 5.0]]))
    # a at the root; b one unit along the root's rotated X (now +Y); c one more along X turned 180° (now -X)
    assert np.allclose(positions[0], [[0, 0, 5], [0, 1, 5], [-1, 1, 5]], atol=1e-6)
    assert np.allclose(quat_to_matrix(global_rot[0, 2].astype(np.float64)), np.diag([-1, -1, 1]), atol=1e-6)


def test_fk_torch_matches_numpy_on_batches_and_is_differentiable():
    motion = random_motion(humanoid(static_top=True), frames=12)
    expected_pos, expected_rot = forward_kinematics(
        motion.skeleton, motion.rotations, motion.root_positions, motion.local_translations()
    )
    rot = torch.tensor(np.stack([motion.rotations] * 2), dtype=torch.float64, requires_grad=True)
    trans = torch.tensor(np.stack([motion.local_translations()] * 2), dtype=torch.float64)
    pos, rot_m = forward_kinematics_torch(motion.skeleton, rot, trans[..., 0, :], trans)
    assert pos.shape == (2, 12, motion.skeleton.n_joints, 3)
    assert np.allclose(pos[1].detach().numpy(), expected_pos, atol=1e-4)
    assert np.allclose(rot_m[0].detach().numpy(), quat_to_matrix(expected_rot.astype(np.float64)), atol=1e-5)
    pos.sum().backward()
    assert rot.grad is not None and torch.isfinite(rot.grad).all()
    quats = global_rotations_torch(motion.skeleton, rot.detach())[0].numpy()
    assert np.allclose(np.abs(np.sum(quats * expected_rot, axis=-1)), 1.0, atol=1e-5)


def test_motion_global_positions_use_animated_translations():
    motion = random_motion(humanoid(static_top=True), frames=5)
    pelvis = motion.global_positions()[:, 1]
    assert np.allclose(pelvis, motion.translations[:, 1], atol=1e-4)  # the top joint is still at the origin


def test_a_frame_range_is_a_clip_of_its_own():
    motion = random_motion(humanoid(static_top=True), frames=10)
    part = motion.frames(3, 7)
    assert part.n_frames == 4 and part.skeleton is motion.skeleton and part.fps == motion.fps
    assert np.array_equal(part.global_positions(), motion.global_positions()[3:7])
    part.rotations[:] = 0.5
    part.translations[:] = 1.0
    assert not np.allclose(motion.rotations[3:7], 0.5) and not np.allclose(motion.translations[3:7], 1.0)


def test_check_same_names_the_first_difference():
    sk = humanoid()
    renamed = Skeleton(("Pelvis", *sk.names[1:]), sk.parents, sk.offsets)
    reparented = Skeleton(sk.names, np.where(np.arange(sk.n_joints) == 4, 2, sk.parents), sk.offsets)
    assert sk.matches(Skeleton(sk.names, sk.parents, sk.offsets + 1))
    with pytest.raises(InputError, match="joint 0 is 'Hips' vs 'Pelvis'"):
        sk.check_same(renamed)
    with pytest.raises(InputError, match="'Head' has parent 'Neck' vs 'Chest'"):
        sk.check_same(reparented)
    with pytest.raises(InputError, match="17 joints vs 18"):
        sk.check_same(humanoid(static_top=True))


def test_skeleton_rejects_children_before_parents():
    with pytest.raises(InputError, match="before its parent"):
        Skeleton(("a", "b", "c"), np.array([-1, 2, 0]), np.zeros((3, 3)))

"""Model features: layout, round trip motion → features → motion, differentiable positions, contacts."""

import numpy as np
import pytest
import torch
from synthetic_motion import REAL_CLIPS, humanoid, random_motion, tree

from backend.motion.bvh import read_bvh
from backend.motion.features import (
    body_size,
    feature_layout,
    features_to_motion,
    features_to_positions,
    foot_joints,
    motion_root,
    motion_to_features,
)
from backend.motion.rotations import quat_yaw
from backend.motion.skeleton import Motion, forward_kinematics


def start_of(motion: Motion):
    """The motion root's position and heading at frame 0: what features_to_motion needs to land in place."""
    r = motion_root(motion.skeleton)
    pos, rot = forward_kinematics(motion.skeleton, motion.rotations, motion.root_positions, motion.local_translations())
    return pos[0, r], float(quat_yaw(rot[0, r].astype(np.float64)))


def round_trip_error(motion: Motion) -> float:
    features, layout = motion_to_features(motion)
    assert features.shape == (motion.n_frames, layout.dim) and features.dtype == np.float32
    start, yaw = start_of(motion)
    back = features_to_motion(features, motion.skeleton, motion.fps, start, yaw)
    return float(np.abs(back.global_positions() - motion.global_positions()).max() / body_size(motion.skeleton))


def test_layout_of_the_synthetic_humanoid():
    layout = feature_layout(humanoid())
    j, c = 17, 2
    assert (layout.n_joints, layout.n_contacts, layout.dim) == (j, c, 4 + 9 * j + c)
    assert layout.rotations == slice(4, 4 + 6 * j) and layout.positions == slice(4 + 6 * j, 4 + 9 * j)
    assert list(layout.root_columns) == [0, 1, 2, 3]
    cols = layout.columns_for_joints([2])
    assert list(cols) == [*range(4 + 12, 4 + 18), *range(4 + 6 * j + 6, 4 + 6 * j + 9)]
    assert layout.dim - 1 in layout.columns_for_joints([16], include_contacts=True)


@pytest.mark.parametrize("static_top", [False, True], ids=["pelvis-root", "static-top-joint"])
def test_synthetic_round_trip_reproduces_global_positions(static_top):
    motion = random_motion(humanoid(static_top), frames=30)
    assert motion_root(motion.skeleton) == int(static_top)
    assert round_trip_error(motion) < 1e-4


def test_non_humanoid_round_trip():
    assert round_trip_error(random_motion(tree(), frames=20, seed=3)) < 1e-4


@pytest.mark.parametrize("clip", REAL_CLIPS[:2], ids=lambda p: p.stem)
def test_real_clip_round_trip_below_a_thousandth_of_body_size(clip):
    motion = read_bvh(clip)
    assert motion.skeleton.names[motion_root(motion.skeleton)] == "Hips"
    assert round_trip_error(motion) < 1e-3


def test_features_are_invariant_to_where_the_clip_starts_and_faces():
    motion = random_motion(humanoid(), frames=20)
    moved = Motion(
        motion.skeleton,
        motion.rotations,
        motion.root_positions + np.array([100.0, 0.0, -50.0], dtype=np.float32),
        motion.fps,
    )
    a, _ = motion_to_features(motion)
    b, _ = motion_to_features(moved)
    assert np.allclose(a, b, atol=1e-3)


def test_torch_positions_match_numpy_and_carry_gradients():
    motion = random_motion(humanoid(static_top=True), frames=16, seed=2)
    features, layout = motion_to_features(motion)
    start, yaw = start_of(motion)
    x = torch.tensor(np.stack([features, features]), requires_grad=True)
    pos = features_to_positions(x, layout, motion.skeleton, torch.tensor(start), yaw)
    assert pos.shape == (2, 16, motion.skeleton.n_joints, 3)
    assert np.allclose(pos[1].detach().numpy(), motion.global_positions(), atol=1e-2)
    pos.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad[..., layout.rotations].abs().sum() > 0


def test_foot_contacts_follow_foot_speed():
    sk = humanoid()
    motion = random_motion(sk, frames=20)
    motion.rotations[:] = (1, 0, 0, 0)
    motion.root_positions[:10] = motion.root_positions[0]  # standing still, then gliding fast
    motion.root_positions[10:] = motion.root_positions[0] + np.arange(1, 11)[:, None] * [20.0, 0.0, 0.0]
    features, layout = motion_to_features(motion)
    assert [sk.names[j] for j in layout.contact_joints] == ["LeftFoot", "RightFoot"]
    contacts = features[:, layout.contacts]
    assert (contacts[:10] == 1).all() and (contacts[10:] == 0).all()


def test_feet_without_names_are_the_lowest_leaf_per_side():
    sk = tree()
    assert [sk.names[j] for j in foot_joints(sk)] == ["a2", "b3"]

"""Body parts: humanoid parts from the real and synthetic skeletons, full coverage on other trees."""

import numpy as np
import pytest
from synthetic_motion import REAL_CLIPS, humanoid, tree

from backend.motion.bvh import read_bvh
from backend.motion.parts import body_parts, resolve_parts
from backend.motion.skeleton import Skeleton
from shared.errors import InputError


def named(skeleton, parts):
    return {k: sorted(skeleton.names[j] for j in v) for k, v in parts.items()}


def assert_partition(skeleton, parts):
    joints = sorted(j for v in parts.values() for j in v)
    assert joints == list(range(skeleton.n_joints))


def test_real_skeleton_has_the_five_humanoid_parts():
    sk = read_bvh(REAL_CLIPS[0]).skeleton
    parts = body_parts(sk)
    assert_partition(sk, parts)
    names = named(sk, parts)
    assert set(names) == {"torso", "left_arm", "right_arm", "left_leg", "right_leg"}
    assert names["torso"] == sorted(["joint_Root", "Hips", "Spine", "Chest", "Neck", "Head"])
    assert names["left_arm"] == sorted(["Shoulder_L", "UpperArm_L", "LowerArm_L", "Hand_L"])
    assert names["right_leg"] == sorted(["UpperLeg_R", "LowerLeg_R", "Foot_R", "Toes_R"])


@pytest.mark.parametrize("static_top", [False, True])
def test_synthetic_humanoid_with_left_right_words(static_top):
    sk = humanoid(static_top)
    names = named(sk, body_parts(sk))
    assert names["left_arm"] == ["LeftArm", "LeftHand", "LeftShoulder"]
    assert names["right_leg"] == ["RightFoot", "RightLeg", "RightUpLeg"]
    assert "Head" in names["torso"]


def test_side_and_kind_from_suffixes_and_geometry():
    # no arm/leg words: legs are the branches leaving the pelvis, arms those leaving higher up
    table = [("pelvis", -1), ("spine", 0), ("neck", 1), ("a.L", 1), ("a.R", 1), ("b.L", 0), ("b.R", 0)]
    sk = Skeleton(tuple(n for n, _ in table), np.array([p for _, p in table]), np.ones((7, 3)))
    names = named(sk, body_parts(sk))
    assert names == {
        "torso": ["neck", "pelvis", "spine"],
        "left_arm": ["a.L"],
        "right_arm": ["a.R"],
        "left_leg": ["b.L"],
        "right_leg": ["b.R"],
    }


def test_non_humanoid_branches_are_named_after_their_first_joint():
    sk = tree()
    parts = body_parts(sk)
    assert_partition(sk, parts)
    assert named(sk, parts) == {
        "part_body": ["body"],
        "part_a1": ["a1", "a2"],
        "part_b1": ["b1", "b2", "b3", "b4"],
        "part_c1": ["c1"],
    }


def test_resolve_parts_unions_and_names_valid_parts_on_error():
    sk = humanoid()
    joints = resolve_parts(sk, ["left_arm", "right_leg"])
    assert [sk.names[j] for j in joints] == [
        "LeftShoulder",
        "LeftArm",
        "LeftHand",
        "RightUpLeg",
        "RightLeg",
        "RightFoot",
    ]
    with pytest.raises(InputError, match="'tail'.*torso, .*left_arm"):
        resolve_parts(sk, ["tail"])

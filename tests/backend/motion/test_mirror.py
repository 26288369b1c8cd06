"""Left ↔ right mirroring (backend/motion/mirror.py): partners from joint names, per-joint reflections from
real clips, and mirror images that are exact reflections of the partner joints' positions."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_motion import BANDAI, humanoid, skeleton_from, tree

from backend.motion.bvh import read_bvh
from backend.motion.matching import _travel, root_path
from backend.motion.mirror import (
    AXIS_REFLECTIONS,
    MIRROR,
    joint_reflections,
    mirror_motion,
    mirror_partners,
    mirrored_clips,
)
from backend.motion.skeleton import Motion

CLIPS = [BANDAI / f"dataset-1_{name}_001.bvh" for name in ("walk_normal", "byebye_happy", "kick_normal")]


@pytest.fixture(scope="module")
def clips():
    return [read_bvh(p) for p in CLIPS]


def _names(partners, skeleton):
    return {skeleton.names[j]: skeleton.names[k] for j, k in enumerate(partners) if j != k}


def test_partners_come_from_the_joint_names_in_the_common_conventions():
    sk = humanoid()  # LeftArm / RightArm
    pairs = _names(mirror_partners(sk), sk)
    assert pairs["LeftArm"] == "RightArm" and pairs["RightFoot"] == "LeftFoot"
    assert "Spine" not in pairs and len(pairs) == 12
    for left, right in (("arm_L", "arm_R"), ("arm.l", "arm.r"), ("L_arm", "R_arm"), ("left_arm", "right_arm")):
        sk = skeleton_from([("hips", -1, (0, 90, 0)), (left, 0, (10, 0, 0)), (right, 0, (-10, 0, 0))])
        assert _names(mirror_partners(sk), sk) == {left: right, right: left}


def test_skeletons_without_sides_or_with_lopsided_sides_are_not_mirrored():
    assert mirror_partners(tree()) is None
    lopsided = skeleton_from(
        [("hips", -1, (0, 90, 0)), ("arm_L", 0, (10, 0, 0)), ("hand_L", 1, (10, 0, 0)), ("arm_R", 0, (-10, 0, 0))]
        + [("hand_R", 0, (-20, 0, 0))]
    )
    assert mirror_partners(lopsided) is None  # hand_R hangs from the hips, hand_L from its arm
    assert (
        mirrored_clips([Motion(tree(), np.tile([1.0, 0, 0, 0], (3, tree().n_joints, 1)), np.zeros((3, 3)), 30.0)]) == []
    )


def test_reflections_follow_the_offsets_and_the_chain(clips):
    sk = clips[0].skeleton
    q = joint_reflections(clips, mirror_partners(sk))
    assert len(AXIS_REFLECTIONS) == 24 and all(np.isclose(np.linalg.det(r), -1) for r in AXIS_REFLECTIONS)
    # Bandai-Namco: legs hang at ±Y of the hips, the shoulders at ±Z of the chest, each limb runs along ±X
    assert np.array_equal(q[sk.index("joint_Root")], MIRROR)
    assert np.array_equal(q[sk.index("Hips")], np.diag([1.0, -1.0, 1.0]))
    assert np.array_equal(q[sk.index("Chest")], np.diag([1.0, 1.0, -1.0]))
    for name in ("Hand_L", "Toes_R", "UpperArm_R"):
        assert np.array_equal(q[sk.index(name)], -np.eye(3))
    # one clip settles the same reflections as three (the chain rule keeps a lopsided clip from twisting a limb)
    for clip in clips:
        assert np.array_equal(joint_reflections([clip], mirror_partners(sk)), q)


def test_mirror_images_of_real_clips_are_exact_reflections_of_the_partner_joints(clips):
    sk = clips[0].skeleton
    partners = mirror_partners(sk)
    assert _names(partners, sk)["Hand_L"] == "Hand_R"
    q = joint_reflections(clips, partners)
    assert np.allclose(np.linalg.det(q), -1) and np.allclose(np.einsum("jab,jac->jbc", q, q), np.eye(3), atol=1e-9)
    for motion in clips:
        mirrored = mirror_motion(motion, partners, q)
        pos = motion.global_positions().astype(np.float64)
        expected = (pos @ MIRROR)[:, partners]
        assert np.abs(mirrored.global_positions() - expected).max() < 1e-3  # centimetres, float32 FK
        back = mirror_motion(mirrored, partners, q)
        assert np.allclose(np.abs(np.sum(back.rotations * motion.rotations, -1)), 1, atol=1e-5)
        assert mirrored.name.endswith("(mirrored)")
    assert len(mirrored_clips(clips)) == len(clips)


def test_a_mirrored_clip_turns_and_steps_the_other_way():
    walk = read_bvh(BANDAI / "dataset-1_walk-left_happy_001.bvh")
    mirrored = mirrored_clips([walk])[0]
    first, last = np.array(0), np.array(walk.n_frames - 1)
    side, forward, _ = _travel(*root_path(walk), first, last)
    m_side, m_forward, _ = _travel(*root_path(mirrored), first, last)
    assert abs(side) > 50 and abs(forward) > 200  # centimetres in the clip's first heading
    # headings are the twist of the tilted pelvis frame, mirror images only to within a few degrees
    assert np.sign(m_side) == -np.sign(side) and np.isclose(m_side, -side, rtol=0.25)
    assert np.isclose(m_forward, forward, rtol=0.05)

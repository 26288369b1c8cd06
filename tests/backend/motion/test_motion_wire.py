"""Wire clips ↔ Motion on a model's skeleton: the exact match, the dropped static top joint (Blender's BVH
import of Bandai-Namco files), exact round trips on a real clip, and errors naming the difference."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_motion import motion_fixtures

from backend.motion.bvh import read_bvh
from backend.motion.rotations import quat_multiply
from backend.motion.skeleton import Motion, Skeleton
from backend.motion.wire import motion_from_wire, motion_to_wire
from shared.errors import InputError

TINY_CLIPS = motion_fixtures().TINY_CLIPS


@pytest.fixture(scope="module")
def clip() -> Motion:
    return read_bvh(TINY_CLIPS[0])  # 22 joints: joint_Root (static) → Hips → ...


def blender_wire(clip: Motion):
    """What the add-on's collector sends for this clip: no joint_Root, Hips the root at its global head."""
    sk = clip.skeleton
    names = list(sk.names[1:])
    parents = np.r_[-1, sk.parents[2:] - 1].astype(np.int32)
    offsets = sk.offsets[1:].copy()
    offsets[0] = sk.offsets[0] + sk.offsets[1]
    return names, parents, offsets, clip.rotations[:, 1:].copy(), clip.global_positions()[:, 1].copy()


def test_exact_skeleton_round_trips_bit_for_bit(clip):
    sk = clip.skeleton
    m = motion_from_wire(sk, sk.names, sk.parents, sk.offsets, clip.rotations, clip.root_positions, clip.fps)
    assert m.skeleton is sk and m.translations is None  # the model's own bone lengths: nothing to carry
    rot, root = motion_to_wire(m, sk.names)
    assert np.array_equal(rot, clip.rotations) and np.array_equal(root, clip.root_positions)


def test_the_dropped_top_joint_is_put_back_and_taken_out_exactly(clip):
    sk = clip.skeleton
    names, parents, offsets, rotations, root = blender_wire(clip)
    m = motion_from_wire(sk, names, parents, offsets, rotations, root, clip.fps, "walk")
    assert m.skeleton is sk and m.n_frames == clip.n_frames
    assert np.array_equal(m.rotations[:, 0], np.tile([1, 0, 0, 0], (clip.n_frames, 1)))
    # the same motion in the world, joint for joint
    np.testing.assert_allclose(m.global_positions(), clip.global_positions(), atol=1e-3)
    back_rot, back_root = motion_to_wire(m, names)
    assert np.array_equal(back_rot, rotations) and np.array_equal(back_root, root)


def test_a_moving_top_joint_is_composed_into_the_wire_root(clip):
    sk = clip.skeleton
    turned = Motion(sk, clip.rotations.copy(), clip.root_positions + [5.0, 0.0, -3.0], clip.fps, "", clip.translations)
    turned.rotations[:, 0] = [np.cos(0.2), 0.0, np.sin(0.2), 0.0]
    rot, root = motion_to_wire(turned, sk.names[1:])
    np.testing.assert_allclose(rot[:, 0], quat_multiply(turned.rotations[:, 0], clip.rotations[:, 1]), atol=1e-6)
    np.testing.assert_allclose(root, turned.global_positions()[:, 1], atol=1e-3)


def test_other_skeletons_are_refused_naming_the_difference(clip):
    sk = clip.skeleton
    names, parents, offsets, rotations, root = blender_wire(clip)
    keep = [j for j, n in enumerate(names) if n not in ("Toes_L", "Toes_R")]
    with pytest.raises(InputError, match="19 bones, the model's skeleton 22 joints: missing Toes_L, Toes_R"):
        motion_from_wire(sk, [names[j] for j in keep], parents[keep], offsets[keep], rotations[:, keep], root, 30)
    renamed = ["Pelvis"] + names[1:]
    with pytest.raises(InputError, match="missing Hips; not in the model Pelvis"):
        motion_from_wire(sk, renamed, parents, offsets, rotations, root, 30)
    moved = parents.copy()
    moved[names.index("Hand_L")] = names.index("Chest")
    with pytest.raises(InputError, match="'Hand_L' has parent 'Chest'; in the model's skeleton its parent is"):
        motion_from_wire(sk, names, moved, offsets, rotations, root, 30)
    with pytest.raises(InputError, match="rotations"):
        motion_from_wire(sk, names, parents, offsets, rotations[:, :5], root, 30)
    other = Skeleton(("A", "B"), [-1, 0], [[0, 0, 0], [0, 1, 0]])
    with pytest.raises(InputError, match="2 joints"):
        motion_to_wire(Motion(other, np.tile([1.0, 0, 0, 0], (3, 2, 1)), np.zeros((3, 3)), 30), ["B"] * 3)


def test_an_armature_in_other_units_is_refused_with_the_factor(clip):
    """Bone lengths travel in the wire's offsets (the model's skeleton object is reused), so the units are checked
    there: the Bandai walk imported into Blender at Scale 0.01 (metres) against a model trained in centimetres."""
    sk = clip.skeleton
    names, parents, offsets, rotations, root = blender_wire(clip)
    with pytest.raises(InputError, match=r"armature's skeleton is 0.01× the size.*Scale it by 100 \(in Blender"):
        motion_from_wire(sk, names, parents, offsets / 100, rotations, root / 100, clip.fps)
    with pytest.raises(InputError, match=r"0.01× the size"):
        motion_from_wire(sk, sk.names, sk.parents, sk.offsets / 100, clip.rotations, clip.root_positions / 100, 30)
    taller = motion_from_wire(sk, names, parents, offsets * 1.15, rotations, root * 1.15, clip.fps)  # another actor
    assert taller.n_frames == clip.n_frames

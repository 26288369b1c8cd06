"""Mirror motions left ↔ right, on any armature whose joint names say their side.

A mirrored clip is what the same performer would have done with the other hand and foot: every joint takes
the pose of its partner on the other side (`Hand_L` ↔ `Hand_R`; middle joints are their own partner),
reflected through the character's vertical plane (world X → −X, Y up). The motion-matching library keeps
each training clip and its mirror image, which doubles the poses and transitions it can draw from.

Joint frames are not mirror images of each other on most skeletons (a BVH's zero pose need not be
symmetric: on Bandai-Namco's skeleton the left arm's bones run along +X of their frames and the right arm's
along −X), so each joint j gets a reflection Q_j (an orthogonal 3×3 matrix with determinant −1) such that
the mirrored global frame is G'_j = M · G_partner(j) · Q_j, with M the world reflection. Then

    local rotation   L'_j = Q_parent(j)ᵀ · L_partner(j) · Q_j
    translation      t'_j = Q_parent(j)ᵀ · t_partner(j)
    root position    p'   = M · p

`joint_reflections` chooses Q_j among the 24 axis reflections (signed axis permutations with determinant
−1; BVH-style frames differ by axis flips) that carry the joint's child offsets onto its partner's
(Q_j · offset_c = offset_partner(c), within 2 % of its length):

- a joint whose parent's reflection does so keeps it (frames along a chain follow one convention; the root
  starts from M, its children's offsets being the character's placement in the world);
- elsewhere, where the offsets say the convention changes (on Bandai-Namco's skeleton, at the shoulders and
  the hips, among four reflections each), the one under which the mirrored joint moves most like the real
  one: the largest <mean L_j, Q_parent(j)ᵀ · mean L_partner(j) · Q_j> over the motions' frames (a left
  elbow bends the way a right one does, on average);
- a joint whose offsets fit no axis reflection (frames not aligned to each other) gets the reflection with
  the largest such score.

Joint positions are exact mirror images whichever Q_j are chosen (the translations follow them); Q_j decides
how the mirrored rotations are expressed in each joint's frame, which is what the library's features compare.
"""

from __future__ import annotations

import itertools
import re

import numpy as np

from .rotations import matrix_to_quat, quat_to_matrix
from .skeleton import Motion, Skeleton

MIRROR = np.diag([-1.0, 1.0, 1.0])  # the world reflection: X → −X (Y is up)
OFFSET_TOLERANCE = 0.02  # a child offset maps onto its partner's within this fraction of its length

# (pattern, left, right): a joint name with the left marker has its partner with the right one, and back
_SIDES = [
    (r"(?<=[_.\-: ])({})$", "L", "R"),  # Hand_L, hand.L, Hand-L
    (r"(?<=[_.\-: ])({})$", "l", "r"),  # hand_l
    (r"^({})(?=[_.\-: ])", "L", "R"),  # L_Hand
    (r"^({})(?=[_.\-: ])", "l", "r"),  # l_hand
    (r"({})", "Left", "Right"),  # LeftHand, mixamorig:LeftHand
    (r"({})", "left", "right"),  # left_hand
    (r"({})", "LEFT", "RIGHT"),
]


def mirror_partners(skeleton: Skeleton) -> np.ndarray | None:
    """Index of every joint's partner on the other side (itself for middle joints), from the joint names.

    None when no left/right pair is found, or when the pairs do not respect the hierarchy (the partner of a
    joint's parent must be its partner's parent): such a skeleton cannot be mirrored."""
    names = list(skeleton.names)
    index = {name: j for j, name in enumerate(names)}
    partners = np.arange(len(names))
    paired = False
    for j, name in enumerate(names):
        other = _other_side(name, index)
        if other is not None:
            partners[j] = other
            paired = True
    if not paired or np.any(partners[partners] != np.arange(len(names))):
        return None
    parents = np.asarray(skeleton.parents)
    for j in range(1, len(names)):
        if parents[partners[j]] != partners[parents[j]]:
            return None
    return partners


def _other_side(name: str, index: dict[str, int]) -> int | None:
    for pattern, left, right in _SIDES:
        for this, that in ((left, right), (right, left)):
            match = re.search(pattern.format(re.escape(this)), name)
            if match:
                other = name[: match.start(1)] + that + name[match.end(1) :]
                if other in index and other != name:
                    return index[other]
    return None


def joint_reflections(motions: list[Motion], partners: np.ndarray) -> np.ndarray:
    """(J, 3, 3) per-joint reflections Q_j for this skeleton, from its offsets and `motions` (module docstring)."""
    if not motions:
        raise ValueError("estimating the mirror reflections needs at least one motion")
    skeleton = motions[0].skeleton
    mean_local = sum(quat_to_matrix(m.rotations.astype(np.float64)).sum(0) for m in motions)  # (J, 3, 3)
    offsets = skeleton.offsets.astype(np.float64)
    out = np.zeros((skeleton.n_joints, 3, 3))
    for j in range(skeleton.n_joints):  # parents first
        q_parent = MIRROR if j == 0 else out[skeleton.parents[j]]
        # score(Q) = <mean L_j, Q_parentᵀ · mean L_partner(j) · Q>: how alike the mirrored and the real joint move
        evidence = (q_parent.T @ mean_local[partners[j]]).T @ mean_local[j]
        # the root's children sit wherever the character was placed in the world: their offsets say nothing
        kids = [c for c in skeleton.children(j) if j > 0 and np.linalg.norm(offsets[c]) > 1e-6]
        fits = [
            q
            for q in AXIS_REFLECTIONS
            if all(
                np.linalg.norm(q @ offsets[c] - offsets[partners[c]]) <= OFFSET_TOLERANCE * np.linalg.norm(offsets[c])
                for c in kids
            )
        ]
        if not fits:
            out[j] = nearest_reflection(evidence)
            continue
        inherit = any(np.array_equal(q, q_parent) for q in fits)
        out[j] = q_parent if inherit else max(fits, key=lambda q: np.sum(q * evidence))
    return out


def nearest_reflection(m: np.ndarray) -> np.ndarray:
    """The orthogonal matrix with determinant −1 closest to m (Frobenius)."""
    u, _, vt = np.linalg.svd(m)
    if np.linalg.det(u @ vt) > 0:
        u[:, -1] = -u[:, -1]
    return u @ vt


def _axis_reflections() -> list[np.ndarray]:
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            q = np.zeros((3, 3))
            q[list(perm), range(3)] = signs
            if np.linalg.det(q) < 0:
                out.append(q)
    return out


AXIS_REFLECTIONS = _axis_reflections()


def mirror_motion(motion: Motion, partners: np.ndarray, reflections: np.ndarray) -> Motion:
    """The left ↔ right mirror image of `motion` on the same skeleton (module docstring)."""
    skeleton = motion.skeleton
    parents = np.asarray(skeleton.parents)
    q = reflections
    q_parent = np.concatenate([MIRROR[None], q[parents[1:]]])  # the root's "parent" frame is the world's
    local = quat_to_matrix(motion.rotations.astype(np.float64))[:, partners]  # (T, J, 3, 3)
    rotations = np.einsum("jba,tjbc,jcd->tjad", q_parent, local, q)
    out = motion.copy()
    out.rotations = matrix_to_quat(rotations).astype(motion.rotations.dtype)
    out.root_positions = (motion.root_positions.astype(np.float64) @ MIRROR).astype(motion.root_positions.dtype)
    if motion.translations is not None:
        moved = np.einsum("jba,tjb->tja", q_parent, motion.translations.astype(np.float64)[:, partners])
        out.translations = moved.astype(motion.translations.dtype)
        out.translations[:, 0] = out.root_positions
    out.name = f"{motion.name} (mirrored)" if motion.name else "mirrored"
    return out


def mirrored_clips(motions: list[Motion]) -> list[Motion]:
    """The mirror image of every clip (all on one skeleton), or [] when the skeleton's joint names pair no
    left and right joints."""
    if not motions:
        return []
    partners = mirror_partners(motions[0].skeleton)
    if partners is None:
        return []
    reflections = joint_reflections(motions, partners)
    return [mirror_motion(motion, partners, reflections) for motion in motions]

"""The motion model's per-frame features (recipe 7.4 of reference/anchors-motion-rig.md), and back.

Y is up. Per frame, for a skeleton of J joints and C foot-contact joints (layout in `FeatureLayout`):

    root_yaw       1   change of the root's heading about +Y since the previous frame, radians (0 at frame 0)
    root_velocity  2   root displacement in the XZ plane since the previous frame, in the current heading
                       frame (x, z), skeleton units per frame (0 at frame 0)
    root_height    1   root Y
    rotations      6J  each joint's local rotation, continuous 6D; the root's is its global rotation with
                       the heading removed
    positions      3J  global joint positions relative to the root, in the heading frame
    contacts       C   1 where the foot joint moves slower than `contact_speed` body sizes per second

"Root" here is the motion root: the first joint, from the hierarchy's top, with more than one child (the
pelvis). Files often put a static joint above it (Bandai-Namco's `joint_Root` sits at the origin while
`Hips`, its only child, carries the motion); taking the planar motion and heading from the pelvis makes
the features the same whether or not such a joint exists. Joints above the motion root keep their local
rotations in the 6D block; their position columns are zero (relative to the pelvis, a still joint's position
is the whole trajectory turned around: unbounded, and nothing a pose model should learn). On the way back
joint 0 stays where the caller puts it (`start_top_position`, e.g. where the source clip had it) and the
motion root gets the animated translation that lands it on the integrated path (as in the Bandai-Namco
files).
The heading is the twist of the motion root's global rotation about +Y (see `rotations.quat_yaw`).

Decoding ignores the position and contact columns: positions come from forward kinematics of the decoded
rotations, so a model's output is always a valid skeleton pose. `features_to_motion` (numpy) and
`features_to_positions` (torch, differentiable, root integrated by cumulative sums) share one decoder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from .rotations import (
    matrix_to_6d,
    matrix_to_quat_torch,
    quat_conjugate,
    quat_multiply,
    quat_rotate,
    quat_to_matrix,
    quat_yaw,
    sixd_to_matrix_torch,
    yaw_matrix_torch,
    yaw_quat,
)
from .skeleton import Motion, Skeleton, forward_kinematics, forward_kinematics_torch

FOOT_NAME = re.compile(r"foot|toe|ankle", re.IGNORECASE)
DEFAULT_CONTACT_SPEED = 0.15  # body sizes per second: ≈ 25 cm/s for a 1.7 m human


@dataclass(frozen=True)
class FeatureLayout:
    """Column layout of the (T, D) features of one skeleton."""

    n_joints: int
    root_joint: int
    contact_joints: tuple[int, ...]

    @property
    def n_contacts(self) -> int:
        return len(self.contact_joints)

    @property
    def root_yaw(self) -> slice:
        return slice(0, 1)

    @property
    def root_velocity(self) -> slice:
        return slice(1, 3)

    @property
    def root_height(self) -> slice:
        return slice(3, 4)

    @property
    def rotations(self) -> slice:
        return slice(4, 4 + 6 * self.n_joints)

    @property
    def positions(self) -> slice:
        return slice(4 + 6 * self.n_joints, 4 + 9 * self.n_joints)

    @property
    def contacts(self) -> slice:
        return slice(4 + 9 * self.n_joints, self.dim)

    @property
    def dim(self) -> int:
        return 4 + 9 * self.n_joints + self.n_contacts

    @property
    def root_columns(self) -> np.ndarray:
        """Columns of the root's trajectory: yaw change, planar velocity, height."""
        return np.arange(0, 4)

    def columns_for_joints(self, joint_ids, include_contacts: bool = False) -> np.ndarray:
        """Sorted feature columns of these joints' rotations and positions (and contacts, if asked)."""
        ids = np.asarray(list(joint_ids), dtype=np.int64)
        rot = self.rotations.start + 6 * ids[:, None] + np.arange(6)
        pos = self.positions.start + 3 * ids[:, None] + np.arange(3)
        cols = [rot.ravel(), pos.ravel()]
        if include_contacts:
            wanted = set(ids.tolist())
            cols.append(np.array([self.contacts.start + k for k, j in enumerate(self.contact_joints) if j in wanted]))
        return np.sort(np.concatenate(cols)).astype(np.int64)


def motion_root(skeleton: Skeleton) -> int:
    """The first joint from the top with more than one child (the pelvis); joint 0 if there is none."""
    j = 0
    while len(kids := skeleton.children(j)) == 1:
        j = kids[0]
    return j if skeleton.children(j) else 0


def top_joint_travels(motion: Motion) -> bool:
    """Whether the clip's travel is on a top joint above the motion root (a `root` bone over a `pelvis` whose
    translation never changes), not on the motion root as the features and the Bandai-Namco files have it."""
    r = motion_root(motion.skeleton)
    if r == 0:
        return False
    trans = motion.local_translations()
    tolerance = 1e-6 * body_size(motion.skeleton)
    still_root = np.abs(trans[:, r] - motion.skeleton.offsets[r]).max() <= tolerance
    return bool(still_root and np.ptp(trans[:, 0], axis=0).max() > tolerance)


def travel_on_motion_root(motion: Motion) -> Motion:
    """The same clip (every joint's global pose kept) with the top joint held where it is at frame 0 and its
    travel carried by the motion root's translation, the convention generated motion comes in (`_decode`)."""
    sk, r = motion.skeleton, motion_root(motion.skeleton)
    trans = motion.local_translations().astype(np.float64)
    grot = forward_kinematics(sk, motion.rotations, motion.root_positions, trans)[1].astype(np.float64)
    trans[:, r] += quat_rotate(quat_conjugate(grot[:, sk.parents[r]]), trans[:, 0] - trans[0, 0])
    trans[:, 0] = trans[0, 0]
    return Motion(sk, motion.rotations, trans[:, 0], motion.fps, motion.name, trans, motion.channels)


def travel_on_top_joint(motion: Motion) -> Motion:
    """The inverse of `travel_on_motion_root`: the motion root back at its rest offset and the travel on the top
    joint, so a clip whose file animates only the top joint's position is written (and applied) as it came."""
    sk, r = motion.skeleton, motion_root(motion.skeleton)
    trans = motion.local_translations().astype(np.float64)
    grot = forward_kinematics(sk, motion.rotations, motion.root_positions, trans)[1].astype(np.float64)
    trans[:, 0] += quat_rotate(grot[:, sk.parents[r]], trans[:, r] - sk.offsets[r])
    trans[:, r] = sk.offsets[r]
    animated = np.abs(trans[:, 1:] - sk.offsets[1:]).max() > 1e-6 * body_size(sk)
    return Motion(
        sk, motion.rotations, trans[:, 0], motion.fps, motion.name, trans if animated else None, motion.channels
    )


def body_joints(skeleton: Skeleton) -> list[int]:
    """The motion root and the joints below it (the body), in index order; the motion root comes first."""
    r = motion_root(skeleton)
    return [j for j in range(skeleton.n_joints) if _is_descendant(skeleton, j, r)]


def body_size(skeleton: Skeleton) -> float:
    """Largest side of the rest pose's bounding box below the motion root (ignores the root's placement)."""
    r = motion_root(skeleton)
    pos = skeleton.rest_positions()
    below = [j for j in range(skeleton.n_joints) if _is_descendant(skeleton, j, r)]
    pts = pos[below]
    return float((pts.max(0) - pts.min(0)).max()) or 1.0


def foot_joints(skeleton: Skeleton) -> list[int]:
    """Joints whose names say foot, toe or ankle; else, per side of the motion root (rest X), the lowest leaf."""
    named = [j for j, name in enumerate(skeleton.names) if FOOT_NAME.search(name)]
    if named:
        return named
    pos = skeleton.rest_positions()
    r = motion_root(skeleton)
    leaves = [j for j in skeleton.leaves() if j != r]
    feet = []
    for side in (pos[leaves, 0] < pos[r, 0], pos[leaves, 0] >= pos[r, 0]):
        candidates = [j for j, s in zip(leaves, side, strict=True) if s]
        if candidates:
            feet.append(min(candidates, key=lambda j: pos[j, 1]))
    return sorted(feet)


def feature_layout(skeleton: Skeleton) -> FeatureLayout:
    return FeatureLayout(skeleton.n_joints, motion_root(skeleton), tuple(foot_joints(skeleton)))


def motion_to_features(
    motion: Motion, contact_speed: float = DEFAULT_CONTACT_SPEED
) -> tuple[np.ndarray, FeatureLayout]:
    """(T, D) float32 features of `motion` and their layout."""
    sk = motion.skeleton
    layout = feature_layout(sk)
    r = layout.root_joint
    gpos, grot = forward_kinematics(sk, motion.rotations, motion.root_positions, motion.local_translations())
    gpos, grot = gpos.astype(np.float64), grot.astype(np.float64)
    t = motion.n_frames
    yaw = quat_yaw(grot[:, r])
    heading_inv = quat_conjugate(yaw_quat(yaw))  # (T, 4)
    root = gpos[:, r]

    dyaw = np.zeros(t)
    dyaw[1:] = (np.diff(yaw) + np.pi) % (2 * np.pi) - np.pi
    step = np.zeros((t, 3))
    step[1:] = root[1:] - root[:-1]
    velocity = quat_rotate(heading_inv, step)[:, [0, 2]]

    local = quat_to_matrix(motion.rotations.astype(np.float64))
    local[:, r] = quat_to_matrix(quat_multiply(heading_inv, grot[:, r]))
    relative = quat_rotate(heading_inv[:, None], gpos - root[:, None])
    relative[:, _ancestors(sk, r)] = 0.0

    speed = np.zeros((t, layout.n_contacts))
    if t > 1 and layout.n_contacts:
        feet = gpos[:, list(layout.contact_joints)]
        speed[1:] = np.linalg.norm(feet[1:] - feet[:-1], axis=-1) * motion.fps
        speed[0] = speed[1]
    contacts = (speed < contact_speed * body_size(sk)).astype(np.float64)

    features = np.concatenate(
        [dyaw[:, None], velocity, root[:, 1:2], matrix_to_6d(local).reshape(t, -1), relative.reshape(t, -1), contacts],
        axis=1,
    )
    return features.astype(np.float32), layout


def features_to_motion(
    features: np.ndarray,
    skeleton: Skeleton,
    fps: float,
    start_root_position=(0.0, 0.0, 0.0),
    start_yaw: float = 0.0,
    name: str = "",
    start_top_position=None,
) -> Motion:
    """Motion from (T, D) features: heading and planar root position integrated from `start_yaw` (radians)
    and `start_root_position` (X, Z used; Y comes from the features), rotations from the 6D columns.
    `start_top_position`: where joint 0 stays when it sits above the motion root (default: the origin)."""
    layout = feature_layout(skeleton)
    feats = torch.as_tensor(np.asarray(features, dtype=np.float64))
    start = torch.as_tensor(np.asarray(start_root_position, dtype=np.float64))
    yaw0 = torch.tensor(float(start_yaw), dtype=torch.float64)
    top = None if start_top_position is None else torch.as_tensor(np.asarray(start_top_position, dtype=np.float64))
    local, root_positions, translations = _decode(feats, layout, skeleton, start, yaw0, top)
    translations = None if translations is None else translations.numpy()
    return Motion(skeleton, matrix_to_quat_torch(local).numpy(), root_positions.numpy(), fps, name, translations)


def features_to_positions(
    features: torch.Tensor,
    layout: FeatureLayout,
    skeleton: Skeleton,
    start_root_position: torch.Tensor | None = None,
    start_yaw: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """Global joint positions (..., T, J, 3) from features (..., T, D); differentiable, for training losses."""
    start = features.new_zeros(3) if start_root_position is None else start_root_position
    local, root_positions, translations = _decode(
        features, layout, skeleton, start, torch.as_tensor(start_yaw).to(features)
    )
    return forward_kinematics_torch(skeleton, local, root_positions, translations)[0]


def _decode(features: torch.Tensor, layout: FeatureLayout, skeleton: Skeleton, start, start_yaw, top=None):
    """Local rotation matrices (..., T, J, 3, 3), joint-0 positions (..., T, 3) and local translations
    (..., T, J, 3) — None when the motion root is joint 0 and the rest offsets apply — from features.
    top: joint 0's position (3,) when it sits above the motion root (default: the origin)."""
    r = layout.root_joint
    yaw = start_yaw + torch.cumsum(features[..., layout.root_yaw.start], dim=-1)  # (..., T)
    heading = yaw_matrix_torch(yaw)  # (..., T, 3, 3)
    vel = features[..., layout.root_velocity]
    step = torch.stack([vel[..., 0], torch.zeros_like(vel[..., 0]), vel[..., 1]], dim=-1)
    planar = torch.cumsum((heading @ step[..., None])[..., 0], dim=-2)
    root = planar + start[..., None, :] * planar.new_tensor([1.0, 0.0, 1.0])
    root = torch.cat([root[..., :1], features[..., layout.root_height], root[..., 2:]], dim=-1)

    sixd = features[..., layout.rotations].reshape(features.shape[:-1] + (layout.n_joints, 6))
    local = sixd_to_matrix_torch(sixd)
    if r == 0:
        local = torch.cat([(heading @ local[..., 0, :, :])[..., None, :, :], local[..., 1:, :, :]], dim=-3)
        return local, root, None
    # Joints above the motion root keep their decoded rotations and rest offsets; joint 0 stays at `top`, and
    # the motion root gets the animated translation from its parent that lands it on the integrated path, as
    # Bandai-Namco's Hips channels do.
    chain = _ancestors(skeleton, r)[::-1]
    offsets = torch.as_tensor(skeleton.offsets, dtype=features.dtype, device=features.device)
    top = root.new_zeros(3) if top is None else top.to(root)
    top = top.expand(root.shape)
    parent_rot = local[..., 0, :, :]
    parent_pos = top
    for a in chain[1:]:
        parent_pos = parent_pos + (parent_rot @ offsets[a][:, None])[..., 0]
        parent_rot = parent_rot @ local[..., a, :, :]
    root_local = parent_rot.transpose(-1, -2) @ heading @ local[..., r, :, :]
    local = torch.cat([local[..., :r, :, :], root_local[..., None, :, :], local[..., r + 1 :, :, :]], dim=-3)
    root_translation = (parent_rot.transpose(-1, -2) @ (root - parent_pos)[..., None])[..., 0]
    translations = offsets.expand(root.shape[:-1] + offsets.shape)
    translations = torch.cat(
        [translations[..., :r, :], root_translation[..., None, :], translations[..., r + 1 :, :]], dim=-2
    )
    return local, top, translations


def _ancestors(skeleton: Skeleton, j: int) -> list[int]:
    """The joints above `j`, its parent first."""
    out = []
    j = int(skeleton.parents[j])
    while j >= 0:
        out.append(j)
        j = int(skeleton.parents[j])
    return out


def _is_descendant(skeleton: Skeleton, j: int, ancestor: int) -> bool:
    while j >= 0:
        if j == ancestor:
            return True
        j = int(skeleton.parents[j])
    return False

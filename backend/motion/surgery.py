"""Motion surgery (numpy): fill frames by interpolation, and write generated frames into a clip so they meet
the kept frames on both sides. Shared by the token model (`model.py`) and motion matching (`matching.py`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .features import motion_root
from .rotations import quat_conjugate, quat_multiply, quat_rotate, quat_slerp, quat_yaw, yaw_quat
from .skeleton import Motion, Skeleton, forward_kinematics


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[(start, stop)) of the True runs of a 1-D mask."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def local_translations(motion: Motion) -> np.ndarray:
    return motion.local_translations().astype(np.float64)


def fill_by_interpolation(motion: Motion, kept: np.ndarray) -> Motion:
    """Frames outside `kept` interpolated from the kept frames around them (SLERP / linear; held at the ends)."""
    out = motion.copy()
    trans = local_translations(motion)
    for a, b in runs(~kept):
        left, right = a - 1, b
        for f in range(a, b):
            if left < 0 or right >= len(kept):
                src = right if left < 0 else left
                w, lo, hi = 0.0, src, src
            else:
                w, lo, hi = (f - left) / (right - left), left, right
            out.rotations[f] = quat_slerp(motion.rotations[lo], motion.rotations[hi], w)
            trans[f] = (1 - w) * trans[lo] + w * trans[hi]
    out.root_positions = trans[:, 0].astype(np.float32)
    if out.translations is not None:
        out.translations[:, 1:] = trans[:, 1:]
    return out


def heading_transform(motion: Motion, frame: int) -> tuple[float, np.ndarray]:
    """(yaw, ground position) of the motion root at `frame`."""
    r = motion_root(motion.skeleton)
    sl = slice(frame, frame + 1)
    trans = motion.local_translations()[sl]
    gpos, grot = forward_kinematics(motion.skeleton, motion.rotations[sl], motion.root_positions[sl], trans)
    return float(quat_yaw(grot[0, r].astype(np.float64))), gpos[0, r].astype(np.float64)


def _keep_upper_chain(sk: Skeleton, rotations: np.ndarray, translations: np.ndarray, base: Motion):
    """Give motions the joints above the motion root from `base` (e.g. a static `joint_Root` over the pelvis),
    re-expressing the motion root's local rotation and translation so its global pose is unchanged. Without
    this, moving a segment onto the kept frames turns and shifts joint 0, which the file keeps still.
    rotations (..., T, J, 4) and local translations (..., T, J, 3) (root row = root position), any leading
    dimensions; returns both (float32 values, as a Motion would store them)."""
    rot = rotations.astype(np.float32).astype(np.float64)
    trans = translations.astype(np.float32).astype(np.float64)
    r = motion_root(sk)
    if r == 0:
        return rot, trans
    upper = []
    j = int(sk.parents[r])
    while j >= 0:
        upper.append(j)
        j = int(sk.parents[j])
    g_pos, g_rot = forward_kinematics(sk, rot, trans[..., 0, :], trans)
    rot[..., upper, :] = base.rotations[:, upper]
    trans[..., upper, :] = base.local_translations()[:, upper]
    p_pos, p_rot = forward_kinematics(sk, rot, trans[..., 0, :], trans)
    parent = int(sk.parents[r])
    inv = quat_conjugate(p_rot[..., parent, :].astype(np.float64))
    rot[..., r, :] = quat_multiply(inv, g_rot[..., r, :].astype(np.float64))
    trans[..., r, :] = quat_rotate(inv, (g_pos[..., r, :] - p_pos[..., parent, :]).astype(np.float64))
    return _f32(rot), _f32(trans)


def _f32(x: np.ndarray) -> np.ndarray:
    """Round to float32 and back: the values a Motion's float32 arrays would hold."""
    return x.astype(np.float32).astype(np.float64)


@dataclass
class Segments:
    """K candidate motions for one stretch of a clip, as arrays: rotations (K, T, J, 4), root positions
    (K, T, 3) and animated translations (K, T, J, 3), or None where the skeleton's offsets apply."""

    rotations: np.ndarray
    root_positions: np.ndarray
    translations: np.ndarray | None

    @classmethod
    def of(cls, motions: list[Motion]) -> Segments:
        """Stack motions of one length (all with or all without animated translations)."""
        has = [m.translations is not None for m in motions]
        if any(has) != all(has):
            raise ValueError("segments must all have animated translations, or none")
        return cls(
            np.stack([m.rotations for m in motions]),
            np.stack([m.root_positions for m in motions]),
            np.stack([m.translations for m in motions]) if all(has) else None,
        )


def fit_segments(
    out: Motion,
    segments: Segments,
    a: int,
    b: int,
    joints: np.ndarray,
    with_root: bool,
    base: Motion | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Frames [a, b) of each of K `segments` (each as long as `out`) fitted between out's frames a-1 and b
    (when they exist): the rotations of `joints` (K, b - a, J', 4) and, with_root, the root positions
    (K, b - a, 3) and animated translations (K, b - a, J, 3) (None without them, or without with_root).

    With the root, each segment is first moved rigidly onto out's heading and ground position at frame a - 1
    (else b); `base` then supplies the joints above the motion root (`_keep_upper_chain`). Then the differences
    to out at a - 1 and at b (rotation and translation, per joint) are cross-faded over the gap, so every
    segment meets the kept frames on both sides. Float32 at the same points as a Motion, so `fit_into` (one
    segment, written into out) gives what it gave when it worked on Motions."""
    sk = out.skeleton
    t = out.n_frames
    left, right = a - 1, b
    rot = _f32(segments.rotations.astype(np.float64))
    k = len(rot)
    if segments.translations is None:
        trans = np.broadcast_to(sk.offsets.astype(np.float64), (k, t, sk.n_joints, 3)).copy()
    else:
        trans = _f32(segments.translations.astype(np.float64))
    trans[:, :, 0] = segments.root_positions
    anchor = left if left >= 0 else (right if right < t else None)
    if with_root and anchor is not None:  # move each segment rigidly onto the anchor frame's heading and place
        yaw_out, pos_out = heading_transform(out, anchor)
        r = motion_root(sk)
        gpos, grot = forward_kinematics(sk, rot[:, anchor], trans[:, anchor, 0], trans[:, anchor])
        yaw_dec, pos_dec = quat_yaw(grot[:, r].astype(np.float64)), gpos[:, r].astype(np.float64)
        turn = yaw_quat(yaw_out - yaw_dec)  # (K, 4)
        rot[:, :, 0] = _f32(quat_multiply(turn[:, None], rot[:, :, 0]))
        moved = quat_rotate(np.broadcast_to(turn[:, None], (k, t, 4)), trans[:, :, 0])
        shift = pos_out - quat_rotate(turn, pos_dec)
        shift[:, 1] = 0.0
        trans[:, :, 0] = _f32(moved + shift[:, None])
        if base is not None and segments.translations is not None:
            rot, trans = _keep_upper_chain(sk, rot, trans, base)
    out_trans = local_translations(out)
    both = left >= 0 and right < t

    def deltas(frame: int):
        turn = quat_multiply(quat_conjugate(rot[:, frame, joints]), out.rotations[frame, joints])
        return turn, out_trans[frame] - trans[:, frame]

    d_left = deltas(left) if left >= 0 else None
    d_right = deltas(right) if right < t else None
    if d_left is None and d_right is None:
        d_left = (np.tile([1.0, 0.0, 0.0, 0.0], (k, len(joints), 1)), np.zeros((k, sk.n_joints, 3)))
    d_left = d_left or d_right
    d_right = d_right or d_left
    w = (np.arange(a, b) - left) / (right - left) if both else np.zeros(b - a)
    rot_fix = quat_slerp(d_left[0][:, None], d_right[0][:, None], w[None, :, None])  # (K, F, J', 4)
    rotations = _f32(quat_multiply(rot[:, a:b][:, :, joints], rot_fix))
    if not with_root:
        return rotations, None, None
    trans_fix = (1 - w)[None, :, None, None] * d_left[1][:, None] + w[None, :, None, None] * d_right[1][:, None]
    new = _f32(trans[:, a:b] + trans_fix)
    translations = None
    if out.translations is not None:
        translations = new.copy()
        translations[:, :, 0] = out.translations[a:b, 0]
    return rotations, new[:, :, 0], translations


def fit_into(
    out: Motion,
    decoded: Motion,
    a: int,
    b: int,
    joints: np.ndarray,
    with_root: bool,
    base: Motion | None = None,
) -> None:
    """Write decoded frames [a, b) of `joints` into `out`, matched to out's frames a-1 and b (when they exist):
    `fit_segments` with one segment. `base` supplies the joints above the motion root for those frames."""
    rotations, root_positions, translations = fit_segments(
        out, Segments.of([decoded]), a, b, np.asarray(joints), with_root, base
    )
    out.rotations[a:b, joints] = rotations[0]
    if with_root:
        out.root_positions[a:b] = root_positions[0]
        if translations is not None:
            out.translations[a:b, 1:] = translations[0, :, 1:]

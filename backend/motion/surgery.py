"""Motion surgery (numpy): fill frames by interpolation, and write generated frames into a clip so they meet
the kept frames on both sides. Shared by the token model (`model.py`) and motion matching (`matching.py`)."""

from __future__ import annotations

import numpy as np

from .features import motion_root
from .rotations import quat_conjugate, quat_multiply, quat_rotate, quat_slerp, quat_yaw, yaw_quat
from .skeleton import Motion, forward_kinematics


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


def keep_upper_chain(dec: Motion, base: Motion) -> None:
    """Give `dec` the joints above the motion root from `base` (e.g. a static `joint_Root` over the pelvis),
    re-expressing the motion root's local rotation and translation so its global pose is unchanged. Without
    this, moving the decoded clip onto the kept frames turns and shifts joint 0, which the file keeps still."""
    sk = dec.skeleton
    r = motion_root(sk)
    if r == 0 or dec.translations is None:
        return
    upper = []
    j = int(sk.parents[r])
    while j >= 0:
        upper.append(j)
        j = int(sk.parents[j])
    g_pos, g_rot = forward_kinematics(sk, dec.rotations, dec.root_positions, dec.local_translations())
    trans = dec.local_translations().astype(np.float64)
    base_trans = base.local_translations()
    dec.rotations[:, upper] = base.rotations[:, upper]
    trans[:, upper] = base_trans[:, upper]
    p_pos, p_rot = forward_kinematics(sk, dec.rotations, trans[:, 0], trans)
    parent = int(sk.parents[r])
    inv = quat_conjugate(p_rot[:, parent].astype(np.float64))
    dec.rotations[:, r] = quat_multiply(inv, g_rot[:, r].astype(np.float64))
    trans[:, r] = quat_rotate(inv, (g_pos[:, r] - p_pos[:, parent]).astype(np.float64))
    dec.root_positions = trans[:, 0].astype(np.float32)
    dec.translations[:, 1:] = trans[:, 1:]


def fit_into(
    out: Motion,
    decoded: Motion,
    a: int,
    b: int,
    joints: np.ndarray,
    with_root: bool,
    base: Motion | None = None,
) -> None:
    """Write decoded frames [a, b) of `joints` into `out`, matched to out's frames a-1 and b (when they exist).
    `base` supplies the joints above the motion root for those frames (see `_keep_upper_chain`)."""
    t = out.n_frames
    left, right = a - 1, b
    dec = decoded.copy()
    anchor = left if left >= 0 else (right if right < t else None)
    if with_root and anchor is not None:  # move the decoded clip rigidly onto the anchor frame's heading and place
        yaw_out, pos_out = heading_transform(out, anchor)
        yaw_dec, pos_dec = heading_transform(dec, anchor)
        turn = yaw_quat(np.array(yaw_out - yaw_dec))
        dec.rotations[:, 0] = quat_multiply(turn, dec.rotations[:, 0].astype(np.float64))
        moved = quat_rotate(np.broadcast_to(turn, (t, 4)), dec.root_positions.astype(np.float64))
        shift = pos_out - quat_rotate(turn, pos_dec)
        shift[1] = 0.0
        dec.root_positions = (moved + shift).astype(np.float32)
        if base is not None:
            keep_upper_chain(dec, base)
    dec_trans, out_trans = local_translations(dec), local_translations(out)

    def deltas(frame: int):
        dec_rot = dec.rotations[frame, joints].astype(np.float64)
        rot = quat_multiply(quat_conjugate(dec_rot), out.rotations[frame, joints])
        return rot, out_trans[frame] - dec_trans[frame]

    ident = np.tile([1.0, 0.0, 0.0, 0.0], (len(joints), 1))
    zero = np.zeros_like(out_trans[0])
    d_left = deltas(left) if left >= 0 else None
    d_right = deltas(right) if right < t else None
    d_left = d_left or d_right or (ident, zero)
    d_right = d_right or d_left
    frames = np.arange(a, b)
    w = (frames - left) / (right - left) if (left >= 0 and right < t) else np.zeros(len(frames))
    rot_fix = quat_slerp(d_left[0][None], d_right[0][None], w[:, None])  # (F, J', 4)
    out.rotations[a:b, joints] = quat_multiply(dec.rotations[a:b, joints].astype(np.float64), rot_fix)
    if with_root:
        trans_fix = (1 - w)[:, None, None] * d_left[1] + w[:, None, None] * d_right[1]
        new = dec_trans[a:b] + trans_fix
        out.root_positions[a:b] = new[:, 0]
        if out.translations is not None:
            out.translations[a:b, 1:] = new[:, 1:]

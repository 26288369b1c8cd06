"""In-betweening evaluation on global quantities, after Harvey et al. 2020 ("Robust Motion In-betweening",
the LAFAN1 benchmark; ubisoft-laforge-animation-dataset `lafan1/benchmarks.py`, `extract.py`), plus
MPJPE, foot skating and the two naive baselines of that benchmark.

Protocol (as in the benchmark): a window holds `n_past` = 10 context frames, the `n` transition frames
to fill, and the target frame. With context frames at indices [start - 10, start), a transition of
length n fills indices [start, end) with end = start + n, and frame `end` is the target (the benchmark
keeps 10 future frames but uses only the first). Transition lengths reported: 5, 15, 30, 45. Before
scoring, the benchmark centres each window on its mean root XZ and turns it so the root faces one
direction at the last context frame (start - 1); the position statistics (`position_stats`) are the
per-coordinate mean and std of global joint positions over the training windows prepared that way.
Scores are computed on the transition frames only:

- L2P: mean over windows and frames of ‖(p̂ − p) / std‖₂ over all J × 3 coordinates (the mean cancels);
- L2Q: mean over windows and frames of ‖q̂ − q‖₂ over all J × 4 global quaternion components, after
  removing the sign ambiguity: quaternions are made continuous in time (q_t flipped when q_t · q_{t−1} < 0,
  as the benchmark's `remove_quat_discontinuities`) and the prediction's first frame is put in the same
  hemisphere as the truth's, per joint;
- NPSS: the power-weighted earth mover's distance between normalised power spectra over time (Gopalakrishnan
  et al. 2019, the benchmark's `fast_npss`), on the global quaternions flattened per frame.
"""

from __future__ import annotations

import numpy as np

from shared.errors import InputError

from .rotations import quat_slerp
from .skeleton import Motion


def position_stats(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate mean and std (J, 3) of global positions (..., T, J, 3), for `l2p`."""
    flat = np.asarray(positions, dtype=np.float64).reshape(-1, *positions.shape[-2:])
    return flat.mean(0), flat.std(0)


def l2p(pred_pos: np.ndarray, true_pos: np.ndarray, mean: np.ndarray, std: np.ndarray) -> float:
    """L2P of (..., T, J, 3) global positions, normalised by `position_stats` mean and std (J, 3)."""
    pred = (np.asarray(pred_pos, dtype=np.float64) - mean) / std
    true = (np.asarray(true_pos, dtype=np.float64) - mean) / std
    return float(np.mean(np.sqrt(np.sum((pred - true) ** 2, axis=(-2, -1)))))


def l2q(pred_quat_global: np.ndarray, true_quat_global: np.ndarray) -> float:
    """L2Q of (..., T, J, 4) global quaternions, sign ambiguity removed (see the module docstring)."""
    true = remove_quat_discontinuities(np.asarray(true_quat_global, dtype=np.float64))
    pred = remove_quat_discontinuities(np.asarray(pred_quat_global, dtype=np.float64))
    flip = np.sum(pred[..., :1, :, :] * true[..., :1, :, :], axis=-1, keepdims=True) < 0
    pred = np.where(flip, -pred, pred)
    return float(np.mean(np.sqrt(np.sum((pred - true) ** 2, axis=(-2, -1)))))


def npss(pred: np.ndarray, true: np.ndarray) -> float:
    """NPSS of sequences (B, T, D) (or (T, D)); 0 for identical spectra. Dimensions with no power are skipped."""
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if true.ndim == 2:
        pred, true = pred[None], true[None]
    pred = pred.reshape(pred.shape[0], pred.shape[1], -1)
    true = true.reshape(true.shape[0], true.shape[1], -1)
    true_power = np.real(np.fft.fft(true, axis=1)) ** 2
    pred_power = np.real(np.fft.fft(pred, axis=1)) ** 2
    true_total = true_power.sum(1)
    pred_total = pred_power.sum(1)
    valid = (true_total > 0) & (pred_total > 0)
    true_cdf = np.cumsum(true_power / np.where(true_total > 0, true_total, 1.0)[:, None], axis=1)
    pred_cdf = np.cumsum(pred_power / np.where(pred_total > 0, pred_total, 1.0)[:, None], axis=1)
    emd = np.abs(pred_cdf - true_cdf).sum(1)
    if not valid.any():
        return 0.0
    return float(np.average(emd[valid], weights=true_total[valid]))


def mpjpe_mm(pred_pos: np.ndarray, true_pos: np.ndarray, units_to_mm: float, root_joint: int = 0) -> float:
    """Mean per-joint position error in millimetres after aligning each frame's `root_joint` (pass
    `features.motion_root(skeleton)` for files with a static joint above the pelvis)."""
    pred = np.asarray(pred_pos, dtype=np.float64)
    true = np.asarray(true_pos, dtype=np.float64)
    pred = pred - pred[..., root_joint : root_joint + 1, :]
    true = true - true[..., root_joint : root_joint + 1, :]
    return float(np.mean(np.linalg.norm(pred - true, axis=-1)) * units_to_mm)


def foot_skate(positions: np.ndarray, foot_ids, fps: float, height_threshold: float) -> float:
    """Mean horizontal foot speed (units/s) while the foot is near the ground, over frames and feet.

    Speed between frames t−1 and t counts with weight 2 − 2^(h/H) when the foot height h (Y at t) is
    below H = `height_threshold`, else 0 (the weighting of Zhang et al. 2018, used by later in-betweening
    papers): a sliding foot on the floor scores its full speed, one lifting off fades out.
    """
    feet = np.asarray(positions, dtype=np.float64)[..., list(foot_ids), :]
    step = feet[..., 1:, :, :] - feet[..., :-1, :, :]
    speed = np.linalg.norm(step[..., [0, 2]], axis=-1) * fps
    height = feet[..., 1:, :, 1]
    weight = np.where(height < height_threshold, 2.0 - np.power(2.0, height / height_threshold), 0.0)
    return float(np.mean(speed * np.clip(weight, 0.0, 1.0))) if speed.size else 0.0


def remove_quat_discontinuities(q: np.ndarray) -> np.ndarray:
    """Flip quaternions (..., T, J, 4) along T so that consecutive ones lie in the same hemisphere."""
    q = np.array(q, dtype=np.float64)
    dots = np.sum(q[..., 1:, :, :] * q[..., :-1, :, :], axis=-1)
    # flip parity accumulates: frame t is flipped if an odd number of sign changes precede it
    parity = np.cumsum(dots < 0, axis=-2) % 2
    sign = np.concatenate([np.ones_like(parity[..., :1, :]), np.where(parity == 1, -1.0, 1.0)], axis=-2)
    return q * sign[..., None]


def zero_velocity_inbetween(motion: Motion, start: int, end: int) -> Motion:
    """Frames start..end−1 hold frame start−1 (the last context frame); the rest is unchanged."""
    _check_range(motion, start, end)
    out = motion.copy()
    out.rotations[start:end] = motion.rotations[start - 1]
    out.root_positions[start:end] = motion.root_positions[start - 1]
    if out.translations is not None:
        out.translations[start:end] = motion.translations[start - 1]
    return out


def interpolation_inbetween(motion: Motion, start: int, end: int) -> Motion:
    """Frames start..end−1 interpolated between frame start−1 and frame `end`: root position (and animated
    translations) linearly, local quaternions by SLERP, at fractions (t − start + 1) / (end − start + 1)."""
    _check_range(motion, start, end)
    out = motion.copy()
    a, b = start - 1, end
    alpha = (np.arange(start, end) - a) / (b - a)
    out.rotations[start:end] = quat_slerp(
        motion.rotations[a].astype(np.float64), motion.rotations[b].astype(np.float64), alpha[:, None]
    )
    lerp = alpha[:, None]
    out.root_positions[start:end] = (1 - lerp) * motion.root_positions[a] + lerp * motion.root_positions[b]
    if out.translations is not None:
        out.translations[start:end] = (1 - lerp[..., None]) * motion.translations[a] + lerp[
            ..., None
        ] * motion.translations[b]
    return out


def _check_range(motion: Motion, start: int, end: int) -> None:
    if not 1 <= start <= end < motion.n_frames:
        raise InputError(
            f"In-between range [{start}, {end}) needs a context frame before and a target frame after "
            f"within the clip's {motion.n_frames} frames"
        )

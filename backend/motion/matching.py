"""In-betweening by motion matching: fill a gap with the blend of the library segments that best fit around it.

A trained model keeps the tokens of its training clips (all residual layers, `MotionModel.library_codes`);
decoded once, they are the library this module searches (`MotionLibrary`). For a gap of frames [a, b) with
kept frames before it (up to `context` of them: the left context) and after it (from b on: the right context):

- The library holds every training clip and its left ↔ right mirror image (`mirror.py`; `MatchSettings.mirror`).
- Every library frame u is a candidate for frame a. It is scored by the squared distance, in normalised
  feature units (the root height's column scaled by `root_height_scale`, 16: the pelvis's rise and fall
  over the context says where the steps are and how much they bounce), between the library's frames around
  [u, u + n) and the clip's context frames (the mean over
  the left frames plus `end_weight` × the mean over the right ones), plus `displacement_weight` × the squared
  difference of the root's travel and turn from frame a − 1 to frame b (skeleton units; radians × 30). A
  context frame whose previous frame is not kept (the first frame after a gap, or a clip's first frame) is
  compared on its pose columns only — root height, rotations, positions — since its velocity columns would
  compare against a frame that is being generated.
- The `candidates` best segments are each moved onto the clip and cross-faded into the gap exactly as the
  token model's output is (`surgery.fit_segments`), so every one meets the kept frames on both sides, and their
  average (sign-aligned quaternion mean per joint, mean root position) is written into the gap.
- The body is matched in groups (`match_groups`, from the model's body parts): the root's part and the legs
  together (their steps carry the root, so they also carry its path), each other part (each arm) on its own
  columns, so an arm's swing or wave can come from another clip than the steps.

Why it is the default way to in-between (the masked token transformer stays for sampled variations, part edits
and generation): on 13 held-out Bandai-Namco clips (LAFAN1 protocol, 10 context frames + 1 target frame), the
token model's in-betweens scored 0.95× / 1.03× / 1.09× interpolation's L2P at 5 / 15 / 30 frames; it cannot
predict the fine residual token layers of generated positions from 138 clips. Matching scores 0.49× / 0.47× /
0.59× (bench_motion.py). How it got there, each step on those clips: the whole body as one group, 16 matches:
0.60× / 0.58× / 0.72×; the arms on their own: 0.56× / 0.54× / 0.69×; the mirror images added: 0.51× / 0.49× /
0.64× (halving the library instead cost 0.06–0.15× at 30 frames); the root height scaled 8×: 0.52× / 0.48× /
0.62×; 32 matches with the height scaled 16×: 0.49× / 0.47× / 0.59× (at 30 frames, height 8×: 32 matches 0.60×,
48 0.60×, 64 0.61×). Those clips are mostly walks and gestures, and these settings were chosen on them, so the
mirror, the height scale and the 32 matches were also checked on 20 training clips left out of the library one
at a time (a dance, dashes and runs among them; mirror images of the left-out clip left out too), where every
step helped but matching is far closer to interpolation: 16 matches without the height scale 0.85× / 0.94× at 15
/ 30 frames, with both 0.84× / 0.90×. Averaging many matches beats the best one (0.77× / 0.76× / 0.96× with the
single best); weighting the root's travel less (0.05) beat 1.0; tried without gain: time-warped candidates
(0.8–1.25× speed), a heavier last context frame, shrinking towards interpolation where the matches disagree,
weighting the matches by their cost, and setting the pelvis height from the matched legs so a foot stays on the
floor (from the true legs that way: 0.09× at 30 frames; from the averaged matched legs: 0.75×–0.78×, against
0.69× with the matches' own pelvis height at the time).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .features import FeatureLayout, motion_root
from .rotations import quat_conjugate, quat_rotate, quat_yaw, yaw_quat
from .skeleton import Motion, Skeleton, forward_kinematics
from .surgery import Segments, fit_segments, runs

TURN_SCALE = 30.0  # radians of heading change → the units of the root's travel in the displacement term


@dataclass(frozen=True)
class MatchSettings:
    context: int = 10  # kept frames compared on each side of a gap (LAFAN1 gives 10 before)
    candidates: int = 32  # best library segments averaged
    displacement_weight: float = 0.05
    end_weight: float = 1.0
    mirror: bool = True  # also draw from the library's left ↔ right mirror images (`mirror.py`)
    # the root height's normalised column is multiplied by this before comparing (so its squared difference
    # counts root_height_scale² times another column's): the pelvis's rise and fall over the context frames
    # says where the clip is in its steps and how much it bounces, which the gap's frames must continue
    root_height_scale: float = 16.0


@dataclass
class MotionLibrary:
    """Clips to match against: the motions, their normalised features (concatenated) and root paths."""

    motions: list[Motion]
    features: np.ndarray  # (N, D) float64, all clips' frames one after another
    starts: np.ndarray  # (C + 1,) first row of each clip in `features`, then N
    root_positions: np.ndarray  # (N, 3) global motion-root positions
    root_yaws: np.ndarray  # (N,) headings
    pose_columns: np.ndarray  # feature columns compared for frames whose previous frame is generated
    scale: np.ndarray  # (D,) per-column factor already applied to `features` (`find_matches` applies it to queries)
    mirrored: np.ndarray  # (C,) bool: which clips are mirror images (left out when `MatchSettings.mirror` is off)
    _views: dict = field(default_factory=dict, repr=False)  # column set → `view`

    @classmethod
    def build(
        cls,
        motions: list[Motion],
        features: list[np.ndarray],
        layout: FeatureLayout,
        root_height_scale: float = 1.0,
        mirrored: list[bool] | None = None,
    ) -> MotionLibrary:
        """motions and their normalised (T, D) features, one per clip; root_height_scale: `MatchSettings`';
        mirrored: which motions are mirror images of others (none by default)."""
        if not motions or len(motions) != len(features):
            raise ValueError("a motion library needs one feature array per motion, and at least one motion")
        paths = [root_path(m) for m in motions]
        pose = np.r_[layout.root_height, layout.rotations, layout.positions]
        scale = np.ones(layout.dim)
        scale[layout.root_height] = root_height_scale
        return cls(
            list(motions),
            np.concatenate(features).astype(np.float64) * scale,
            np.cumsum([0] + [len(f) for f in features]),
            np.concatenate([p for p, _ in paths]),
            np.concatenate([y for _, y in paths]),
            pose,
            scale,
            np.zeros(len(motions), bool) if mirrored is None else np.asarray(mirrored, bool),
        )

    def view(self, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(features (N, C) of these columns, which of them are pose columns (C,) bool, squared row norms over
        all of them and over the pose ones), computed once per column set."""
        columns = np.asarray(columns, np.int64)
        key = columns.tobytes()
        if key not in self._views:
            rows = np.ascontiguousarray(self.features[:, columns])
            pose = np.isin(columns, self.pose_columns)
            self._views[key] = (
                rows,
                pose,
                np.einsum("nd,nd->n", rows, rows),
                np.einsum("nd,nd->n", rows[:, pose], rows[:, pose]),
            )
        return self._views[key]


@dataclass(frozen=True)
class MatchGroup:
    """Joints matched together, compared on their feature `columns`; the group with the root also carries the
    root's path (and the animated translations)."""

    joints: np.ndarray
    columns: np.ndarray
    with_root: bool


def match_groups(skeleton: Skeleton, parts: dict[str, list[int]], columns: list[list[int]]) -> list[MatchGroup]:
    """The model's body parts (with their token groups' feature `columns`) as matching groups: the root's part and
    the parts hanging from the motion root (legs, whose steps carry the root along) match as one group, every
    other part (arms, a tail, …) on its own."""
    r = motion_root(skeleton)
    core_joints, core_columns, groups = [], [], []
    for i, (joints, cols) in enumerate(zip(parts.values(), columns, strict=True)):
        tops = [j for j in joints if int(skeleton.parents[j]) not in joints]
        if i == 0 or any(int(skeleton.parents[j]) == r for j in tops):
            core_joints += list(joints)
            core_columns += list(cols)
        else:
            groups.append(MatchGroup(np.asarray(sorted(joints)), np.asarray(sorted(cols)), False))
    core = MatchGroup(np.asarray(sorted(core_joints)), np.asarray(sorted(core_columns)), True)
    return [core, *groups]


def root_path(motion: Motion) -> tuple[np.ndarray, np.ndarray]:
    """(T, 3) global positions and (T,) headings of the motion root."""
    r = motion_root(motion.skeleton)
    pos, rot = forward_kinematics(motion.skeleton, motion.rotations, motion.root_positions, motion.local_translations())
    return pos[:, r].astype(np.float64), quat_yaw(rot[:, r].astype(np.float64))


def _travel(positions: np.ndarray, yaws: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Root travel from frame i to frame j in frame i's heading (x, z) and the heading change · TURN_SCALE."""
    step = quat_rotate(quat_conjugate(yaw_quat(yaws[i])), positions[j] - positions[i])
    turn = (yaws[j] - yaws[i] + np.pi) % (2 * np.pi) - np.pi
    return np.concatenate([step[..., [0, 2]], turn[..., None] * TURN_SCALE], axis=-1)


@dataclass(frozen=True)
class Gap:
    """Frames [a, b) to fill; `left`/`right`: how many kept context frames lie before a / from b on."""

    a: int
    b: int
    left: int
    right: int

    @property
    def length(self) -> int:
        return self.b - self.a


def gap_context(kept: np.ndarray, a: int, b: int, context: int) -> Gap:
    """The kept frames around the gap [a, b) of `kept` (T,) bool, at most `context` on each side."""
    left = 0
    while left < context and a - left - 1 >= 0 and kept[a - left - 1]:
        left += 1
    right = 0
    while right < context and b + right < len(kept) and kept[b + right]:
        right += 1
    return Gap(a, b, left, right)


def find_matches(
    library: MotionLibrary,
    features: np.ndarray,
    kept: np.ndarray,
    path: tuple[np.ndarray, np.ndarray],
    gap: Gap,
    settings: MatchSettings,
    columns: np.ndarray | None = None,
) -> list[tuple[int, int, float]]:
    """The best library segments for `gap` of a clip: [(clip, first frame u, cost)], best first.

    features (T, D) normalised features of the clip (only its kept frames are read), kept (T,) bool, path the
    clip's `root_path`. columns: compare only these feature columns (a `MatchGroup`'s); the root's travel counts
    when `settings.displacement_weight` > 0. Empty when no library clip is long enough for the gap and its
    context."""
    if gap.left == 0 and gap.right == 0:
        raise ValueError("a gap needs kept frames on at least one side")
    n = gap.length
    offsets, rows, full = [], [], []  # library frame = u + offset ↔ clip frame row
    for i in range(gap.left):
        frame = gap.a - gap.left + i
        offsets.append(-gap.left + i)
        rows.append(frame)
        full.append(frame > 0 and bool(kept[frame - 1]))
    for i in range(gap.right):
        frame = gap.b + i
        offsets.append(n + i)
        rows.append(frame)
        full.append(i > 0)  # frame b follows a generated frame
    offsets_a, full_a = np.asarray(offsets), np.asarray(full)
    weights = np.concatenate(
        [np.full(gap.left, 1.0 / max(gap.left, 1)), np.full(gap.right, settings.end_weight / max(gap.right, 1))]
    )
    if columns is None:
        columns = np.arange(library.features.shape[1])
    lib_rows, pose, norms_all, norms_pose = library.view(columns)
    query = features[rows][:, columns].astype(np.float64) * library.scale[columns]
    query = np.where(full_a[:, None] | pose[None], query, 0.0)  # pose-only rows compare pose columns
    products = lib_rows @ query.T  # (N, M)
    query_norms = np.einsum("md,md->m", query, query)

    # candidate u (global row) needs its whole window inside one clip
    lo_off, hi_off = min(offsets_a.min(), -1 if gap.left else 0), max(offsets_a.max(), n if gap.right else n - 1)
    candidates = []
    for c in range(len(library.starts) - 1):
        if library.mirrored[c] and not settings.mirror:
            continue
        first, stop = library.starts[c] - lo_off, library.starts[c + 1] - hi_off
        if stop > first:
            candidates.append(np.arange(first, stop))
    if not candidates:
        return []
    u = np.concatenate(candidates)
    at = u[:, None] + offsets_a[None]  # (V, M)
    norms = np.where(full_a[None], norms_all[at], norms_pose[at])
    distances = norms - 2 * products[at, np.arange(len(rows))[None]] + query_norms[None]
    cost = distances @ weights
    if gap.left and gap.right and settings.displacement_weight > 0:
        clip_travel = _travel(*path, np.asarray(gap.a - 1), np.asarray(gap.b))
        lib_travel = _travel(library.root_positions, library.root_yaws, u - 1, u + n)
        cost = cost + settings.displacement_weight * ((lib_travel - clip_travel) ** 2).sum(-1)
    k = min(settings.candidates, len(u))
    best = np.argpartition(cost, k - 1)[:k]
    best = best[np.argsort(cost[best])]
    clip_of = np.searchsorted(library.starts, u[best], side="right") - 1
    return [
        (int(c), int(g - library.starts[c]), float(cost[i])) for c, g, i in zip(clip_of, u[best], best, strict=True)
    ]


def fill_gap(
    out: Motion,
    base: Motion,
    library: MotionLibrary,
    gap: Gap,
    matches: list[tuple[int, int, float]],
    joints: np.ndarray | None = None,
    with_root: bool = True,
) -> None:
    """Write the average of the `matches`, each fitted between the kept frames around `gap`, into out's gap frames:
    the rotations of `joints` (all by default) and, with_root, the root's path and the animated translations.
    base: the clip with its gaps interpolated (supplies the joints above the motion root, see `fit_segments`)."""
    lo = gap.a - 1 if gap.left else gap.a
    hi = gap.b + 1 if gap.right else gap.b
    a_local, b_local = gap.a - lo, gap.b - lo
    joints = np.arange(out.skeleton.n_joints) if joints is None else np.asarray(joints)
    segments = []
    for clip, u, _ in matches:
        first = u - a_local
        segments.append(library.motions[clip].frames(first, first + (hi - lo)))
    rotations, root_positions, translations = fit_segments(
        out.frames(lo, hi), Segments.of(segments), a_local, b_local, joints, with_root, base.frames(lo, hi)
    )
    rotations = np.where(np.sum(rotations * rotations[:1], axis=-1, keepdims=True) < 0, -rotations, rotations)
    mean = rotations.mean(0)
    out.rotations[gap.a : gap.b, joints] = mean / np.linalg.norm(mean, axis=-1, keepdims=True)
    if not with_root:
        return
    out.root_positions[gap.a : gap.b] = root_positions.mean(0)
    if translations is not None:
        out.translations[gap.a : gap.b] = translations.mean(0)


def fill_by_matching(
    out: Motion,
    base: Motion,
    features: np.ndarray,
    kept: np.ndarray,
    library: MotionLibrary,
    groups: list[MatchGroup],
    settings: MatchSettings,
) -> list[tuple[int, int]]:
    """Fill every gap of `out` (the frames where `kept` is False) group by group; returns the gaps [a, b) left
    as they were because no library clip is long enough for them and their context.
    base: the clip with its gaps interpolated; features: its normalised features (only kept frames are read)."""
    path = root_path(base)
    limbs = replace(settings, displacement_weight=0.0)  # the root's travel belongs to the root's group
    unmatched = []
    for a, b in runs(~kept):
        gap = gap_context(kept, a, b, settings.context)
        per_group = [
            find_matches(library, features, kept, path, gap, settings if g.with_root else limbs, g.columns)
            for g in groups
        ]
        if not all(per_group):
            unmatched.append((a, b))
            continue
        for g, matches in zip(groups, per_group, strict=True):
            fill_gap(out, base, library, gap, matches, g.joints, g.with_root)
    return unmatched

"""Motion matching (backend/motion/matching.py) on real Bandai-Namco clips: the search finds a segment that is
in the library, fills gaps so they meet the kept frames, and beats interpolation on an unseen walk."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_motion import BANDAI

from backend.motion.bvh import read_bvh
from backend.motion.dataset import Normalizer
from backend.motion.features import feature_layout, motion_to_features
from backend.motion.matching import (
    MatchSettings,
    MotionLibrary,
    fill_gap,
    find_matches,
    gap_context,
    match_groups,
    root_path,
)
from backend.motion.metrics import interpolation_inbetween
from backend.motion.model import group_columns
from backend.motion.parts import body_parts
from backend.motion.surgery import fill_by_interpolation, runs

WALKS = [BANDAI / f"dataset-1_walk_{style}_001.bvh" for style in ("active", "angry", "childish", "normal", "tired")]


@pytest.fixture(scope="module")
def walks():
    return [read_bvh(p) for p in WALKS]


def _library(motions, normalizer):
    feats = [normalizer.apply(motion_to_features(m)[0]) for m in motions]
    return MotionLibrary.build(motions, feats, feature_layout(motions[0].skeleton))


def _fill(motion, library, normalizer, keep, settings):
    kept = np.zeros(motion.n_frames, bool)
    for a, b in keep:
        kept[a : b + 1] = True
    source = fill_by_interpolation(motion, kept)
    feats = normalizer.apply(motion_to_features(source)[0])
    out = motion.copy()
    gaps = []
    for a, b in runs(~kept):
        gap = gap_context(kept, a, b, settings.context)
        matches = find_matches(library, feats, kept, root_path(source), gap, settings)
        fill_gap(out, source, library, gap, matches)
        gaps.append((gap, matches))
    return out, gaps


def test_gap_context_counts_the_kept_frames_on_each_side():
    kept = np.array([1, 1, 1, 0, 0, 1, 0, 1, 1, 1, 1], bool)
    g = gap_context(kept, 3, 5, 2)
    assert (g.left, g.right, g.length) == (2, 1, 2)
    g = gap_context(kept, 6, 7, 10)
    assert (g.left, g.right) == (1, 4)
    assert gap_context(np.array([0, 0, 1], bool), 0, 2, 10).left == 0


def test_a_segment_in_the_library_is_found_and_written_back_as_it_was(walks):
    clip = walks[0]
    normalizer = Normalizer.fit([motion_to_features(m)[0] for m in walks])
    library = _library(walks[1:] + [clip], normalizer)
    settings = MatchSettings(candidates=1)
    out, [(_, before), (gap, matches), (_, after)] = _fill(clip, library, normalizer, [(50, 59), (90, 90)], settings)
    (clip_index, u, cost) = matches[0]
    assert (clip_index, u) == (len(walks) - 1, 60) and cost < 1e-6
    dots = np.abs(np.sum(out.rotations[60:90].astype(np.float64) * clip.rotations[60:90], axis=-1))
    assert np.allclose(dots, 1.0, atol=1e-6)
    assert np.allclose(out.root_positions[60:90], clip.root_positions[60:90], atol=1e-3)
    assert before and after  # the frames before 50 and after 90, with context on one side only, matched too


def test_filled_gaps_meet_the_kept_frames_and_no_match_when_no_clip_is_long_enough(walks):
    clip, others = walks[0], walks[1:]
    normalizer = Normalizer.fit([motion_to_features(m)[0] for m in walks])
    library = _library(others, normalizer)
    keep = [(0, 39), (70, clip.n_frames - 1)]
    out, _ = _fill(clip, library, normalizer, keep, MatchSettings())
    assert np.array_equal(out.rotations[:40], clip.rotations[:40])
    assert np.array_equal(out.rotations[70:], clip.rotations[70:])
    pos, src = out.global_positions(), clip.global_positions()
    biggest = np.linalg.norm(np.diff(src, axis=0), axis=-1).max()
    for seam in (39, 69):
        assert np.linalg.norm(pos[seam + 1] - pos[seam], axis=-1).max() <= 1.5 * biggest
    first_30 = type(clip)(
        clip.skeleton, clip.rotations[:30], clip.root_positions[:30], clip.fps, "short", clip.translations[:30]
    )
    short = _library([first_30], normalizer)
    kept = np.zeros(clip.n_frames, bool)
    kept[:40] = kept[70:] = True
    gap = gap_context(kept, 40, 70, 10)
    feats = normalizer.apply(motion_to_features(clip)[0])
    assert find_matches(short, feats, kept, root_path(clip), gap, MatchSettings()) == []


def test_matching_beats_interpolation_on_a_walk_it_has_not_seen(walks):
    """15-frame transitions (LAFAN1-style: 10 context frames and the target frame) in an unseen style."""
    clip, others = walks[-1], walks[:-1]
    normalizer = Normalizer.fit([motion_to_features(m)[0] for m in others])
    library = _library(others, normalizer)
    truth = clip.global_positions()
    ours, interp = [], []
    for s in range(20, clip.n_frames - 30, 15):
        end = s + 15
        out, _ = _fill(clip, library, normalizer, [(s - 10, s - 1), (end, end)], MatchSettings())
        ours.append(np.linalg.norm(out.global_positions()[s:end] - truth[s:end], axis=-1).mean())
        lerp = interpolation_inbetween(clip, s, end)
        interp.append(np.linalg.norm(lerp.global_positions()[s:end] - truth[s:end], axis=-1).mean())
    assert len(ours) >= 8
    assert np.mean(ours) < 0.8 * np.mean(interp), (np.mean(ours), np.mean(interp))
    print(np.mean(ours), np.mean(interp))


def test_the_root_and_legs_match_together_and_each_arm_on_its_own(walks):
    sk = walks[0].skeleton
    parts = body_parts(sk)
    groups = match_groups(sk, parts, group_columns(feature_layout(sk), parts))
    names = [[sk.names[j] for j in g.joints] for g in groups]
    assert [g.with_root for g in groups] == [True, False, False]
    assert set(names[0]) == {sk.names[j] for p in ("torso", "left_leg", "right_leg") for j in parts[p]}
    arms = sorted(sorted(sk.names[j] for j in parts[p]) for p in ("left_arm", "right_arm"))
    assert sorted(map(sorted, names[1:])) == arms
    columns = np.concatenate([g.columns for g in groups])
    assert sorted(columns.tolist()) == list(range(feature_layout(sk).dim))  # every feature column, once


def test_an_arm_matched_on_its_own_changes_only_that_arm(walks):
    clip = walks[0]
    sk = clip.skeleton
    normalizer = Normalizer.fit([motion_to_features(m)[0] for m in walks])
    library = _library(walks[1:], normalizer)
    parts = body_parts(sk)
    arm = match_groups(sk, parts, group_columns(feature_layout(sk), parts))[1]
    kept = np.ones(clip.n_frames, bool)
    kept[60:90] = False
    source = fill_by_interpolation(clip, kept)
    feats = normalizer.apply(motion_to_features(source)[0])
    gap = gap_context(kept, 60, 90, 10)
    matches = find_matches(library, feats, kept, root_path(source), gap, MatchSettings(), arm.columns)
    out = source.copy()
    fill_gap(out, source, library, gap, matches, arm.joints, with_root=False)
    others = np.setdiff1d(np.arange(sk.n_joints), arm.joints)
    assert np.array_equal(out.rotations[:, others], source.rotations[:, others])
    assert np.array_equal(out.root_positions, source.root_positions)
    assert not np.allclose(out.rotations[60:90, arm.joints], source.rotations[60:90, arm.joints], atol=1e-3)


def test_the_root_height_scale_weighs_library_and_query_alike(walks):
    normalizer = Normalizer.fit([motion_to_features(m)[0] for m in walks])
    library_motions, clip = walks[:4], walks[4]
    layout = feature_layout(clip.skeleton)
    feats = [normalizer.apply(motion_to_features(m)[0]) for m in library_motions]
    kept = np.ones(clip.n_frames, bool)
    kept[60:90] = False
    source = fill_by_interpolation(clip, kept)
    query = normalizer.apply(motion_to_features(source)[0])
    gap, path, settings = gap_context(kept, 60, 90, 10), root_path(source), MatchSettings(candidates=8)

    def height_times(f, k):
        f = f.copy()
        f[:, layout.root_height] *= k
        return f

    scaled = find_matches(MotionLibrary.build(library_motions, feats, layout, 5.0), query, kept, path, gap, settings)
    by_hand = MotionLibrary.build(library_motions, [height_times(f, 5.0) for f in feats], layout)
    expected = find_matches(by_hand, height_times(query, 5.0), kept, path, gap, settings)
    assert [m[:2] for m in scaled] == [m[:2] for m in expected]
    assert np.allclose([m[2] for m in scaled], [m[2] for m in expected])
    unscaled = find_matches(MotionLibrary.build(library_motions, feats, layout), query, kept, path, gap, settings)
    assert [m[:2] for m in unscaled] != [m[:2] for m in scaled]  # the scale changes what is chosen

"""Motion surgery (backend/motion/surgery.py): fitting K candidate segments into a gap at once gives, for each,
what fitting it alone gives, and every fitted segment meets the kept frames on both sides."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_motion import BANDAI

from backend.motion.bvh import read_bvh
from backend.motion.surgery import Segments, fit_into, fit_segments


@pytest.fixture(scope="module")
def clips():
    names = ("walk_normal", "walk-left_normal", "walk_angry", "byebye_happy")
    return [read_bvh(BANDAI / f"dataset-1_{name}_001.bvh") for name in names]


@pytest.mark.parametrize("with_root", [True, False])
@pytest.mark.parametrize(("a", "b"), [(1, 31), (0, 20), (10, 41)])  # both sides kept, right only, left only
def test_fitting_segments_together_equals_fitting_each_alone(clips, with_root, a, b):
    clip, *others = clips
    target = clip.frames(40, 81)
    segments = [m.frames(5 + 7 * i, 46 + 7 * i) for i, m in enumerate(others)]
    joints = np.arange(clip.skeleton.n_joints) if with_root else np.array([6, 7, 8, 9])
    rotations, roots, translations = fit_segments(target, Segments.of(segments), a, b, joints, with_root, target)
    assert rotations.shape == (3, b - a, len(joints), 4)
    for k, segment in enumerate(segments):
        alone = target.copy()
        fit_into(alone, segment, a, b, joints, with_root, target)
        assert np.array_equal(alone.rotations[a:b, joints], rotations[k].astype(np.float32))
        if with_root:
            assert np.array_equal(alone.root_positions[a:b], roots[k].astype(np.float32))
            assert np.array_equal(alone.translations[a:b], translations[k].astype(np.float32))
        else:
            assert roots is None and translations is None


def test_fitted_segments_meet_the_kept_frames(clips):
    clip, *others = clips
    target = clip.frames(40, 81)
    segments = [m.frames(5, 46) for m in others]
    a, b = 1, 40
    joints = np.arange(clip.skeleton.n_joints)
    rotations, roots, translations = fit_segments(target, Segments.of(segments), a, b, joints, True, target)
    steps = np.linalg.norm(np.diff(clip.global_positions(), axis=0), axis=-1).max()
    for k in range(len(segments)):
        filled = target.copy()
        filled.rotations[a:b] = rotations[k]
        filled.root_positions[a:b] = roots[k]
        filled.translations[a:b] = translations[k]
        pos = filled.global_positions()
        for seam in (a - 1, b - 1):  # into the gap, and out of it
            assert np.linalg.norm(pos[seam + 1] - pos[seam], axis=-1).max() <= 2 * steps
    with pytest.raises(ValueError, match="all have animated translations, or none"):
        no_trans = segments[1].copy()
        no_trans.translations = None
        Segments.of([segments[0], no_trans])

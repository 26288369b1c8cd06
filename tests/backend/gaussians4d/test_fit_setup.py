"""What a fit starts from (backend/gaussians4d/fit_setup.py)."""

from __future__ import annotations

import numpy as np
from moving_scenes import SMALL_HALF, SMALL_START, cameras, small_traveller_video

from backend.gaussians4d.fit_setup import initial_points


def test_a_small_object_that_travels_far_starts_from_every_point_asked_for():
    """The points are drawn in the object's box at the first time, not in its whole path's box (about 200× larger
    here): drawn there, a chicken crossing a wide capture started from 218 of 2,000 points."""
    video = small_traveller_video(cameras(4, 64), [0.0, 1.0], 64)
    points = initial_points(video, 500, np.random.default_rng(0))
    assert points.shape == (500, 3)
    off = np.abs(points - SMALL_START).max(axis=1)
    assert off.max() < 2.0 * SMALL_HALF, off.max()  # inside the cube at t = 0 (its hull is a little larger)

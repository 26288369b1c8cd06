"""E_RMS and linear blend skinning against direct, loop-by-loop definitions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from backend.rig.metrics import bbox_diagonal, e_rms
from backend.rig.skinning import bone_transforms, linear_blend_skin


def _rigid(rng: np.random.Generator, n: int) -> np.ndarray:
    m = np.tile(np.eye(4), (n, 1, 1))
    m[:, :3, :3] = Rotation.random(n, random_state=rng.integers(1 << 31)).as_matrix()
    m[:, :3, 3] = rng.normal(size=(n, 3))
    return m


def test_e_rms_matches_the_definition():
    rng = np.random.default_rng(0)
    rest = rng.uniform(-1, 2, size=(50, 3)).astype(np.float32)
    frames = rng.normal(size=(7, 50, 3)).astype(np.float32)
    rec = frames + rng.normal(scale=0.01, size=frames.shape).astype(np.float32)
    diag = np.linalg.norm(rest.max(0) - rest.min(0))
    want = 1000 * np.linalg.norm((frames - rec).astype(np.float64)) / np.sqrt(3 * 7 * 50) * 2 / diag
    assert e_rms(frames, rec, rest) == pytest.approx(want, rel=1e-6)
    assert e_rms(frames, frames, rest) == 0.0
    assert bbox_diagonal(rest) == pytest.approx(diag)
    with pytest.raises(ValueError):
        e_rms(frames, rec[:, :-1], rest)


@pytest.mark.parametrize("homogeneous", [True, False])
def test_linear_blend_skin_matches_a_loop(homogeneous):
    rng = np.random.default_rng(1)
    v, b, t, k = 40, 5, 3, 3
    rest = rng.normal(size=(v, 3)).astype(np.float32)
    index = rng.integers(0, b, size=(v, k)).astype(np.int32)
    value = rng.uniform(size=(v, k)).astype(np.float32)
    value /= value.sum(1, keepdims=True)
    rest_m = _rigid(rng, b)
    pose = _rigid(rng, t * b).reshape(t, b, 4, 4)
    skin = bone_transforms(pose, rest_m)
    np.testing.assert_allclose(skin, pose @ np.linalg.inv(rest_m), atol=1e-12)
    out = linear_blend_skin(rest, index, value, skin if homogeneous else skin[..., :3, :])
    assert out.shape == (t, v, 3) and out.dtype == np.float32
    want = np.zeros((t, v, 3))
    for f in range(t):
        for i in range(v):
            for j in range(k):
                want[f, i] += value[i, j] * (skin[f, index[i, j]] @ np.r_[rest[i], 1.0])[:3]
    np.testing.assert_allclose(out, want, atol=1e-5)

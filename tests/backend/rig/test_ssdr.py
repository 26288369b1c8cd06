"""The free-bone solver (SSDR, Dem Bones' setting) on exact synthetic rigs and a real sequence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from backend.rig.metrics import e_rms
from backend.rig.skinning import linear_blend_skin
from backend.rig.ssdr import FreeSolve, solve_free
from shared.errors import InputError, JobCancelled

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "mesh-sequences"


# --------------------------------------------------------------------------------------- synthetic rigs


def _box(rng: np.random.Generator, lo, hi, n: int) -> np.ndarray:
    return rng.uniform(lo, hi, size=(n, 3))


def _pose(rest: np.ndarray, labels: np.ndarray, parents: list[int], pivots: np.ndarray, rots: list) -> np.ndarray:
    """Forward kinematics: part p turns by rots[p] about pivots[p] relative to its parent."""
    glob = []
    for p, parent in enumerate(parents):
        local = np.eye(4)
        local[:3, :3] = rots[p]
        local[:3, 3] = pivots[p] - rots[p] @ pivots[p]
        glob.append(local if parent < 0 else glob[parent] @ local)
    m = np.stack(glob)  # (P,4,4)
    return np.einsum("vij,vj->vi", m[labels, :3, :3], rest) + m[labels, :3, 3]


def hinge_chain(frames: int = 16, n: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three boxes along x, each hinged to the previous about z at their shared face."""
    rng = np.random.default_rng(seed)
    parts = [_box(rng, (i, -0.2, -0.2), (i + 1, 0.2, 0.2), n) for i in range(3)]
    rest = np.concatenate(parts)
    labels = np.repeat(np.arange(3), n)
    pivots = np.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]])
    out = []
    for t in range(frames):
        ang = [0.3 * np.sin(0.4 * t), 0.9 * np.sin(0.5 * t + 1.0), 1.1 * np.sin(0.7 * t + 2.0)]
        rots = [Rotation.from_rotvec([0, 0, a]).as_matrix() for a in ang]
        out.append(_pose(rest, labels, [-1, 0, 1], pivots, rots) + [0.05 * t, 0, 0])
    return rest.astype(np.float32), np.stack(out).astype(np.float32), labels


def branching_tree(frames: int = 16, n: int = 120, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A torso with two arms and a head (ball joints): a tree with a branch at the shoulders."""
    rng = np.random.default_rng(seed)
    boxes = [
        ((-0.3, 0.0, -0.2), (0.3, 1.2, 0.2)),  # torso
        ((0.3, 0.9, -0.1), (1.2, 1.1, 0.1)),  # right arm
        ((-1.2, 0.9, -0.1), (-0.3, 1.1, 0.1)),  # left arm
        ((-0.15, 1.2, -0.15), (0.15, 1.6, 0.15)),  # head
        ((1.2, 0.9, -0.1), (1.9, 1.1, 0.1)),  # right forearm
    ]
    parents = [-1, 0, 0, 0, 1]
    pivots = np.array([[0, 0.6, 0], [0.3, 1.0, 0], [-0.3, 1.0, 0], [0, 1.2, 0], [1.2, 1.0, 0]], float)
    rest = np.concatenate([_box(rng, lo, hi, n) for lo, hi in boxes])
    labels = np.repeat(np.arange(len(boxes)), n)
    axes = rng.normal(size=(len(boxes), 3))
    out = []
    for t in range(frames):
        rots = [Rotation.from_rotvec(axes[p] * 0.6 * np.sin(0.45 * t + p)).as_matrix() for p in range(len(boxes))]
        out.append(_pose(rest, labels, parents, pivots, rots))
    return rest.astype(np.float32), np.stack(out).astype(np.float32), labels


def part_agreement(found: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of vertices whose found part maps to their true part (majority mapping, one-to-one)."""
    pairs = np.zeros((found.max() + 1, truth.max() + 1), int)
    np.add.at(pairs, (found, truth), 1)
    best = pairs.argmax(axis=1)
    if len(set(best.tolist())) != len(best):
        return 0.0  # two found parts claim one true part: not a relabelling
    return float(pairs[np.arange(len(best)), best].sum() / len(found))


def assert_valid(sol: FreeSolve, v: int, t: int, bones: int, k: int) -> None:
    assert sol.transforms.shape == (t, bones, 3, 4) and sol.transforms.dtype == np.float32
    assert sol.weight_index.shape == (v, k) and sol.weight_index.dtype == np.int32
    assert sol.weight_value.shape == (v, k) and sol.weight_value.dtype == np.float32
    assert sol.labels.shape == (v,) and sol.labels.dtype == np.int32
    assert (sol.weight_value >= 0).all()
    np.testing.assert_allclose(sol.weight_value.sum(axis=1), 1.0, atol=1e-5)
    assert ((sol.weight_index >= 0) & (sol.weight_index < bones)).all()
    r = sol.transforms[..., :3].astype(np.float64)
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-4)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-4)
    assert len(sol.history) == sol.iterations and sol.e_rms == sol.history[-1]


@pytest.mark.parametrize("make, bones", [(hinge_chain, 3), (branching_tree, 5)])
def test_recovers_rigid_parts_exactly(make, bones):
    rest, frames, truth = make()
    sol = solve_free(rest, frames, bones, iterations=10)
    assert_valid(sol, len(rest), len(frames), bones, 4)
    assert sol.e_rms < 0.5
    assert part_agreement(sol.labels, truth) > 0.97
    rec = linear_blend_skin(rest, sol.weight_index, sol.weight_value, sol.transforms)
    assert e_rms(frames, rec, rest) == pytest.approx(sol.e_rms, rel=1e-3, abs=1e-3)  # the reported error is real


def test_given_labels_seed_the_parts_and_weights_obey_max_influences():
    rest, frames, truth = branching_tree()
    sol = solve_free(rest, frames, 5, labels=truth * 7 + 3, max_influences=2, iterations=5)
    assert_valid(sol, len(rest), len(frames), 5, 2)
    assert part_agreement(sol.labels, truth) == 1.0
    assert sol.e_rms < 0.5


def test_more_bones_than_parts_still_fits_and_history_never_rises_much():
    rest, frames, _ = hinge_chain()
    sol = solve_free(rest, frames, 6, iterations=8, tolerance=0.0)
    assert_valid(sol, len(rest), len(frames), 6, 4)
    assert sol.e_rms < 0.5
    # 0.05: the per-iteration errors carry float32 rounding, visible only this close to an exact fit
    assert all(b <= a * 1.01 + 0.05 for a, b in zip(sol.history, sol.history[1:], strict=False))


def test_deterministic_with_a_seed():
    rest, frames, _ = branching_tree(frames=80)  # > the init's frame budget, so the seed picks frames
    a = solve_free(rest, frames, 5, iterations=4, seed=3)
    b = solve_free(rest, frames, 5, iterations=4, seed=3)
    np.testing.assert_array_equal(a.transforms, b.transforms)
    np.testing.assert_array_equal(a.weight_index, b.weight_index)
    np.testing.assert_array_equal(a.weight_value, b.weight_value)
    assert a.history == b.history


def test_progress_and_cancel():
    rest, frames, _ = hinge_chain()
    seen = []
    solve_free(rest, frames, 3, iterations=3, tolerance=0.0, progress=lambda *a: seen.append(a))
    solves = [s for s in seen if s[0] == "solve"]
    assert len(solves) == 3 and solves[-1][1] == pytest.approx(1.0) and "E_RMS" in solves[-1][2]

    calls = []

    def cancel():
        calls.append(1)
        if len(calls) >= 2:
            raise JobCancelled("cancelled")

    with pytest.raises(JobCancelled):
        solve_free(rest, frames, 3, iterations=30, check_cancelled=cancel)
    assert len(calls) == 2


# ------------------------------------------------------------------------------------------ bad input


def test_input_errors():
    rest, frames, _ = hinge_chain(frames=4, n=10)
    with pytest.raises(InputError, match="at least 2 frames"):
        solve_free(rest, frames[:1], 2)
    bad = frames.copy()
    bad[2, 7, 1] = np.nan
    with pytest.raises(InputError, match="frame 2, vertex 7"):
        solve_free(rest, bad, 2)
    with pytest.raises(InputError, match="Topology mismatch"):
        solve_free(rest, frames[:, :-1], 2)
    with pytest.raises(InputError, match="nothing moves: there is nothing to rig"):
        solve_free(rest, np.broadcast_to(rest, (5, *rest.shape)).copy(), 2)
    with pytest.raises(InputError, match="only 30 vertices"):
        solve_free(rest, frames, 31)
    big_rest = np.random.default_rng(0).normal(size=(20_000, 3))
    big = big_rest[None] + np.linspace(0, 1, 3)[:, None, None]
    with pytest.raises(InputError, match=r"1000 bones on 20000 vertices would need about 149 GiB.*at most 231 bones"):
        solve_free(big_rest, big, 1000)  # refused up front, before any allocation
    for bones in (0, -1):
        with pytest.raises(InputError, match="at least 1"):
            solve_free(rest, frames, bones)
    with pytest.raises(InputError, match="3 parts but only 2 bones"):
        solve_free(rest, frames, 2, labels=np.repeat(np.arange(3), 10))


# ------------------------------------------------------------------------------------------- real data


@pytest.mark.skipif(not (DATA / "horse-gallop.npz").exists(), reason="shared mesh sequences not present")
def test_horse_gallop_small_rig():
    d = np.load(DATA / "horse-gallop.npz")
    rest, frames, faces = d["rest"], d["frames"], d["faces"]
    sol = solve_free(rest, frames, 8, faces=faces, iterations=6)
    assert_valid(sol, len(rest), len(frames), 8, 4)
    rec = linear_blend_skin(rest, sol.weight_index, sol.weight_value, sol.transforms)
    measured = e_rms(frames, rec, rest)
    assert measured == pytest.approx(sol.e_rms, rel=1e-3)
    assert measured < 15.0  # measured 13.2 here; Dem Bones at 8 bones (30 iterations): 20.2


def test_tiny_meshes_get_every_bone_they_ask_for():
    rest, frames, _ = hinge_chain(n=10)
    for v, bones in [(4, 4), (12, 5), (30, 30)]:
        sol = solve_free(rest[:v], frames[:, :v], bones, iterations=3)
        assert_valid(sol, v, len(frames), bones, 4)
        assert np.bincount(sol.labels, minlength=bones).min() >= 1
        assert sol.e_rms < 0.5


def test_recovers_blended_weights_of_a_smoothly_skinned_chain():
    """Ground truth with real blending: near each joint a vertex is skinned to its part and the parent part
    (linear ramp over 0.3 units, up to 50/50 at the joint), as an artist's smooth weights are. The solver
    must find the same bones and weights, not only a low error."""
    from scipy.optimize import linear_sum_assignment
    from synthetic_rig import chain

    seq = chain(frames=24, seed=3)
    rest = seq.rest.astype(np.float64)
    n, v = len(seq.parents), len(rest)
    truth = np.zeros((v, n))
    along = rest[:, 0] - seq.joints[seq.labels, 0]  # distance past the part's own joint, along the chain
    ramp = np.clip(0.5 * (1.0 - along / 0.3), 0.0, 0.5) * (seq.parents[seq.labels] >= 0)
    truth[np.arange(v), seq.labels] = 1.0 - ramp
    truth[np.arange(v), np.maximum(seq.parents[seq.labels], 0)] += ramp
    hom = np.concatenate([rest, np.ones((v, 1))], axis=1)
    frames = np.einsum("vp,tpij,vj->tvi", truth, seq.transforms, hom).astype(np.float32)

    sol = solve_free(seq.rest, frames, n, max_influences=2, iterations=40)
    assert_valid(sol, v, len(frames), n, 2)
    found = np.zeros((v, n))
    np.add.at(found, (np.arange(v)[:, None], sol.weight_index), sol.weight_value)
    rows, cols = linear_sum_assignment(-(truth.T @ found))  # match found bones to true parts
    found = found[:, cols[np.argsort(rows)]]
    error = np.abs(found - truth).sum(axis=1) / 2  # per vertex, 0 = same weights, 1 = disjoint
    print(f"blended chain: E_RMS {sol.e_rms:.4f}, weight error mean {error.mean():.4f}, max {error.max():.4f}")
    assert sol.e_rms < 0.5
    assert error.mean() < 0.03 and np.percentile(error, 95) < 0.1

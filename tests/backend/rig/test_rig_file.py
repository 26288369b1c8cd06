"""The rig file (backend.rig.rig_file): save/load, the issue's skinning formula, local rotations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from synthetic_rig import branching, free_from_labels

from backend.rig.rig_file import Rig
from backend.rig.skeleton import build_skeleton
from shared.errors import InputError
from shared.results import check_rig


@pytest.fixture(scope="module")
def seq():
    return branching()


@pytest.fixture(scope="module", params=["skeleton", "free"])
def rig(request, seq) -> Rig:
    free = free_from_labels(seq)
    if request.param == "free":
        return Rig.from_free(free, seq.rest, name="branch", fps=25.0)
    return Rig.from_skeleton(build_skeleton(seq.rest, seq.frames, free), name="branch", fps=25.0)


def issue_formula(rig: Rig, rest: np.ndarray) -> np.ndarray:
    """v_t = Σ_k w[v,k] · (pose[t,b] @ inv(rest[b])) @ [rest_v, 1], b = index[v,k] — written out plainly."""
    hom = np.concatenate([rest.astype(np.float64), np.ones((len(rest), 1))], axis=1)
    out = np.zeros((rig.frame_count, len(rest), 4))
    for k in range(rig.weight_index.shape[1]):
        b = rig.weight_index[:, k]
        skin = rig.pose_matrices[:, b].astype(np.float64) @ np.linalg.inv(rig.rest_matrices[b].astype(np.float64))
        out += rig.weight_value[None, :, k, None] * np.einsum("tvij,vj->tvi", skin, hom)
    return out[..., :3]


def test_save_load_round_trip_without_pickle(rig: Rig, tmp_path) -> None:
    path = rig.save(tmp_path / "r")
    assert path.name == "r.npz"
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {
            "parents", "bone_names", "rest_matrices", "pose_matrices", "weight_index", "weight_value",
            "mode", "e_rms", "name", "fps",
        }  # fmt: skip
        assert data["bone_names"].dtype.kind == "U" and data["mode"].shape == () and data["e_rms"].shape == ()
    back = Rig.load(path)
    for key in ("parents", "rest_matrices", "pose_matrices", "weight_index", "weight_value"):
        got, want = getattr(back, key), getattr(rig, key)
        assert got.dtype == want.dtype and np.array_equal(got, want), key
    assert back.bone_names == rig.bone_names and back.mode == rig.mode
    assert (back.e_rms, back.name, back.fps) == (rig.e_rms, "branch", 25.0)


def test_reconstruct_is_the_issue_formula(rig: Rig, seq) -> None:
    got = rig.reconstruct(seq.rest)
    assert got.shape == seq.frames.shape and got.dtype == np.float32
    assert np.allclose(got, issue_formula(rig, seq.rest), atol=1e-5)
    assert np.abs(got - seq.frames).max() < 0.02  # and it reproduces the motion


def test_local_rotations_recompose_to_the_pose_matrices(rig: Rig) -> None:
    quat, loc = rig.local_rotations()
    t, b = rig.frame_count, rig.bone_count
    assert quat.shape == (t, b, 4) and loc.shape == (t, b, 3)
    assert np.allclose(np.linalg.norm(quat, axis=2), 1.0)
    assert (np.einsum("tbi,tbi->tb", quat[1:], quat[:-1]) >= 0).all()  # sign-continuous for keying
    basis = np.tile(np.eye(4), (t, b, 1, 1))
    basis[..., :3, :3] = Rotation.from_quat(quat[..., [1, 2, 3, 0]].reshape(-1, 4)).as_matrix().reshape(t, b, 3, 3)
    basis[..., :3, 3] = loc
    rest = rig.rest_matrices.astype(np.float64)
    pose = np.zeros((t, b, 4, 4))
    for j in range(b):  # P[b] = P[parent] @ inv(R[parent]) @ R[b] @ basis  (parents come first)
        p = rig.parents[j]
        local = rest[j] if p < 0 else np.linalg.inv(rest[p]) @ rest[j]
        pose[:, j] = (local if p < 0 else pose[:, p] @ local) @ basis[:, j]
    assert np.allclose(pose, rig.pose_matrices, atol=1e-5)
    if rig.mode == "skeleton":  # joints stay put: children are keyed by rotation only
        assert np.abs(loc[:, 1:]).max() < 1e-4


def test_from_free_puts_identity_bones_at_weight_centroids(seq) -> None:
    free = free_from_labels(seq)
    rig = Rig.from_free(free, seq.rest)
    assert (rig.parents == -1).all() and rig.mode == "free"
    assert np.allclose(rig.rest_matrices[:, :3, :3], np.eye(3))
    centroids = np.stack([seq.rest[seq.labels == p].mean(axis=0) for p in range(len(seq.parents))])
    assert np.allclose(rig.rest_matrices[:, :3, 3], centroids, atol=1e-5)
    skin = rig.pose_matrices.astype(np.float64) @ np.linalg.inv(rig.rest_matrices.astype(np.float64))
    assert np.allclose(skin[..., :3, :], free.transforms, atol=1e-5)


def test_result_is_checked_and_bad_files_are_refused(rig: Rig, tmp_path) -> None:
    meta, arrays = rig.to_result()
    assert check_rig(arrays, meta, vertex_count=rig.weight_index.shape[0]) == rig.bone_count
    assert meta["mode"] == rig.mode and meta["fps"] == 25.0 and isinstance(meta["e_rms"], float)
    assert Rig.from_result(meta, arrays).bone_names == rig.bone_names
    bad = Rig(**{**rig.__dict__, "weight_value": rig.weight_value * 2})
    with pytest.raises(InputError, match="sum to"):
        bad.to_result()
    np.savez(tmp_path / "partial.npz", parents=rig.parents)
    with pytest.raises(InputError, match="lacks"):
        Rig.load(tmp_path / "partial.npz")
    np.savez(
        tmp_path / "pickled.npz",
        **{
            k: np.array([object()])
            for k in ("parents", "bone_names", "rest_matrices", "pose_matrices", "weight_index", "weight_value", "mode")
        },
    )
    with pytest.raises(InputError, match="not a readable"):
        Rig.load(tmp_path / "pickled.npz")
    with pytest.raises(InputError, match="does not exist"):
        Rig.load(tmp_path / "none.npz")
    with pytest.raises(InputError, match="vertices"):
        rig.reconstruct(np.zeros((3, 3), np.float32))

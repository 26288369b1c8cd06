"""The rig file: one documented npz every tool can read and check against its input.

Arrays (no pickle; `np.load(path, allow_pickle=False)` reads it):

    parents        (B,) int32        parent bone index, -1 = root
    bone_names     (B,) unicode      fixed-width string array ("<U…")
    rest_matrices  (B,4,4) float32   bone → object transform in the rest pose (rigid)
    pose_matrices  (T,B,4,4) float32 bone → object transform per frame (rigid)
    weight_index   (V,K) int32       bones influencing each vertex
    weight_value   (V,K) float32     their weights: ≥ 0, rows sum to 1, unused slots 0
    mode           0-d unicode       "free" (independent bones) or "skeleton" (a hierarchy with joints)
    e_rms          0-d float64       E_RMS of the rig against the sequence it came from (Kavan et al. 2010)
    name           0-d unicode       the sequence's name
    fps            0-d float64       frames per second, 0 when unknown

Skinning is exactly (shared/results.py, `rig`):

    v_t = Σ_k weight_value[v,k] · (pose_matrices[t,b] @ inv(rest_matrices[b])) @ [rest_v, 1],  b = weight_index[v,k]

Local motion (what Blender keys on pose bones), with P = pose_matrices[t], R = rest_matrices:

    pose_local = inv(P[parent]) @ P[b]      (a root: P[b])
    rest_local = inv(R[parent]) @ R[b]      (a root: R[b])
    basis      = inv(rest_local) @ pose_local   → rotation_quaternion (w,x,y,z) + location

so P[b] = P[parent] @ rest_local @ basis. In `skeleton` mode a child's location is 0 (joints stay put).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from shared.errors import InputError
from shared.results import check_rig

from .skinning import bone_transforms, linear_blend_skin
from .ssdr import FreeSolve

ARRAY_KEYS = ("parents", "bone_names", "rest_matrices", "pose_matrices", "weight_index", "weight_value")


@dataclass
class Rig:
    """A rig: bones (hierarchy, rest and per-frame matrices) and sparse skin weights; see the module doc."""

    parents: np.ndarray
    bone_names: list[str]
    rest_matrices: np.ndarray
    pose_matrices: np.ndarray
    weight_index: np.ndarray
    weight_value: np.ndarray
    mode: str
    e_rms: float
    name: str = "rig"
    fps: float = 0.0

    @property
    def bone_count(self) -> int:
        return int(self.parents.shape[0])

    @property
    def frame_count(self) -> int:
        return int(self.pose_matrices.shape[0])

    # ----------------------------------------------------------------------------------- building

    @classmethod
    def from_free(cls, free: FreeSolve, rest: np.ndarray, name: str = "rig", fps: float = 0.0) -> Rig:
        """Free bones (no hierarchy): each bone's rest frame has the identity rotation at its weight centroid
        (the rest mean when it has no weight); pose = [R|t] @ rest, so the skinning transform is [R|t]."""
        rest64 = np.asarray(rest, dtype=np.float64)
        m = np.asarray(free.transforms, dtype=np.float64)
        t, b = m.shape[:2]
        dense = np.zeros((rest64.shape[0], b))
        k = free.weight_index.shape[1]
        np.add.at(
            dense, (np.repeat(np.arange(rest64.shape[0]), k), free.weight_index.ravel()), free.weight_value.ravel()
        )
        mass = dense.sum(axis=0)
        centroid = np.where(mass[:, None] > 0, dense.T @ rest64 / np.maximum(mass, 1e-300)[:, None], rest64.mean(0))
        rest_m = np.tile(np.eye(4), (b, 1, 1))
        rest_m[:, :3, 3] = centroid
        skin = np.zeros((t, b, 4, 4))
        skin[..., :3, :] = m
        skin[..., 3, 3] = 1.0
        return cls(
            parents=np.full(b, -1, np.int32),
            bone_names=[f"bone_{i:02d}" for i in range(b)],
            rest_matrices=rest_m.astype(np.float32),
            pose_matrices=(skin @ rest_m[None]).astype(np.float32),
            weight_index=np.asarray(free.weight_index, np.int32),
            weight_value=np.asarray(free.weight_value, np.float32),
            mode="free",
            e_rms=float(free.e_rms),
            name=name,
            fps=float(fps),
        )

    @classmethod
    def from_skeleton(cls, solve: Any, name: str = "rig", fps: float = 0.0) -> Rig:
        """From a `skeleton.SkeletonSolve`."""
        return cls(
            parents=np.asarray(solve.parents, np.int32),
            bone_names=list(solve.bone_names),
            rest_matrices=np.asarray(solve.rest_matrices, np.float32),
            pose_matrices=np.asarray(solve.pose_matrices, np.float32),
            weight_index=np.asarray(solve.weight_index, np.int32),
            weight_value=np.asarray(solve.weight_value, np.float32),
            mode="skeleton",
            e_rms=float(solve.e_rms),
            name=name,
            fps=float(fps),
        )

    # ------------------------------------------------------------------------------------- files

    def save(self, path: str | Path) -> Path:
        """Write the documented npz (compressed); returns the path (with .npz appended if missing)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        meta, arrays = self.to_result()
        width = max(1, *(len(n) for n in self.bone_names))
        np.savez_compressed(
            path,
            **{k: v for k, v in arrays.items()},
            bone_names=np.array(self.bone_names, dtype=f"<U{width}"),
            mode=np.array(self.mode),
            e_rms=np.array(float(self.e_rms)),
            name=np.array(self.name),
            fps=np.array(float(self.fps)),
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> Rig:
        """Read and check a rig npz written by `save` (or by anyone following the module doc)."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"Rig file {str(path)!r} does not exist.")
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [k for k in (*ARRAY_KEYS, "mode") if k not in data.files]
                if missing:
                    raise InputError(f"{path.name} is not a rig file: it lacks {', '.join(missing)}.")
                d = {k: data[k] for k in data.files}
        except InputError:
            raise
        except Exception as exc:  # zip errors, pickled object arrays
            raise InputError(f"{path.name} is not a readable rig npz: {exc}") from exc
        rig = cls(
            parents=d["parents"],
            bone_names=[str(n) for n in d["bone_names"].tolist()],
            rest_matrices=d["rest_matrices"],
            pose_matrices=d["pose_matrices"],
            weight_index=d["weight_index"],
            weight_value=d["weight_value"],
            mode=str(d["mode"]),
            e_rms=float(d["e_rms"]) if "e_rms" in d else float("nan"),
            name=str(d["name"]) if "name" in d else path.stem,
            fps=float(d["fps"]) if "fps" in d else 0.0,
        )
        rig.to_result()  # checks it
        return rig

    # --------------------------------------------------------------------------------- the result

    def to_result(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(meta, arrays) of the shared `rig` result type, checked with shared.results.check_rig."""
        arrays = {
            "parents": np.ascontiguousarray(self.parents, dtype=np.int32),
            "rest_matrices": np.ascontiguousarray(self.rest_matrices, dtype=np.float32),
            "pose_matrices": np.ascontiguousarray(self.pose_matrices, dtype=np.float32),
            "weight_index": np.ascontiguousarray(self.weight_index, dtype=np.int32),
            "weight_value": np.ascontiguousarray(self.weight_value, dtype=np.float32),
        }
        meta: dict[str, Any] = {
            "name": str(self.name),
            "bone_names": [str(n) for n in self.bone_names],
            "mode": str(self.mode),
            "e_rms": float(self.e_rms),
        }
        if self.fps:
            meta["fps"] = float(self.fps)
        check_rig(arrays, meta, what=f"Rig {self.name}")
        return meta, arrays

    @classmethod
    def from_result(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Rig:
        check_rig(arrays, meta)
        return cls(
            parents=arrays["parents"],
            bone_names=list(meta["bone_names"]),
            rest_matrices=arrays["rest_matrices"],
            pose_matrices=arrays["pose_matrices"],
            weight_index=arrays["weight_index"],
            weight_value=arrays["weight_value"],
            mode=meta["mode"],
            e_rms=float(meta.get("e_rms", float("nan"))),
            name=str(meta.get("name", "rig")),
            fps=float(meta.get("fps", 0.0)),
        )

    # ---------------------------------------------------------------------------------- evaluation

    def reconstruct(self, rest: np.ndarray) -> np.ndarray:
        """The skinned sequence (T,V,3) float32 from `rest` (V,3), exactly the module doc's formula."""
        rest = np.asarray(rest)
        if rest.shape != (self.weight_index.shape[0], 3):
            raise InputError(
                f"The rig skins {self.weight_index.shape[0]} vertices; got a rest pose of shape {rest.shape}."
            )
        return linear_blend_skin(
            rest, self.weight_index, self.weight_value, bone_transforms(self.pose_matrices, self.rest_matrices)
        )

    def local_basis(self) -> np.ndarray:
        """Per-frame basis matrices (T,B,4,4) float64: inv(rest_local) @ pose_local (module doc)."""
        return local_basis(self.parents, self.rest_matrices, self.pose_matrices)

    def local_rotations(self) -> tuple[np.ndarray, np.ndarray]:
        """What Blender keys: rotation_quaternion (T,B,4) w,x,y,z, sign-continuous over frames, and
        location (T,B,3) (bone units, in the bone's rest frame; 0 for skeleton children)."""
        basis = self.local_basis()
        return quaternions(basis[..., :3, :3]), basis[..., :3, 3]


# ------------------------------------------------------------------------------------ array functions


def local_basis(parents: np.ndarray, rest_matrices: np.ndarray, pose_matrices: np.ndarray) -> np.ndarray:
    """basis (T,B,4,4) = inv(inv(R[p]) @ R[b]) @ (inv(P[t,p]) @ P[t,b]); roots use R[b], P[t,b]."""
    rest = np.asarray(rest_matrices, dtype=np.float64)
    pose = np.asarray(pose_matrices, dtype=np.float64)
    parents = np.asarray(parents)
    has = parents >= 0
    par = np.where(has, parents, 0)
    eye = np.eye(4)
    rest_parent_inv = np.where(has[:, None, None], rigid_inverse(rest[par]), eye)
    pose_parent_inv = np.where(has[None, :, None, None], rigid_inverse(pose[:, par]), eye)
    rest_local = rest_parent_inv @ rest
    pose_local = pose_parent_inv @ pose
    return rigid_inverse(rest_local)[None] @ pose_local


def quaternions(rot: np.ndarray) -> np.ndarray:
    """Rotations (T,B,3,3) → unit quaternions (T,B,4) as w,x,y,z, sign-continuous along T."""
    t, b = rot.shape[:2]
    xyzw = Rotation.from_matrix(rot.reshape(-1, 3, 3)).as_quat().reshape(t, b, 4)
    q = np.concatenate([xyzw[..., 3:], xyzw[..., :3]], axis=-1)
    q[0] *= np.where(q[0, :, :1] < 0, -1.0, 1.0)  # first frame: w ≥ 0
    if t > 1:
        step = np.where(np.einsum("tbi,tbi->tb", q[1:], q[:-1]) < 0, -1.0, 1.0)
        q[1:] *= np.cumprod(step, axis=0)[..., None]
    return q


def rigid_inverse(m: np.ndarray) -> np.ndarray:
    """Inverse of rigid 4×4 matrices (...,4,4): [Rᵀ | −Rᵀt]."""
    out = np.zeros(m.shape)
    rt = np.swapaxes(m[..., :3, :3], -1, -2)
    out[..., :3, :3] = rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", rt, m[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out

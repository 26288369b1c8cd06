"""Synthetic articulated sequences with exact ground truth, for the rig tests.

A tree of parts (true parents, rest joints); each part is a tube of points from its joint toward its
child; every frame rotates each part about its joint relative to its parent (ball joints, or hinges about
a fixed axis) and moves the root. Vertices follow their part rigidly, so a perfect rig has E_RMS 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from backend.rig.ssdr import FreeSolve


@dataclass
class Articulated:
    rest: np.ndarray  # (V,3) float32
    frames: np.ndarray  # (T,V,3) float32
    labels: np.ndarray  # (V,) int32 true part per vertex
    parents: np.ndarray  # (P,) true parents, -1 root
    joints: np.ndarray  # (P,3) rest joint of each part with its parent (root: its base)
    transforms: np.ndarray  # (T,P,3,4) true rest → frame transforms
    faces: np.ndarray | None = None


def articulated(
    parents: list[int],
    joints: np.ndarray,
    ends: np.ndarray,
    frames: int = 12,
    points: int = 60,
    radius: float = 0.08,
    hinge: bool = False,
    seed: int = 0,
) -> Articulated:
    """Part p is a tube from joints[p] to ends[p]; it rotates about joints[p] relative to parents[p]."""
    rng = np.random.default_rng(seed)
    parents_a = np.asarray(parents)
    joints = np.asarray(joints, float)
    ends = np.asarray(ends, float)
    n = len(parents)
    pts, labels = [], []
    for p in range(n):
        s = rng.uniform(0.0, 1.0, points)
        axis = ends[p] - joints[p]
        ortho = np.linalg.svd(axis[None])[2][1:]  # two unit vectors orthogonal to the axis
        ang = rng.uniform(0, 2 * np.pi, points)
        ring = radius * (np.cos(ang)[:, None] * ortho[0] + np.sin(ang)[:, None] * ortho[1])
        pts.append(joints[p] + s[:, None] * axis + ring)
        labels.append(np.full(points, p))
    rest = np.concatenate(pts)
    labels_a = np.concatenate(labels)
    transforms = np.zeros((frames, n, 3, 4))
    for t in range(frames):
        glob = [None] * n
        for p in range(n):  # parents come first in the lists used here
            if hinge:
                local = Rotation.from_rotvec(np.array([0.0, 0.0, 1.0]) * rng.uniform(-0.8, 0.8)).as_matrix()
            else:
                local = Rotation.from_rotvec(rng.normal(size=3) * 0.4).as_matrix()
            m = np.eye(4)
            m[:3, :3] = local
            m[:3, 3] = joints[p] - local @ joints[p]  # rotate about the joint
            if parents_a[p] < 0:
                m[:3, 3] += rng.normal(size=3) * 0.2
                glob[p] = m
            else:
                glob[p] = glob[parents_a[p]] @ m
            transforms[t, p] = glob[p][:3]
    hom = np.concatenate([rest, np.ones((len(rest), 1))], axis=1)
    out = np.einsum("tvij,vj->tvi", transforms[:, labels_a], hom)
    return Articulated(
        rest=rest.astype(np.float32),
        frames=out.astype(np.float32),
        labels=labels_a.astype(np.int32),
        parents=parents_a,
        joints=joints,
        transforms=transforms,
    )


def chain(frames: int = 12, seed: int = 0, hinge: bool = False) -> Articulated:
    """Four parts in a row along +X: 0 ← 1 ← 2 ← 3."""
    joints = np.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0]])
    ends = joints + [1.0, 0, 0]
    return articulated([-1, 0, 1, 2], joints, ends, frames=frames, seed=seed, hinge=hinge)


def branching(frames: int = 12, seed: int = 1) -> Articulated:
    """A body (0) with two legs (1, 2) and a neck (3) carrying a head (4)."""
    joints = np.array([[0.0, 0, 0], [0.3, -0.1, 0], [-0.3, -0.1, 0], [0.0, 1.2, 0], [0.0, 1.9, 0]])
    ends = np.array([[0.0, 1.2, 0], [0.5, -1.0, 0], [-0.5, -1.0, 0], [0.0, 1.9, 0], [0.0, 2.4, 0.3]])
    joints[0] = [0.0, -0.1, 0]  # the body tube runs from its base up to the neck
    return articulated([-1, 0, 0, 0, 3], joints, ends, frames=frames, seed=seed, points=120)


def free_from_labels(seq: Articulated, k: int = 4) -> FreeSolve:
    """Stand-in for the free solver: per part and frame, a least-squares rigid (Kabsch) fit of its vertices."""
    v = seq.rest.shape[0]
    n = int(seq.labels.max()) + 1
    rest = seq.rest.astype(np.float64)
    frames = seq.frames.astype(np.float64)
    out = np.zeros((frames.shape[0], n, 3, 4))
    for p in range(n):
        sel = seq.labels == p
        mu = rest[sel].mean(axis=0)
        mv = frames[:, sel].mean(axis=1)  # (T,3)
        cov = np.einsum("tvi,vj->tij", frames[:, sel] - mv[:, None], rest[sel] - mu)
        u, _, vt = np.linalg.svd(cov)
        d = np.sign(np.linalg.det(u @ vt))
        u[:, :, 2] *= d[:, None]
        r = u @ vt
        out[:, p, :, :3] = r
        out[:, p, :, 3] = mv - r @ mu
    index = np.zeros((v, k), np.int32)
    index[:, 0] = seq.labels
    value = np.zeros((v, k), np.float32)
    value[:, 0] = 1.0
    return FreeSolve(
        transforms=out.astype(np.float32), weight_index=index, weight_value=value, labels=seq.labels, e_rms=0.0
    )

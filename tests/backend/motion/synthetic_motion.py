"""Synthetic skeletons and clips for the motion tests (small, deterministic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backend.motion.rotations import euler_to_quat, quat_multiply
from backend.motion.skeleton import Motion, Skeleton

BANDAI = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "motion" / "bandai-namco-1" / "data"
REAL_CLIPS = [
    BANDAI / "dataset-1_walk_tired_001.bvh",
    BANDAI / "dataset-1_dash_not-confident_001.bvh",
    BANDAI / "dataset-1_bow_active_001.bvh",
]

# name, parent, offset (Y up, centimetres); pelvis at joint 0
HUMANOID = [
    ("Hips", -1, (0, 95, 0)),
    ("Spine", 0, (0, 10, 0)),
    ("Chest", 1, (0, 15, 0)),
    ("Neck", 2, (0, 20, 0)),
    ("Head", 3, (0, 10, 0)),
    ("LeftShoulder", 2, (5, 15, 0)),
    ("LeftArm", 5, (12, 0, 0)),
    ("LeftHand", 6, (25, 0, 0)),
    ("RightShoulder", 2, (-5, 15, 0)),
    ("RightArm", 8, (-12, 0, 0)),
    ("RightHand", 9, (-25, 0, 0)),
    ("LeftUpLeg", 0, (9, -5, 0)),
    ("LeftLeg", 11, (0, -42, 0)),
    ("LeftFoot", 12, (0, -42, 0)),
    ("RightUpLeg", 0, (-9, -5, 0)),
    ("RightLeg", 14, (0, -42, 0)),
    ("RightFoot", 15, (0, -42, 0)),
]


def skeleton_from(table, static_top: bool = False) -> Skeleton:
    """Skeleton from (name, parent, offset) rows; `static_top` adds a still joint above, as Bandai-Namco's."""
    names = [n for n, _, _ in table]
    parents = [p for _, p, _ in table]
    offsets = [o for _, _, o in table]
    if static_top:
        names = ["Reference", *names]
        parents = [-1] + [p + 1 for p in parents]
        offsets = [(0, 0, 0), *offsets]
    return Skeleton(tuple(names), np.array(parents), np.array(offsets, dtype=np.float32))


def humanoid(static_top: bool = False) -> Skeleton:
    return skeleton_from(HUMANOID, static_top)


def tree() -> Skeleton:
    """A non-humanoid: a body with three tentacles, one of them forked."""
    table = [
        ("body", -1, (0, 50, 0)),
        ("a1", 0, (10, 0, 0)),
        ("a2", 1, (10, 0, 0)),
        ("b1", 0, (-10, 0, 0)),
        ("b2", 3, (-10, 0, 0)),
        ("b3", 4, (0, -10, 0)),
        ("b4", 4, (0, 10, 0)),
        ("c1", 0, (0, 0, 10)),
    ]
    return skeleton_from(table)


def random_motion(skeleton: Skeleton, frames: int = 40, seed: int = 0, fps: float = 30.0) -> Motion:
    """Smooth joint swings, a walking and turning root; the top joint stays put when it has one child."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None] / fps
    amp = rng.uniform(5, 40, (1, skeleton.n_joints, 3))
    freq = rng.uniform(0.3, 2.0, (1, skeleton.n_joints, 3))
    phase = rng.uniform(0, 2 * np.pi, (1, skeleton.n_joints, 3))
    angles = amp * np.sin(2 * np.pi * freq * t[..., None] + phase)
    yaw = 40 * t[:, 0] + 30
    roots = np.stack([60 * np.sin(0.7 * t[:, 0]), 3 * np.sin(6 * t[:, 0]), 80 * t[:, 0]], axis=1)
    static_top = len(skeleton.children(0)) == 1
    pelvis = skeleton.children(0)[0] if static_top else 0
    rotations = euler_to_quat(angles, "ZXY")
    turn = euler_to_quat(np.stack([np.zeros(frames), yaw, np.zeros(frames)], 1), "XYZ")
    rotations[:, pelvis] = quat_multiply(turn, euler_to_quat(angles[:, pelvis] * 0.3, "ZXY"))
    if static_top:
        rotations[:, 0] = (1, 0, 0, 0)
        translations = np.broadcast_to(skeleton.offsets, (frames, skeleton.n_joints, 3)).copy()
        translations[:, pelvis] = roots + skeleton.offsets[pelvis]
        return Motion(skeleton, rotations, np.zeros((frames, 3)), fps, "synthetic", translations)
    return Motion(skeleton, rotations, roots + skeleton.offsets[0], fps, "synthetic")


def motion_fixtures():
    """tests/backend/motion/conftest.py as a module of its own name (`conftest` is ambiguous in a full run)."""
    import importlib.util
    import sys

    name = "tessera_motion_test_fixtures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]

"""The motion.clip result type: what check_motion_clip accepts and what it refuses (with what message)."""

import numpy as np
import pytest

from shared.errors import InputError
from shared.results import MOTION_CLIP, RESULT_TYPES, check_motion_clip


def clip(t=5, j=3):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(t, j, 4))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    arrays = {"rotations": q.astype(np.float32), "root_positions": rng.normal(size=(t, 3)).astype(np.float32)}
    meta = {"name": "take", "fps": 30.0, "joints": [f"j{i}" for i in range(j)], "kept": [[0, 0], [2, 4]]}
    return arrays, meta


def test_motion_clip_is_a_result_type():
    assert MOTION_CLIP == "motion.clip" and MOTION_CLIP in RESULT_TYPES


def test_a_good_clip_passes_and_gives_its_size():
    arrays, meta = clip()
    assert check_motion_clip(arrays, meta) == (5, 3)
    assert check_motion_clip(arrays, meta, joint_count=3) == (5, 3)
    meta["kept"], meta["fps"] = [], 24
    assert check_motion_clip(arrays, meta) == (5, 3)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a, m: a.pop("rotations"), "missing its 'rotations'"),
        (lambda a, m: a.pop("root_positions"), "missing its 'root_positions'"),
        (lambda a, m: a.update(rotations=a["rotations"].astype(np.float64)), "must be float32"),
        (lambda a, m: a.update(rotations=a["rotations"][..., :3]), "shape"),
        (lambda a, m: a.update(root_positions=a["root_positions"][:4]), "shape"),
        (lambda a, m: a["rotations"].__setitem__((1, 2, 0), np.nan), "NaN"),
        (lambda a, m: a["root_positions"].__setitem__((3, 1), np.inf), "NaN or infinite"),
        (lambda a, m: a["rotations"].__setitem__((2, 1), [1.0, 1.0, 0.0, 0.0]), "joint 1 at frame 2 is not a unit"),
        (lambda a, m: a.update(rotations=np.zeros((0, 3, 4), np.float32)), "empty"),
        (lambda a, m: m.pop("name"), "'name'"),
        (lambda a, m: m.update(fps=0), "'fps'"),
        (lambda a, m: m.update(fps="30"), "'fps'"),
        (lambda a, m: m.update(joints=["a", "b"]), "must list 3"),
        (lambda a, m: m.update(joints=["a", "a", "b"]), "unique"),
        (lambda a, m: m.update(kept=None), "'kept'"),
        (lambda a, m: m.update(kept=[[3, 2]]), "kept range"),
        (lambda a, m: m.update(kept=[[0, 5]]), "kept range"),
        (lambda a, m: m.update(kept=[[0.0, 1]]), "kept range"),
    ],
)
def test_a_bad_clip_is_refused_with_a_message(change, match):
    arrays, meta = clip()
    change(arrays, meta)
    with pytest.raises(InputError, match=match):
        check_motion_clip(arrays, meta)


def test_the_joint_count_must_match_the_armature():
    arrays, meta = clip()
    with pytest.raises(InputError, match=r"shape \(N, 4, 4\)"):
        check_motion_clip(arrays, meta, joint_count=4)

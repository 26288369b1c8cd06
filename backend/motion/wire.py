"""Wire clips (what the add-on sends, shared/results.py's BVH convention) ↔ `Motion` on a model's skeleton.

The wire names its joints, gives parents, rest offsets (the root's = its rest position), local rotations
(T,J,4) and the root's position per frame. It matches a model's skeleton in one of two ways:

- exactly: same names in the same order with the same parents;
- without the model's top joint: models trained with `read_bvh` keep every file joint, and files such as
  Bandai-Namco's have a static top joint (`joint_Root`) whose only child (`Hips`) carries the motion
  through its own position channels. Blender's BVH importer and the add-on's collector drop such a
  single-child top bone, so the wire's root is `Hips` and its `root_positions` are Hips' heads. The top
  joint is put back with identity rotation at its rest position, and the wire root's positions become that
  joint's child's local translations (`Motion.translations`; the other joints take the wire's offsets).

`motion_to_wire` is the inverse: it drops the put-back joint and composes its rotation and translation
into the wire root (exact where the top joint is at rest, as the model leaves it on kept frames).
Anything else is an InputError naming the first difference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shared.errors import InputError

from .rotations import quat_multiply, quat_rotate
from .skeleton import Motion, Skeleton, check_same_units

IDENTITY = np.array([1.0, 0.0, 0.0, 0.0], np.float32)


def wire_layout(model: Skeleton, names: Sequence[str], parents: np.ndarray) -> str:
    """ "exact" or "without_top" (the wire lacks the model's single-child top joint); InputError otherwise."""
    names = tuple(names)
    parents = np.asarray(parents).astype(np.int64).reshape(-1)
    if len(parents) != len(names):
        raise InputError(f"The clip names {len(names)} joints but gives {len(parents)} parents")
    if names == model.names:
        _check_parents(model, names, parents, shift=0)
        return "exact"
    if names == model.names[1:] and model.children(0) == [1]:
        _check_parents(model, names, parents, shift=1)
        return "without_top"
    raise InputError(_difference(model, names))


def _check_parents(model: Skeleton, names: tuple[str, ...], parents: np.ndarray, shift: int) -> None:
    for j, name in enumerate(names):
        want = int(model.parents[j + shift]) - shift
        want = -1 if want < 0 else want
        if int(parents[j]) != want:
            got = names[parents[j]] if 0 <= parents[j] < len(names) else "none"
            expected = names[want] if want >= 0 else "none"
            raise InputError(
                f"The armature's bone {name!r} has parent {got!r}; in the model's skeleton its parent is {expected!r}"
            )


def _difference(model: Skeleton, names: tuple[str, ...]) -> str:
    wanted = list(model.names)
    if model.names[0] not in names and model.children(0) == [1]:
        wanted = wanted[1:]  # the single-child top joint the collector drops is not asked for
    missing = [n for n in wanted if n not in names]
    extra = [n for n in names if n not in wanted]
    head = f"The armature has {len(names)} bones, the model's skeleton {model.n_joints} joints"
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}" + ("…" if len(missing) > 5 else ""))
        if extra:
            parts.append(f"not in the model {', '.join(extra[:5])}" + ("…" if len(extra) > 5 else ""))
        return f"{head}: {'; '.join(parts)}"
    for j, (a, b) in enumerate(zip(names, wanted, strict=False)):
        if a != b:
            return f"{head}: bone {j} is {a!r}, the model's joint {j} is {b!r} (the order differs)"
    return f"{head}: the skeletons differ"


def motion_from_wire(
    model: Skeleton,
    names: Sequence[str],
    parents: np.ndarray,
    offsets: np.ndarray,
    rotations: np.ndarray,
    root_positions: np.ndarray,
    fps: float,
    name: str = "",
) -> Motion:
    """A `Motion` on `model` (the model's Skeleton object) from a wire clip; see the module doc."""
    names = tuple(names)
    j = len(names)
    offsets = np.asarray(offsets, np.float32)
    rotations = np.asarray(rotations, np.float32)
    root_positions = np.asarray(root_positions, np.float32)
    if offsets.shape != (j, 3):
        raise InputError(f"'offsets' must be ({j},3), one per joint, got shape {offsets.shape}")
    if rotations.ndim != 3 or rotations.shape[1:] != (j, 4):
        raise InputError(f"'rotations' must be (T,{j},4) quaternions (w,x,y,z), got shape {rotations.shape}")
    t = rotations.shape[0]
    if root_positions.shape != (t, 3):
        raise InputError(f"'root_positions' must be ({t},3), got shape {root_positions.shape}")
    if not (np.isfinite(rotations).all() and np.isfinite(root_positions).all() and np.isfinite(offsets).all()):
        raise InputError("The clip has a NaN or infinite value")
    if not fps > 0:
        raise InputError(f"The clip's fps must be positive, got {fps}")
    layout = wire_layout(model, names, parents)
    model_bones = model.offsets[1:] if layout == "exact" else model.offsets[2:]  # the wire's joints after its root
    check_same_units(
        float(np.linalg.norm(offsets[1:], axis=1).sum()),
        float(np.linalg.norm(model_bones, axis=1).sum()),
        "armature's skeleton",
        "in Blender: scale the armature by it and apply the scale, Object ▸ Apply ▸ Scale, or import the BVH again "
        "with that Scale",
    )
    if layout == "exact":
        trans = None
        if not np.allclose(offsets[1:], model.offsets[1:], rtol=1e-4, atol=1e-4 * max(model.rest_extent(), 1e-6)):
            trans = np.broadcast_to(offsets, (t, j, 3)).copy()  # the armature's own bone lengths
        return Motion(model, rotations, root_positions, fps, name, trans)
    top = model.offsets[0]
    rot = np.concatenate([np.broadcast_to(IDENTITY, (t, 1, 4)), rotations], axis=1)
    trans = np.empty((t, j + 1, 3), np.float32)
    trans[:, 0] = top
    trans[:, 1] = root_positions - top  # identity top joint: its local frame is the world's
    trans[:, 2:] = offsets[1:]
    return Motion(model, rot, np.broadcast_to(top, (t, 3)).copy(), fps, name, trans)


def motion_to_wire(motion: Motion, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(rotations (T,J,4) f32, root_positions (T,3) f32) of `motion` for the wire joints `names`."""
    names = tuple(names)
    skeleton = motion.skeleton
    if names == skeleton.names:
        return motion.rotations.astype(np.float32), motion.root_positions.astype(np.float32)
    if names != skeleton.names[1:] or skeleton.children(0) != [1]:
        raise InputError(_difference(skeleton, names))
    top_rot = motion.rotations[:, 0].astype(np.float64)
    child_rot = motion.rotations[:, 1].astype(np.float64)
    child_trans = motion.local_translations()[:, 1].astype(np.float64)
    at_rest = (motion.rotations[:, 0] == IDENTITY).all(axis=1)
    rot = motion.rotations[:, 1:].copy()
    rot[~at_rest, 0] = quat_multiply(top_rot[~at_rest], child_rot[~at_rest])
    root = (motion.root_positions.astype(np.float64) + quat_rotate(top_rot, child_trans)).astype(np.float32)
    return rot.astype(np.float32), root

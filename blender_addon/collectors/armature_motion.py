"""The animation of an armature as a motion clip in the wire's BVH convention (shared/results.py,
`motion.clip`): joints = bones in parent-before-child order, `offsets` = rest heads relative to
the parent's, `rotations` = LOCAL quaternions (w,x,y,z) with world-aligned rest frames, and
`root_positions` = the root joint's head per frame; Y-up (Blender (x, y, z) → (x, z, -y)), the
armature's own units, in the armature object's space (its object transform is not included).

For bone b with rest rotation R_b (bone.matrix_local) and evaluated pose rotation P_b (pose_bone.matrix,
both in armature space) the BVH global rotation is G_b = P_b · R_b⁻¹ and the local L_b = G_parent⁻¹ · G_b.

A root bone with exactly one child that moves away from it (the "reference" root many BVH files and
game rigs carry, e.g. Bandai-Namco's `joint_Root` whose child `Hips` has its own position channels) is
left out of the clip: its child is the clip's root, whose world-aligned global rotation and head position
carry both bones' motion exactly (only the left-out bone's own pose is not sent). Below the root the
clip carries rotations only: a translation keyed on a deeper bone does not travel (the wire has no
channel for it).
"""

from __future__ import annotations

from typing import NamedTuple

import bpy
import numpy as np

from ..appliers.rig import continuous, quaternions
from ..shared.errors import InputError
from . import object_kind

STATIC_EPSILON = 1e-5  # relative to the skeleton's size (translations) and absolute (rotation entries)
# Blender (x, y, z) → wire (x, z, -y): a rotation by -90° about X
TO_WIRE = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


class MotionError(InputError):
    """The armature's animation cannot be sent as a motion clip (not an armature, no keys, too short)."""


class Skeleton(NamedTuple):
    names: list[str]  # bone names, parent before child
    parents: np.ndarray  # (J,) int32, -1 for the root
    offsets: np.ndarray  # (J, 3) float32, wire axes


class Clip(NamedTuple):
    names: list[str]
    parents: np.ndarray  # (J,) int32
    offsets: np.ndarray  # (J, 3) float32
    rotations: np.ndarray  # (T, J, 4) float32
    root_positions: np.ndarray  # (T, 3) float32


# -- axes ----------------------------------------------------------------------------------------


def to_wire_vectors(v: np.ndarray) -> np.ndarray:
    """(..., 3) Blender Z-up → wire Y-up."""
    return np.stack([v[..., 0], v[..., 2], -v[..., 1]], -1)


def from_wire_vectors(v: np.ndarray) -> np.ndarray:
    """(..., 3) wire Y-up → Blender Z-up."""
    return np.stack([v[..., 0], -v[..., 2], v[..., 1]], -1)


def to_wire_quaternions(q: np.ndarray) -> np.ndarray:
    """(..., 4) (w,x,y,z) rotations in Blender axes → the same rotations in wire axes (C q C⁻¹)."""
    return np.concatenate([q[..., :1], to_wire_vectors(q[..., 1:])], -1)


def from_wire_quaternions(q: np.ndarray) -> np.ndarray:
    return np.concatenate([q[..., :1], from_wire_vectors(q[..., 1:])], -1)


# -- the armature --------------------------------------------------------------------------------


def _check_armature(arm_ob) -> None:
    if arm_ob is None:
        raise MotionError("No object is active: select the armature whose animation to use.")
    if arm_ob.type != "ARMATURE":
        raise MotionError(f"'{arm_ob.name}' is {object_kind(arm_ob)}: select an armature.")
    if len(arm_ob.data.bones) == 0:
        raise MotionError(f"Armature '{arm_ob.name}' has no bones: add bones (or import a BVH) first.")


def bone_order(arm_ob: bpy.types.Object) -> tuple[list[str], np.ndarray]:
    """All bone names depth first, parent before child (siblings in Blender's order), and parent indices."""
    bones = arm_ob.data.bones
    names: list[str] = []
    parents: list[int] = []
    stack = [(b, -1) for b in reversed([b for b in bones if b.parent is None])]
    while stack:
        bone, parent = stack.pop()
        names.append(bone.name)
        parents.append(parent)
        me = len(names) - 1
        stack.extend((c, me) for c in reversed(bone.children))
    return names, np.array(parents, np.int32)


def _rest_matrices(arm_ob, names: list[str]) -> np.ndarray:
    """(B, 4, 4) bone.matrix_local (armature space) in `names` order."""
    bones = arm_ob.data.bones
    buf = np.empty(len(bones) * 16, np.float32)
    bones.foreach_get("matrix_local", buf)
    index = {b.name: i for i, b in enumerate(bones)}
    order = np.array([index[n] for n in names], np.int64)
    return buf.reshape(-1, 4, 4).transpose(0, 2, 1)[order].astype(np.float64)  # foreach_get is column-major


def pose_matrices(context, arm_ob, names: list[str], frames) -> np.ndarray:
    """(T, B, 4, 4) evaluated pose_bone.matrix (armature space) at each scene frame; the scene's
    current frame is restored."""
    scene = context.scene
    frames = list(frames)
    out = np.empty((len(frames), len(names), 4, 4), np.float64)
    buf = np.empty(len(arm_ob.pose.bones) * 16, np.float32)
    index = {pb.name: i for i, pb in enumerate(arm_ob.pose.bones)}
    order = np.array([index[n] for n in names], np.int64)
    frame_current, subframe = scene.frame_current, scene.frame_subframe
    try:
        for i, frame in enumerate(frames):
            scene.frame_set(frame)
            ob_eval = arm_ob.evaluated_get(context.evaluated_depsgraph_get())
            ob_eval.pose.bones.foreach_get("matrix", buf)
            out[i] = buf.reshape(-1, 4, 4).transpose(0, 2, 1)[order]
    finally:
        scene.frame_set(frame_current, subframe=subframe)
    return out


def _size(heads: np.ndarray) -> float:
    return float(np.linalg.norm(heads.max(axis=0) - heads.min(axis=0))) or 1.0


def _clip_bones(names, parents, rest, pose) -> np.ndarray:
    """Indices of the bones the clip keeps: a root whose only child moves away from it is left out."""
    roots = np.flatnonzero(parents < 0)
    if len(roots) != 1:
        raise MotionError(
            f"The armature has {len(roots)} root bones ({', '.join(names[r] for r in roots[:5])}); a motion clip "
            "needs one: parent the others under one root bone."
        )
    keep = np.ones(len(names), bool)
    root = int(roots[0])
    size = _size(rest[:, :3, 3])
    while True:
        children = np.flatnonzero(parents == root)
        if len(children) != 1:
            break
        child = int(children[0])
        moved = (np.linalg.inv(pose[:, root]) @ pose[:, child])[:, :3, 3]
        at_rest = (np.linalg.inv(rest[root]) @ rest[child])[:3, 3]
        if np.abs(moved - at_rest).max() <= STATIC_EPSILON * size:
            break  # the child stays at its joint: the root is a joint of the clip
        keep[root] = False
        root = child
    return np.flatnonzero(keep)


def _skeleton(names, parents, rest, keep) -> Skeleton:
    """The kept bones' names, parents re-indexed and wire offsets."""
    new_index = np.full(len(names), -1, np.int64)
    new_index[keep] = np.arange(len(keep))
    par = parents[keep].astype(np.int64)
    par = np.where(par >= 0, new_index[np.maximum(par, 0)], -1)
    heads = rest[keep, :3, 3]
    offsets = heads.copy()
    child = par >= 0
    offsets[child] = heads[child] - heads[par[child]]
    return Skeleton([names[i] for i in keep], par.astype(np.int32), to_wire_vectors(offsets).astype(np.float32))


def _local_rotations(parents: np.ndarray, rest: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """(T,J,4) wire-axes local quaternions from rest (J,4,4) and pose (T,J,4,4), both in armature space."""
    r = rest[:, :3, :3]
    p = pose[..., :3, :3]
    # orthonormalise the pose rotations (bone scale is not part of the clip)
    p = p / np.linalg.norm(p, axis=-2, keepdims=True)
    g = p @ np.linalg.inv(r)  # G_b = P_b R_b^-1
    local = g.copy()
    child = np.flatnonzero(parents >= 0)
    local[:, child] = np.swapaxes(g[:, parents[child]], -1, -2) @ g[:, child]
    q = quaternions(local)
    return continuous(to_wire_quaternions(q))


def armature_skeleton(context, arm_ob: bpy.types.Object) -> Skeleton:
    """The armature's skeleton on the wire (the bones a clip of its pose at the current frame would carry)."""
    _check_armature(arm_ob)
    names, parents = bone_order(arm_ob)
    rest = _rest_matrices(arm_ob, names)
    pose = pose_matrices(context, arm_ob, names, [context.scene.frame_current])
    return _skeleton(names, parents, rest, _clip_bones(names, parents, rest, pose))


def _has_animation(arm_ob) -> bool:
    anim = arm_ob.animation_data
    return anim is not None and (anim.action is not None or len(anim.nla_tracks) > 0)


def armature_clip(context, arm_ob: bpy.types.Object, frame_start: int, frame_end: int) -> Clip:
    """(names, parents, offsets, rotations, root_positions) of the armature's evaluated animation over
    scene frames frame_start..frame_end (clip frame 0 = frame_start). Raises MotionError saying what to do."""
    _check_armature(arm_ob)
    count = frame_end - frame_start + 1
    if count < 2:
        raise MotionError(
            f"The frame range {frame_start}..{frame_end} holds {max(count, 0)} frame(s); a motion clip needs at "
            "least 2: widen the scene's frame range to the animation."
        )
    if not _has_animation(arm_ob) or not keyed_frames(arm_ob):
        anim = arm_ob.animation_data
        if anim is not None and anim.action is None and any(t.strips for t in anim.nla_tracks):
            raise MotionError(
                f"Armature '{arm_ob.name}' has its keys in NLA strips, not in an active Action: make the strip's "
                "Action the active one (NLA editor: select the strip, Tab to tweak it, or pick it in the Action "
                "Editor) first."
            )
        raise MotionError(
            f"Armature '{arm_ob.name}' has no keyframes: key a few poses (select the bones, press I) first."
        )
    names, parents = bone_order(arm_ob)
    rest = _rest_matrices(arm_ob, names)
    pose = pose_matrices(context, arm_ob, names, range(frame_start, frame_end + 1))
    return _clip(arm_ob, names, parents, rest, pose)


def _clip(arm_ob, names, parents, rest, pose, keep=None) -> Clip:
    if not np.isfinite(pose).all():
        t = int(np.argwhere(~np.isfinite(pose))[0][0])
        raise MotionError(f"Armature '{arm_ob.name}' evaluates to NaN or infinite bone matrices at clip frame {t}.")
    if keep is None:
        keep = _clip_bones(names, parents, rest, pose)
    skeleton = _skeleton(names, parents, rest, keep)
    rotations = _local_rotations(skeleton.parents, rest[keep], pose[:, keep])
    root_positions = to_wire_vectors(pose[:, keep[0], :3, 3])
    return Clip(
        skeleton.names,
        skeleton.parents,
        skeleton.offsets,
        rotations.astype(np.float32),
        root_positions.astype(np.float32),
    )


# -- keys ----------------------------------------------------------------------------------------


def channelbag(action: bpy.types.Action, slot) -> list:
    """The channelbags of `action` for `slot` (one per keyframe strip; Blender 5.0 layered actions)."""
    bags = []
    for layer in action.layers:
        for strip in layer.strips:
            if slot is not None and hasattr(strip, "channelbag"):
                bag = strip.channelbag(slot)
                if bag is not None:
                    bags.append(bag)
            elif slot is None:
                bags.extend(getattr(strip, "channelbags", ()))
    return bags


def action_fcurves(action: bpy.types.Action, slot=None) -> list:
    """All F-curves of `action` for `slot` (all slots when None)."""
    return [fc for bag in channelbag(action, slot) for fc in bag.fcurves]


def keyed_frames(arm_ob: bpy.types.Object) -> list[int]:
    """Sorted scene frames where the armature's active action has a key (on any of its channels)."""
    anim = arm_ob.animation_data
    if anim is None or anim.action is None:
        return []
    frames: set[int] = set()
    for fc in action_fcurves(anim.action, anim.action_slot):
        n = len(fc.keyframe_points)
        if n:
            co = np.empty(n * 2, np.float32)
            fc.keyframe_points.foreach_get("co", co)
            frames.update(np.round(co[0::2]).astype(np.int64).tolist())
    return sorted(frames)


def frame_ranges(frames: list[int]) -> list[tuple[int, int]]:
    """Sorted frames → inclusive runs of consecutive frames."""
    runs: list[tuple[int, int]] = []
    for f in sorted(set(frames)):
        if runs and f == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], f)
        else:
            runs.append((f, f))
    return runs


def ranges_text(ranges) -> str:
    """[(0, 0), (12, 14)] → "0-0,12-14"."""
    return ",".join(f"{a}-{b}" for a, b in ranges)


# -- all of the armature's actions (training) ----------------------------------------------------


def _action_animates(action, names: set[str]) -> bool:
    for fc in action_fcurves(action):
        path = fc.data_path
        if path.startswith('pose.bones["'):
            bone = path[len('pose.bones["') :].split('"]', 1)[0]
            if bone.replace('\\"', '"') in names:
                return True
    return False


def action_clips(context, arm_ob: bpy.types.Object) -> tuple[Clip, list[int], list[str]]:
    """Every Action in the file that animates this armature's bones, as one concatenated clip (rotations
    and root_positions stacked over clips), the clip lengths and the action names. The armature's own
    action and slot are restored."""
    _check_armature(arm_ob)
    names, parents = bone_order(arm_ob)
    bone_names = set(names)
    actions = [a for a in bpy.data.actions if _action_animates(a, bone_names)]
    if not actions:
        raise MotionError(
            f"No Action in this file animates armature '{arm_ob.name}': key some motion, import BVH clips, "
            "or train from a folder of BVH files."
        )
    rest = _rest_matrices(arm_ob, names)
    anim = arm_ob.animation_data_create()
    old_action, old_slot = anim.action, anim.action_slot
    poses, lengths, labels = [], [], []
    try:
        for action in actions:
            anim.action = action
            if anim.action_slot is None and len(action.slots):
                anim.action_slot = action.slots[0]
            first, last = (int(round(x)) for x in action.frame_range)
            if last - first + 1 < 2:
                continue
            poses.append(pose_matrices(context, arm_ob, names, range(first, last + 1)))
            lengths.append(last - first + 1)
            labels.append(action.name)
    finally:
        anim.action = old_action
        if old_action is not None and old_slot is not None:
            anim.action_slot = old_slot
    if not poses:
        raise MotionError(f"The Actions of '{arm_ob.name}' are all shorter than 2 frames.")
    pose = np.concatenate(poses)
    return _clip(arm_ob, names, parents, rest, pose), lengths, labels

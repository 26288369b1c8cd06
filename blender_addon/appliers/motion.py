"""`motion.clip` result → a new Action on the armature it was made for.

The clip is in the wire's BVH convention (see collectors/armature_motion.py). Blender's pose of a
bone is M_b = M_parent · R_parent⁻¹ · R_b · Basis_b (R = bone.matrix_local, armature space), so with
the clip's world-aligned global rotation G_b = P_b · R_b⁻¹ and local L_b = G_parent⁻¹ · G_b the basis
rotation is Q_b = R_b⁻¹ · L_b · R_b (the local rotation seen from the bone's rest frame); the root's
basis location puts its head at the clip's root position: loc = R_root⁻¹ · (head − rest head).

Written as a NEW Action named "<armature> <mode> take N" and assigned to the armature; the previous
action keeps a fake user (it survives saving) and its name is in the armature's custom property
`tessera_previous_action`, so the user can switch back. Every bone is keyed on every frame in its own
rotation mode (rotation_quaternion, rotation_euler with its order, or rotation_axis_angle) plus
location (the root's from the clip; other clip joints and bones above the clip's root at rest), so the
take evaluates the same whatever pose the armature held before. Frames listed as kept get EXACTLY the
previous action's values (its key where it has one on that frame, else its F-curve's value there), so
the user's keys are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import bpy
import numpy as np
from mathutils import Euler, Quaternion

from ..collectors.armature_motion import (
    action_fcurves,
    from_wire_quaternions,
    from_wire_vectors,
)
from ..shared.errors import InputError
from ..shared.results import check_motion_clip
from .rig import _fcurves, continuous, quaternions

MODES = ("inbetween", "edit", "generate")
PROP_PREVIOUS = "tessera_previous_action"
PROP_JOB = "tessera_job"


@dataclass
class MotionOptions:
    """Where a motion job's clip goes (remembered per job at submit time, in job.options)."""

    armature: str = ""
    frame_start: int = 1  # scene frame of clip frame 0
    mode: str = "inbetween"
    kept: list[tuple[int, int]] = field(default_factory=list)  # 0-based clip frame ranges to keep exactly
    armature_uid: int = 0  # the armature's session_uid: found again if it is renamed while the job runs

    @classmethod
    def from_job(cls, options: dict, scene: bpy.types.Scene) -> MotionOptions:
        return cls(
            armature=str(options.get("motion_armature", "")),
            frame_start=int(options.get("motion_frame_start", scene.frame_start)),
            mode=str(options.get("motion_mode", "inbetween")),
            kept=[(int(a), int(b)) for a, b in options.get("motion_kept", ())],
            armature_uid=int(options.get("motion_armature_uid", 0)),
        )

    def as_job_options(self) -> dict:
        return {
            "motion_armature": self.armature,
            "motion_frame_start": self.frame_start,
            "motion_mode": self.mode,
            "motion_kept": [list(r) for r in self.kept],
            "motion_armature_uid": self.armature_uid,
        }


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = np.moveaxis(q / np.linalg.norm(q, axis=-1, keepdims=True), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def _joints_fit(arm_ob, joints: list[str]) -> None:
    """Every joint is a bone; the first is the clip's root, every other joint's parent bone is a joint."""
    bones = arm_ob.data.bones
    missing = [n for n in joints if n not in bones]
    if missing:
        raise InputError(
            f"The motion clip's joints do not match armature '{arm_ob.name}': it has no bone "
            f"{', '.join(repr(n) for n in missing[:5])}. Apply the clip to the armature it was made for."
        )
    index = {n: i for i, n in enumerate(joints)}
    for i, n in enumerate(joints[1:], 1):
        parent = bones[n].parent
        if parent is None or index.get(parent.name, i) >= i:
            raise InputError(
                f"The motion clip's joint '{n}' does not follow its parent bone in armature '{arm_ob.name}': "
                "the clip was made for another skeleton."
            )


def _old_channels(arm_ob) -> dict[tuple[str, int], bpy.types.FCurve]:
    anim = arm_ob.animation_data
    if anim is None or anim.action is None:
        return {}
    return {(fc.data_path, fc.array_index): fc for fc in action_fcurves(anim.action, anim.action_slot)}


def _kept_values(fc, frames: np.ndarray) -> np.ndarray:
    """The previous F-curve's values on scene `frames`: its key value where it has a key on that frame
    (bit for bit), else its evaluated value."""
    n = len(fc.keyframe_points)
    co = np.empty(n * 2, np.float32)
    fc.keyframe_points.foreach_get("co", co)
    keys = dict(zip(co[0::2].tolist(), co[1::2].tolist(), strict=True))
    return np.array([keys.get(float(f), fc.evaluate(float(f))) for f in frames], np.float32)


def _rotation_channels(mode: str, q: np.ndarray) -> tuple[str, np.ndarray]:
    """(T,4) basis quaternions → (data path, (T,K) values) in the bone's rotation mode."""
    if mode == "QUATERNION":
        return "rotation_quaternion", q
    if mode == "AXIS_ANGLE":
        out = np.empty((len(q), 4))
        for t, x in enumerate(q):
            axis, angle = Quaternion(x.tolist()).to_axis_angle()
            out[t] = (angle, *axis)
        return "rotation_axis_angle", out
    out = np.empty((len(q), 3))
    previous = Euler((0.0, 0.0, 0.0), mode)
    for t, x in enumerate(q):
        previous = Quaternion(x.tolist()).to_euler(mode, previous)  # compatible: no 360° jumps between frames
        out[t] = previous
    return "rotation_euler", out


def _take_name(arm_ob, mode: str) -> str:
    prefix = f"{arm_ob.name} {mode} take "
    n = 1
    while f"{prefix}{n}" in bpy.data.actions:
        n += 1
    return f"{prefix}{n}"


def apply_clip(
    context: bpy.types.Context,
    arm_ob: bpy.types.Object,
    meta: dict,
    arrays: dict,
    frame_start: int,
    mode: str,
    kept: list[tuple[int, int]] | None = None,
    job_id: str = "",
) -> str:
    """Write the clip as a new Action on `arm_ob` (see the module docstring); return the action's name.

    `kept` (0-based clip frame ranges) defaults to meta["kept"]. Raises InputError before touching
    anything when the clip does not fit the armature."""
    if arm_ob is None or arm_ob.type != "ARMATURE":
        raise InputError("A motion clip goes onto an armature: the target object is missing or not an armature.")
    if mode not in MODES:
        raise InputError(f"Motion mode must be one of {', '.join(MODES)}, got '{mode}'.")
    joints = meta.get("joints")
    joint_count = len(joints) if isinstance(joints, list) else None
    t, j = check_motion_clip(arrays, meta, joint_count, what=f"Motion clip for '{arm_ob.name}'")
    _joints_fit(arm_ob, joints)
    kept = [tuple(r) for r in (meta["kept"] if kept is None else kept)]
    bad = [r for r in kept if not 0 <= r[0] <= r[1] < t]
    if bad:
        raise InputError(f"Kept frames {bad[0]} lie outside the clip's {t} frames.")

    # -- everything computed before the scene changes -------------------------------------------------
    root = joints[0]
    above_root = []  # bones on the chain above the clip's root: keyed at rest
    bone = arm_ob.data.bones[root].parent
    while bone is not None:
        above_root.append(bone.name)
        bone = bone.parent
    rest = np.array([np.array(arm_ob.data.bones[n].matrix_local) for n in joints], np.float64)
    r = rest[:, :3, :3]
    local = _quat_to_matrix(from_wire_quaternions(arrays["rotations"].astype(np.float64)))  # (T,J,3,3)
    basis = np.swapaxes(r, -1, -2)[None] @ local @ r[None]  # Q_b = R_b^-1 L_b R_b
    basis_q = continuous(quaternions(basis))
    heads = from_wire_vectors(arrays["root_positions"].astype(np.float64))
    root_location = (heads - rest[0, :3, 3]) @ r[0]  # R^-1 (head - rest head), rows

    channels: list[tuple[str, str, int, np.ndarray]] = []  # (bone, data path, index, (T,) values)
    for b, name in enumerate(joints):
        pb = arm_ob.pose.bones[name]
        path, values = _rotation_channels(pb.rotation_mode, basis_q[:, b])
        channels += [(name, path, i, values[:, i]) for i in range(values.shape[1])]
        location = root_location if b == 0 else np.zeros((t, 3))
        channels += [(name, "location", i, location[:, i]) for i in range(3)]
    for name in above_root:
        pb = arm_ob.pose.bones[name]
        path, values = _rotation_channels(pb.rotation_mode, np.tile([1.0, 0.0, 0.0, 0.0], (t, 1)))
        channels += [(name, path, i, values[:, i]) for i in range(values.shape[1])]
        channels += [(name, "location", i, np.zeros(t)) for i in range(3)]
    frames = np.arange(frame_start, frame_start + t, dtype=np.float64)
    kept_index = np.array(sorted({f for a, b in kept for f in range(a, b + 1)}), np.int64)
    old = _old_channels(arm_ob)
    rows = []
    for name, prop, i, values in channels:
        path = f'pose.bones["{bpy.utils.escape_identifier(name)}"].{prop}'
        values = values.astype(np.float32)
        fc = old.get((path, i))
        if fc is not None and kept_index.size:
            values[kept_index] = _kept_values(fc, frames[kept_index])
        rows.append((name, path, i, values))
    if not all(np.isfinite(v).all() for *_, v in rows):
        raise InputError(f"Motion clip for '{arm_ob.name}' gives non-finite bone values.")

    # -- the scene changes from here --------------------------------------------------------------
    anim = arm_ob.animation_data_create()
    previous = anim.action
    if previous is not None:
        previous.use_fake_user = True
        arm_ob[PROP_PREVIOUS] = previous.name
    action = bpy.data.actions.new(_take_name(arm_ob, mode))
    action["tessera_mode"] = mode
    action["tessera_kept"] = ",".join(f"{a}-{b}" for a, b in kept)
    if job_id:
        action[PROP_JOB] = job_id
    fcurves = _fcurves(arm_ob, action)
    co = np.empty((t, 2), np.float32)
    co[:, 0] = frames
    linear = np.full(t, bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["LINEAR"].value, np.int32)
    for name, path, i, values in rows:
        fc = fcurves.new(path, index=i, group_name=name)
        fc.keyframe_points.add(t)
        co[:, 1] = values
        fc.keyframe_points.foreach_set("co", co.ravel())
        fc.keyframe_points.foreach_set("interpolation", linear)
        fc.update()
    scene = context.scene
    scene.frame_end = max(scene.frame_end, frame_start + t - 1)
    arm_ob.update_tag()
    return action.name


def previous_action(arm_ob) -> bpy.types.Action | None:
    """The action that was on the armature before its last Tessera take (None if none or deleted)."""
    name = arm_ob.get(PROP_PREVIOUS)
    return bpy.data.actions.get(name) if name else None

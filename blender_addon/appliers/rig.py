"""`rig` result → an Armature object driving the mesh it was solved from.

Built in one step: the armature with named bones in the hierarchy (edit bones from
`rest_matrices`), vertex groups with the sparse weights, an Armature modifier on a copy of
the source mesh (target COPY) or on the source itself with its old animation disabled
(REPLACE: shape keys muted, deforming modifiers switched off, nothing deleted), and an
Action keying each pose bone per frame from the frame the motion was collected at.

Blender deforms with v' = Σ w (pose_bone.matrix @ inv(bone.matrix_local)) v, so every
pose bone's matrix is keyed to `pose[t,b] @ inv(rest[b]) @ bone.matrix_local`, with
bone.matrix_local read back after edit mode: the deformation then equals the rig's
skinning even where Blender's head/tail/roll storage rounds the rest matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import bpy
import numpy as np
from mathutils import Matrix

from ..collectors.mesh_motion import trailing_topology_modifiers
from ..shared.errors import InputError
from ..shared.results import check_rig
from . import lookup

MODIFIER_NAME = "Tessera Rig"
TARGETS = ("COPY", "REPLACE")
# Modifiers that move vertices without changing topology: the motion the rig replaces.
DEFORMING_MODIFIERS = {
    "MESH_CACHE", "MESH_SEQUENCE_CACHE", "ARMATURE", "LATTICE", "CURVE", "WAVE", "HOOK", "CAST",
    "SIMPLE_DEFORM", "DISPLACE", "WARP", "SMOOTH", "CORRECTIVE_SMOOTH", "LAPLACIANSMOOTH", "SHRINKWRAP",
    "MESH_DEFORM", "SURFACE_DEFORM", "LAPLACIANDEFORM", "CLOTH", "SOFT_BODY",
}  # fmt: skip
LEAF_FRACTION = 0.05  # leaf and free bones: this fraction of the mesh's diagonal long
LOCATION_TOLERANCE = 1e-6  # relative to the mesh size: a child bone's location is keyed above this
PROP_JOB = "tessera_job"
PROP_RIG_OF = "tessera_rig_of"  # on the rigged mesh: the armature's name


@dataclass
class RigOptions:
    """Where a rig job's result goes (remembered per job at submit time, in job.options)."""

    source: str = ""  # the mesh object the motion was collected from ("" = unknown: armature only)
    frame_start: int = 1  # scene frame of pose 0
    target: str = "COPY"
    # the source's world matrix at the first collected frame, row-major (16 floats); empty = its current one
    object_matrix: tuple[float, ...] = ()
    object_moves: bool = False  # the source had object-level motion, baked into the rig
    source_uid: int = 0  # the source's session_uid: found again if it is renamed while the rig is solved

    @classmethod
    def from_job(cls, options: dict, scene: bpy.types.Scene) -> RigOptions:
        return cls(
            source=str(options.get("rig_source", "")),
            frame_start=int(options.get("rig_frame_start", scene.frame_start)),
            target=str(options.get("rig_target", "COPY")),
            object_matrix=tuple(float(x) for x in options.get("rig_object_matrix", ())),
            object_moves=bool(options.get("rig_object_moves", False)),
            source_uid=int(options.get("rig_source_uid", 0)),
        )

    def as_job_options(self) -> dict:
        return {
            "rig_source": self.source,
            "rig_frame_start": self.frame_start,
            "rig_target": self.target,
            "rig_object_matrix": list(self.object_matrix),
            "rig_object_moves": self.object_moves,
            "rig_source_uid": self.source_uid,
        }


@dataclass
class RigResult:
    armature: str  # object names (bpy pointers go stale)
    mesh: str | None


# -- matrices -----------------------------------------------------------------------------------


def _local(world: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """(..., B, 4, 4) bone → object matrices → bone → parent bone (roots: → object)."""
    out = world.copy()
    child = np.flatnonzero(parents >= 0)
    if child.size:
        out[..., child, :, :] = np.linalg.inv(world[..., parents[child], :, :]) @ world[..., child, :, :]
    return out


def quaternions(rot: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices → (..., 4) unit quaternions (w, x, y, z), vectorised."""
    m = rot
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    xy, xz, yz = m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1]
    rx, ry, rz = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    dx, dy, dz = (1 + 2 * m[..., i, i] - tr for i in range(3))
    # Row i is 4·q_i·q: each is a valid quaternion; the one with the largest diagonal term is best conditioned.
    cand = np.stack(
        [
            np.stack([1 + tr, rx, ry, rz], -1),
            np.stack([rx, dx, xy, xz], -1),
            np.stack([ry, xy, dy, yz], -1),
            np.stack([rz, xz, yz, dz], -1),
        ],
        -2,
    )
    diag = np.stack([1 + tr, dx, dy, dz], -1)
    best = np.take_along_axis(cand, diag.argmax(-1)[..., None, None], -2)[..., 0, :]
    q = best / np.linalg.norm(best, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def continuous(q: np.ndarray) -> np.ndarray:
    """(T, B, 4) quaternions with signs flipped so consecutive frames stay in one hemisphere."""
    if len(q) < 2:
        return q
    dots = np.einsum("tbi,tbi->tb", q[1:], q[:-1])
    sign = np.cumprod(np.where(dots < 0, -1.0, 1.0), axis=0)
    out = q.copy()
    out[1:] *= sign[..., None]
    return out


def pose_basis(
    parents: np.ndarray, rest: np.ndarray, pose: np.ndarray, bone_rest: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pose bones' basis per frame: (T,B,4) quaternions and (T,B,3) locations.

    `bone_rest` is Blender's bone.matrix_local (B,4,4). The pose bone matrix Blender must reach is
    M = pose @ inv(rest) @ bone_rest; basis = inv(rest_local) @ pose_local with both local to the
    parent bone.
    """
    rest, pose, bone_rest = (a.astype(np.float64) for a in (rest, pose, bone_rest))
    target = pose @ np.linalg.inv(rest) @ bone_rest  # (T,B,4,4)
    basis = np.linalg.inv(_local(bone_rest, parents)) @ _local(target, parents)
    return continuous(quaternions(basis[..., :3, :3])), basis[..., :3, 3]


def skin(rest_vertices: np.ndarray, arrays: dict) -> np.ndarray:
    """(T,V,3) positions the rig's skinning gives: Σ w · (pose @ inv(rest)) @ [v, 1]."""
    deform = arrays["pose_matrices"].astype(np.float64) @ np.linalg.inv(arrays["rest_matrices"].astype(np.float64))
    idx, w = arrays["weight_index"], arrays["weight_value"].astype(np.float64)
    v = rest_vertices.astype(np.float64)
    out = np.zeros((deform.shape[0], len(v), 3))
    for k in range(idx.shape[1]):
        m = deform[:, idx[:, k]]  # (T,V,4,4)
        out += w[None, :, k, None] * (np.einsum("tvij,vj->tvi", m[..., :3, :3], v) + m[..., :3, 3])
    return out


# -- Blender data -------------------------------------------------------------------------------


def _bone_lengths(parents: np.ndarray, heads: np.ndarray, size: float) -> np.ndarray:
    """Distance to the first child's head; a fraction of the mesh size for leaves and free bones."""
    lengths = np.full(len(parents), LEAF_FRACTION * size)
    seen = np.zeros(len(parents), bool)
    for b, p in enumerate(parents):
        if p >= 0 and not seen[p]:
            seen[p] = True
            d = float(np.linalg.norm(heads[b] - heads[p]))
            if d > 1e-3 * size:
                lengths[p] = d
    return lengths


def _ensure_object_mode(context: bpy.types.Context) -> None:
    active = context.view_layer.objects.active
    if active is not None and active.mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")


def build_armature(
    context: bpy.types.Context, name: str, parents: np.ndarray, bone_names: list[str], rest: np.ndarray, size: float
) -> bpy.types.Object:
    """An armature object in the scene's collection with one bone per row of `rest` (B,4,4)."""
    arm = bpy.data.armatures.new(name)
    ob = bpy.data.objects.new(name, arm)
    context.scene.collection.objects.link(ob)
    view_layer = context.view_layer
    _ensure_object_mode(context)
    previous = view_layer.objects.active
    view_layer.objects.active = ob
    lengths = _bone_lengths(parents, rest[:, :3, 3], size)
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        bones = []
        for b, bone_name in enumerate(bone_names):
            eb = arm.edit_bones.new(bone_name)
            eb.head, eb.tail = (0.0, 0.0, 0.0), (0.0, float(lengths[b]), 0.0)
            eb.matrix = Matrix(rest[b].astype(np.float64).tolist())
            eb.use_connect, eb.use_deform = False, True
            bones.append(eb)
        for b, p in enumerate(parents):
            if p >= 0:
                bones[b].parent = bones[p]
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
        view_layer.objects.active = previous
    return ob


def bone_rest_matrices(arm_ob: bpy.types.Object, bone_names: list[str]) -> np.ndarray:
    """(B,4,4) bone.matrix_local as Blender stores it, in the rig's bone order."""
    return np.array([np.array(arm_ob.data.bones[n].matrix_local) for n in bone_names], np.float64)


def add_weights(ob: bpy.types.Object, bone_names: list[str], index: np.ndarray, value: np.ndarray) -> None:
    """One vertex group per bone, each weight value added to all its vertices in one call."""
    v, k = index.shape
    flat_bone, flat_w = index.ravel(), value.ravel()
    flat_v = np.repeat(np.arange(v, dtype=np.int64), k)
    keep = flat_w > 0
    flat_bone, flat_w, flat_v = flat_bone[keep], flat_w[keep], flat_v[keep]
    order = np.lexsort((flat_w, flat_bone))  # by bone, then by weight: equal weights form runs
    flat_bone, flat_w, flat_v = flat_bone[order], flat_w[order], flat_v[order]
    cuts = np.flatnonzero((np.diff(flat_bone) != 0) | (np.diff(flat_w) != 0)) + 1
    starts = np.concatenate([[0], cuts]).astype(np.int64)
    ends = np.concatenate([cuts, [len(flat_w)]]).astype(np.int64)
    groups = [ob.vertex_groups.new(name=n) for n in bone_names]
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        if e > s:
            groups[int(flat_bone[s])].add(flat_v[s:e].tolist(), float(flat_w[s]), "REPLACE")


def _fcurves(arm_ob: bpy.types.Object, action: bpy.types.Action):
    """The channelbag of `action` for `arm_ob` (Blender's layered actions), assigned to it."""
    slot = action.slots.new(id_type="OBJECT", name=arm_ob.name)
    strip = action.layers.new("Layer").strips.new(type="KEYFRAME")
    channelbag = strip.channelbag(slot, ensure=True)
    anim = arm_ob.animation_data_create()
    anim.action = action
    anim.action_slot = slot
    return channelbag.fcurves


def key_action(
    arm_ob: bpy.types.Object,
    bone_names: list[str],
    frame_start: int,
    rotations: np.ndarray,
    locations: np.ndarray,
    keyed_location: np.ndarray,
) -> bpy.types.Action:
    """An Action keying rotation_quaternion (and location where `keyed_location`) per frame,
    one keyframe_points.add + foreach_set per F-curve."""
    t = rotations.shape[0]
    action = bpy.data.actions.new(f"{arm_ob.name} Action")
    fcurves = _fcurves(arm_ob, action)
    frames = np.arange(frame_start, frame_start + t, dtype=np.float64)
    co = np.empty((t, 2), np.float64)
    co[:, 0] = frames
    linear = np.full(t, bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["LINEAR"].value, np.int32)
    for b, name in enumerate(bone_names):
        arm_ob.pose.bones[name].rotation_mode = "QUATERNION"
        channels = [("rotation_quaternion", i, rotations[:, b, i]) for i in range(4)]
        if keyed_location[b]:
            channels += [("location", i, locations[:, b, i]) for i in range(3)]
        for prop, i, values in channels:
            fc = fcurves.new(f'pose.bones["{bpy.utils.escape_identifier(name)}"].{prop}', index=i, group_name=name)
            fc.keyframe_points.add(t)
            co[:, 1] = values
            fc.keyframe_points.foreach_set("co", co.astype(np.float32).ravel())
            fc.keyframe_points.foreach_set("interpolation", linear)
            fc.update()
    return action


def _mesh_size(vertices: np.ndarray, heads: np.ndarray) -> float:
    pts = np.concatenate([vertices.reshape(-1, 3), heads]) if len(vertices) else heads
    return float(np.linalg.norm(pts.max(axis=0) - pts.min(axis=0))) or 1.0


def _rigged_copy(scene: bpy.types.Scene, source: bpy.types.Object, arm_ob: bpy.types.Object) -> bpy.types.Object:
    """A copy of the source mesh (its rest shape, materials, UVs), without its old animation, parented
    to the armature (whose transform is the source's)."""
    mesh = source.data.copy()
    mesh.name = f"{source.data.name} Rigged"
    ob = bpy.data.objects.new(f"{source.name} Rigged", mesh)
    for collection in source.users_collection or (scene.collection,):
        collection.objects.link(ob)
    if mesh.shape_keys is not None:
        ob.shape_key_clear()  # the copy's own keys (a mesh copy duplicates them): the rig moves it now
    ob.vertex_groups.clear()
    ob.parent = arm_ob
    ob.matrix_parent_inverse = Matrix.Identity(4)
    ob.matrix_basis = Matrix.Identity(4)
    for mod in trailing_topology_modifiers(source):  # Subdivision and the like after the rig, as on the source
        _copy_modifier(mod, ob)
    return ob


def _copy_modifier(mod: bpy.types.Modifier, ob: bpy.types.Object) -> None:
    """A modifier like `mod` at the end of `ob`'s stack (its settings copied one by one)."""
    new = ob.modifiers.new(mod.name, mod.type)
    for prop in mod.bl_rna.properties:
        if prop.is_readonly or prop.identifier in ("name", "type", "rna_type"):
            continue
        try:
            setattr(new, prop.identifier, getattr(mod, prop.identifier))
        except (AttributeError, TypeError, ValueError):
            pass  # a setting this modifier type cannot take over (e.g. a read-only pointer)


def _disable_old_animation(ob: bpy.types.Object) -> list[str]:
    """Mute shape keys and switch off deforming modifiers (nothing is deleted); what was disabled."""
    disabled = []
    keys = ob.data.shape_keys
    if keys is not None:
        for block in keys.key_blocks:
            if block != keys.reference_key and not block.mute:
                block.mute = True
                disabled.append(f"shape key {block.name}")
    for mod in ob.modifiers:
        if mod.type in DEFORMING_MODIFIERS and (mod.show_viewport or mod.show_render):
            mod.show_viewport = mod.show_render = False
            disabled.append(f"modifier {mod.name}")
    return disabled


TRANSFORM_PATHS = {
    "location", "rotation_euler", "rotation_quaternion", "rotation_axis_angle", "scale",
    "delta_location", "delta_rotation_euler", "delta_rotation_quaternion", "delta_scale",
}  # fmt: skip


def _mute_object_motion(ob: bpy.types.Object) -> list[str]:
    """Mute the F-curves that move the object itself, in its action and in the actions of its NLA strips (the
    actions keep them); what was muted."""
    anim = ob.animation_data
    if anim is None:
        return []
    actions = [anim.action] + [strip.action for track in anim.nla_tracks for strip in track.strips]
    muted = set()
    for action in {a for a in actions if a is not None}:
        for layer in action.layers:
            for strip in layer.strips:
                for bag in getattr(strip, "channelbags", ()):
                    for fc in bag.fcurves:
                        if fc.data_path in TRANSFORM_PATHS and not fc.mute:
                            fc.mute = True
                            muted.add(fc.data_path)
    return [f"object {path} keys" for path in sorted(muted)]


def apply_rig(context: bpy.types.Context, job_id: str, meta: dict, arrays: dict, options: RigOptions) -> RigResult:
    """Create the armature, weights, modifier and action for one `rig` result. Raises InputError /
    LookupError before touching the scene when the result does not fit the source."""
    scene = context.scene
    if options.target not in TARGETS:
        raise InputError(f"Rig target must be one of {', '.join(TARGETS)}, got '{options.target}'.")
    source = None
    if options.source:
        source = lookup.find(bpy.data.objects, options.source, options.source_uid)
        if source is None or source.type != "MESH":
            raise LookupError(
                f"The mesh '{options.source}' this rig was solved from was deleted while it was solved; "
                "run Rig from Motion again on the mesh (Undo brings a deleted mesh back)."
            )
    vertex_count = len(source.data.vertices) if source is not None else None
    check_rig(arrays, meta, vertex_count, what=f"Rig of '{options.source or meta.get('name', '?')}'")
    parents = arrays["parents"].astype(np.int64)
    rest, pose = arrays["rest_matrices"], arrays["pose_matrices"]
    bone_names = list(meta["bone_names"])
    if any(len(n.encode()) > 63 for n in bone_names):
        raise InputError("Rig: bone names must be at most 63 bytes long (Blender's limit).")
    if source is not None and options.target == "REPLACE":
        clash = [n for n in bone_names if n in source.vertex_groups]
        if clash:
            raise InputError(
                f"Mesh '{source.name}' already has vertex groups named like the rig's bones ({', '.join(clash[:5])}); "
                "rename them, or rig into a copy (target COPY)."
            )

    rest_vertices = np.empty(0, np.float32)
    if source is not None:
        rest_vertices = np.empty(vertex_count * 3, np.float32)
        source.data.vertices.foreach_get("co", rest_vertices)
    size = _mesh_size(rest_vertices, rest[:, :3, 3].astype(np.float64))

    name = str(meta.get("name") or "Rig")
    arm_ob = build_armature(context, name, parents, bone_names, rest, size)
    arm_ob[PROP_JOB] = job_id
    arm_ob["tessera_e_rms"] = float(meta.get("e_rms", 0.0))
    arm_ob["tessera_mode"] = str(meta["mode"])
    bone_names = [bone.name for bone in (arm_ob.data.bones[n] for n in bone_names)]
    rotations, locations = pose_basis(parents, rest, pose, bone_rest_matrices(arm_ob, bone_names))
    moved = np.abs(locations).max(axis=0).max(axis=-1) > LOCATION_TOLERANCE * size
    key_action(arm_ob, bone_names, options.frame_start, rotations, locations, (parents < 0) | moved)

    mesh_ob = None
    if source is not None:
        placed = (
            Matrix(np.reshape(options.object_matrix, (4, 4)).tolist())
            if len(options.object_matrix) == 16
            else source.matrix_world.copy()
        )
        arm_ob.matrix_world = placed
        if options.target == "COPY":
            mesh_ob = _rigged_copy(scene, source, arm_ob)
        else:
            mesh_ob = source
            disabled = _disable_old_animation(source)
            if options.object_moves:  # the rig carries the object's motion now: stop its own
                disabled += _mute_object_motion(source)
                source.matrix_world = placed
            mesh_ob["tessera_disabled"] = ", ".join(disabled)
        add_weights(mesh_ob, bone_names, arrays["weight_index"], arrays["weight_value"])
        mod = mesh_ob.modifiers.new(MODIFIER_NAME, "ARMATURE")
        mod.object = arm_ob
        mod.use_vertex_groups, mod.use_bone_envelopes = True, False
        if len(mesh_ob.modifiers) > 1:
            mesh_ob.modifiers.move(len(mesh_ob.modifiers) - 1, 0)  # deform the rest mesh, before the rest
        mesh_ob[PROP_RIG_OF] = arm_ob.name
        for collection in source.users_collection:
            if arm_ob.name not in collection.objects:
                collection.objects.link(arm_ob)
        if scene.collection not in source.users_collection and arm_ob.name in scene.collection.objects:
            scene.collection.objects.unlink(arm_ob)
    t = pose.shape[0]
    scene.frame_end = max(scene.frame_end, options.frame_start + t - 1)
    arm_ob.update_tag()
    return RigResult(arm_ob.name, mesh_ob.name if mesh_ob is not None else None)

"""Gaussian splat sequences: `gaussians.frame` → one point mesh per frame + one visible object.

bpy 5.0 cannot size a PointCloud from Python, so each frame is a vertex-only mesh carrying
the splat attributes. One visible object per sequence runs a Geometry Nodes setup that
takes the frame collection (Collection Info, one instance per child, sorted by name),
keeps the child whose index is the scene frame minus the start frame (Scene Time), turns
it into points and instances a small ellipsoid per splat (rotation + linear scale from
the attributes), coloured by a material reading 'color' and 'opacity'. All of this plays
and renders without Python. The frame's PLY is also written next to the .blend.

Attributes on each frame mesh (point domain):
  position (FLOAT_VECTOR), scale (FLOAT_VECTOR, linear = exp(log scale)), log_scale
  (FLOAT_VECTOR, as in the PLY), rotation (QUATERNION w,x,y,z, normalised), opacity
  (FLOAT, sigmoid of the logit), opacity_logit (FLOAT), color (FLOAT_COLOR, RGBA with
  RGB = clip(0.5 + 0.28209479 * sh_dc, 0, 1), A = opacity), sh_dc (FLOAT_VECTOR).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import bpy
import numpy as np

from .. import storage
from ..shared.results import SH_C0, check_gaussians
from . import lookup
from .splat_ply import splat_ply_steps

NODE_GROUP = "Tessera Gaussian Sequence"
MATERIAL = "Tessera Splat"
MODIFIER_NAME = "Tessera Splats"


@dataclass
class GaussianSequence:
    object_name: str
    collection_name: str
    frames_total: int
    ply_folder: str  # Blender-style path ('//…' when saved)
    # session_uids: found again after a rename (the names stay the original ones, so frame objects keep one prefix)
    object_uid: int = 0
    collection_uid: int = 0


def splat_attributes(arrays: dict[str, np.ndarray]) -> Iterator[tuple[str, str, str, np.ndarray]]:
    """(name, attribute type, foreach_set property, float32 values) per attribute, computed one at a
    time so that applying a big frame can stop between attributes (float32 math throughout)."""
    logit = np.asarray(arrays["opacities"], np.float32)
    opacity = 1.0 / (1.0 + np.exp(-logit))
    log_scale = np.asarray(arrays["scales"], np.float32)
    yield "scale", "FLOAT_VECTOR", "vector", np.exp(log_scale)
    yield "log_scale", "FLOAT_VECTOR", "vector", log_scale
    quats = np.array(arrays["rotations"], np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", quats, quats))
    zero = norms == 0
    quats[zero] = (1.0, 0.0, 0.0, 0.0)  # a zero quaternion means "no rotation"
    norms[zero] = 1.0
    quats /= norms[:, None]
    yield "rotation", "QUATERNION", "value", quats
    yield "opacity", "FLOAT", "value", opacity
    yield "opacity_logit", "FLOAT", "value", logit
    color = np.empty((logit.shape[0], 4), dtype=np.float32)
    np.clip(0.5 + np.float32(SH_C0) * arrays["sh_dc"], 0.0, 1.0, out=color[:, :3])
    color[:, 3] = opacity
    yield "color", "FLOAT_COLOR", "color", color
    yield "sh_dc", "FLOAT_VECTOR", "vector", np.asarray(arrays["sh_dc"], np.float32)


def frame_mesh_steps(name: str, arrays: dict[str, np.ndarray]) -> Iterator[bpy.types.Mesh | None]:
    """Build a vertex-only mesh with the splat attributes (foreach_set only), yielding None after
    each attribute and the finished mesh last."""
    me = bpy.data.meshes.new(name)
    me.vertices.add(arrays["means"].shape[0])
    me.attributes["position"].data.foreach_set("vector", np.ascontiguousarray(arrays["means"], np.float32).ravel())
    yield None
    for attr_name, kind, prop, values in splat_attributes(arrays):
        me.attributes.new(attr_name, kind, "POINT").data.foreach_set(prop, np.ascontiguousarray(values).ravel())
        yield None
    me.update()
    yield me


def build_frame_mesh(name: str, arrays: dict[str, np.ndarray]) -> bpy.types.Mesh:
    """The whole frame mesh in one go (see frame_mesh_steps)."""
    *_, me = frame_mesh_steps(name, arrays)
    return me


def _material() -> bpy.types.Material:
    mat = bpy.data.materials.get(MATERIAL)
    if mat is not None:
        return mat
    mat = bpy.data.materials.new(MATERIAL)
    if bpy.app.version < (5, 0, 0):
        mat.use_nodes = True  # always on (and deprecated) from 5.0
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes.get("Principled BSDF") or nodes.new("ShaderNodeBsdfPrincipled")
    color = nodes.new("ShaderNodeAttribute")
    color.attribute_type, color.attribute_name = "INSTANCER", "color"
    opacity = nodes.new("ShaderNodeAttribute")
    opacity.attribute_type, opacity.attribute_name = "INSTANCER", "opacity"
    links.new(color.outputs["Color"], bsdf.inputs["Base Color"])
    links.new(opacity.outputs["Fac"], bsdf.inputs["Alpha"])
    return mat


def _node_group() -> bpy.types.NodeTree:
    """Collection of frames → the current frame's points → one ellipsoid per splat."""
    group = bpy.data.node_groups.get(NODE_GROUP)
    if group is not None:
        return group
    group = bpy.data.node_groups.new(NODE_GROUP, "GeometryNodeTree")
    iface = group.interface
    iface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    iface.new_socket("Frames", in_out="INPUT", socket_type="NodeSocketCollection")
    iface.new_socket("Start Frame", in_out="INPUT", socket_type="NodeSocketInt")
    iface.new_socket("Frame Count", in_out="INPUT", socket_type="NodeSocketInt")
    iface.new_socket("Material", in_out="INPUT", socket_type="NodeSocketMaterial")
    iface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = group.nodes, group.links
    gin, gout = nodes.new("NodeGroupInput"), nodes.new("NodeGroupOutput")

    info = nodes.new("GeometryNodeCollectionInfo")
    # ORIGINAL: the frames keep their own transforms and follow this object when the user moves it
    info.transform_space = "ORIGINAL"
    info.inputs["Separate Children"].default_value = True
    links.new(gin.outputs["Frames"], info.inputs["Collection"])

    # wanted = clamp(scene frame - start, 0, count - 1): hold the first/last frame outside.
    time = nodes.new("GeometryNodeInputSceneTime")
    offset = nodes.new("ShaderNodeMath")
    offset.operation = "SUBTRACT"
    links.new(time.outputs["Frame"], offset.inputs[0])
    links.new(gin.outputs["Start Frame"], offset.inputs[1])
    last = nodes.new("ShaderNodeMath")
    last.operation = "SUBTRACT"
    links.new(gin.outputs["Frame Count"], last.inputs[0])
    last.inputs[1].default_value = 1.0
    low = nodes.new("ShaderNodeMath")
    low.operation = "MINIMUM"
    links.new(offset.outputs[0], low.inputs[0])
    links.new(last.outputs[0], low.inputs[1])
    wanted = nodes.new("ShaderNodeMath")
    wanted.operation = "MAXIMUM"
    links.new(low.outputs[0], wanted.inputs[0])
    wanted.inputs[1].default_value = 0.0

    index = nodes.new("GeometryNodeInputIndex")
    other = nodes.new("FunctionNodeCompare")
    other.data_type, other.operation = "FLOAT", "NOT_EQUAL"
    other.inputs["Epsilon"].default_value = 0.5
    links.new(index.outputs["Index"], other.inputs["A"])
    links.new(wanted.outputs[0], other.inputs["B"])
    delete = nodes.new("GeometryNodeDeleteGeometry")
    delete.domain = "INSTANCE"
    links.new(info.outputs["Instances"], delete.inputs["Geometry"])
    links.new(other.outputs["Result"], delete.inputs["Selection"])

    realize = nodes.new("GeometryNodeRealizeInstances")
    links.new(delete.outputs["Geometry"], realize.inputs["Geometry"])
    points = nodes.new("GeometryNodeMeshToPoints")
    points.inputs["Radius"].default_value = 0.01
    links.new(realize.outputs["Geometry"], points.inputs["Mesh"])

    ellipsoid = nodes.new("GeometryNodeMeshIcoSphere")
    ellipsoid.inputs["Radius"].default_value = 1.0
    ellipsoid.inputs["Subdivisions"].default_value = 1
    rotation = nodes.new("GeometryNodeInputNamedAttribute")
    rotation.data_type = "QUATERNION"
    rotation.inputs["Name"].default_value = "rotation"
    scale = nodes.new("GeometryNodeInputNamedAttribute")
    scale.data_type = "FLOAT_VECTOR"
    scale.inputs["Name"].default_value = "scale"
    instance = nodes.new("GeometryNodeInstanceOnPoints")
    links.new(points.outputs["Points"], instance.inputs["Points"])
    links.new(ellipsoid.outputs["Mesh"], instance.inputs["Instance"])
    links.new(rotation.outputs["Attribute"], instance.inputs["Rotation"])
    links.new(scale.outputs["Attribute"], instance.inputs["Scale"])
    material = nodes.new("GeometryNodeSetMaterial")
    links.new(instance.outputs["Instances"], material.inputs["Geometry"])
    links.new(gin.outputs["Material"], material.inputs["Material"])
    links.new(material.outputs["Geometry"], gout.inputs["Geometry"])
    return group


def _set_input(mod: bpy.types.Modifier, name: str, value) -> None:
    item = mod.node_group.interface.items_tree[name]
    mod[item.identifier] = value


def start_sequence(
    scene: bpy.types.Scene,
    job_id: str,
    meta: dict,
    collection: bpy.types.Collection | None = None,
    frame_start: int | None = None,
) -> GaussianSequence:
    """The visible object (in `collection`, default the scene's), its hidden frame collection and the folder for
    the PLYs; the first frame plays at `frame_start` (default the scene's first frame)."""
    name = str(meta.get("name") or "Gaussians")
    collection = collection or scene.collection
    frames_collection = bpy.data.collections.new(f"{name} frames")
    collection.children.link(frames_collection)
    # Excluded from the view layer: the frames are only seen through the visible object.
    for layer in scene.view_layers:
        found = _layer_collection(layer.layer_collection, frames_collection)
        if found is not None:
            found.exclude = True

    ob = bpy.data.objects.new(name, bpy.data.meshes.new(name))
    collection.objects.link(ob)
    mod = ob.modifiers.new(MODIFIER_NAME, "NODES")
    mod.node_group = _node_group()
    _set_input(mod, "Frames", frames_collection)
    start = scene.frame_start if frame_start is None else int(frame_start)
    _set_input(mod, "Start Frame", start)
    _set_input(mod, "Frame Count", 0)
    _set_input(mod, "Material", _material())
    ob.data.materials.append(_material())

    folder = storage.output_folder() / f"{storage.safe_name(name)}_{job_id[:8]}_ply"
    folder.mkdir(parents=True, exist_ok=True)
    ply_folder = storage.blender_path(folder)
    ob[storage.PLY_FOLDER_PROP] = ply_folder
    ob["tessera_job"] = job_id
    frames = int(meta.get("frames") or 1)
    scene.frame_end = max(scene.frame_end, start + frames - 1)
    return GaussianSequence(
        ob.name, frames_collection.name, frames, ply_folder, ob.session_uid, frames_collection.session_uid
    )


def _layer_collection(layer: bpy.types.LayerCollection, collection: bpy.types.Collection):
    if layer.collection == collection:
        return layer
    for child in layer.children:
        found = _layer_collection(child, collection)
        if found is not None:
            return found
    return None


def frame_steps(sequence: GaussianSequence, meta: dict, arrays: dict) -> Iterator[None]:
    """Apply one splat frame in small steps, so no single pump call takes long however big it is:
    the point mesh (positions, then one attribute per step), the frame object, then its standard
    3DGS PLY a slice of rows per step. A refetched frame (same splats) reuses its object and rewrites
    its PLY; a frame that arrives again with other splats (a fit's preview, then its final frame)
    replaces the frame object's mesh."""
    count = check_gaussians(arrays)
    frame = int(meta.get("frame", 0))
    ob = _sequence_object(sequence)
    # Zero-padded names keep Collection Info's alphabetical order equal to frame order.
    frame_name = f"{sequence.object_name}.f{frame:05d}"
    existing = _frames_collection(sequence).objects.get(frame_name)
    if existing is None or not _same_splats(existing, arrays["means"]):
        mesh_steps = frame_mesh_steps(frame_name, arrays)
        while (me := next(mesh_steps)) is None:
            yield
        frames_collection = _frames_collection(sequence)  # looked up again: the user may act between steps
        frame_ob = frames_collection.objects.get(frame_name)
        if frame_ob is None:
            frame_ob = bpy.data.objects.new(frame_name, me)
            frames_collection.objects.link(frame_ob)
        else:
            old = frame_ob.data
            frame_ob.data = me
            if old.users == 0:
                bpy.data.meshes.remove(old)
        frame_ob["tessera_frame"] = frame
        frame_ob["tessera_gaussians"] = count
        ob = _sequence_object(sequence)
        _set_input(ob.modifiers[MODIFIER_NAME], "Frame Count", len(frames_collection.objects))
        ob.update_tag()
        yield
    ply_name = storage.safe_name(str(meta.get("ply") or f"frame_{frame:05d}").removesuffix(".ply")) + ".ply"
    yield from splat_ply_steps(storage.absolute(ob[storage.PLY_FOLDER_PROP]) / ply_name, arrays)


def _same_splats(frame_ob: bpy.types.Object, means: np.ndarray) -> bool:
    """Whether the frame object already holds these splat positions (a refetch of the same frame)."""
    mesh = frame_ob.data
    if mesh is None or len(mesh.vertices) != len(means):
        return False
    held = np.empty(len(means) * 3, np.float32)
    mesh.attributes["position"].data.foreach_get("vector", held)
    return bool(np.array_equal(held, np.ascontiguousarray(means, np.float32).ravel()))


def _sequence_object(sequence: GaussianSequence) -> bpy.types.Object:
    ob = lookup.find(bpy.data.objects, sequence.object_name, sequence.object_uid)
    if ob is None:
        raise lookup.TargetGone(f"The splat sequence '{sequence.object_name}' was removed.")
    return ob


def _frames_collection(sequence: GaussianSequence) -> bpy.types.Collection:
    frames = lookup.find(bpy.data.collections, sequence.collection_name, sequence.collection_uid)
    if frames is None:
        raise lookup.TargetGone(f"The frames collection of splat sequence '{sequence.object_name}' was removed.")
    return frames

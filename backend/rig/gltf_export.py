"""A rig as a skinned, animated glTF binary (.glb), written with pygltflib.

Layout: node 0 is the mesh (rest positions, faces, JOINTS_0/WEIGHTS_0) with skin 0; nodes 1..B are the
bones, parented as `rig.parents` (roots at the scene's top level), each at its rest local transform
inv(rest[parent]) @ rest[b]. Inverse bind matrices = inv(rest_matrices), column-major as glTF stores
them. One animation: per bone a rotation sampler of its local pose inv(pose[parent]) @ pose[b] per frame
(LINEAR, at frame / fps seconds), and a translation sampler for roots (a child's local translation is its
constant joint offset in `skeleton` mode; in `free` mode every bone is a root).
glTF allows 4 influences per JOINTS_0 set: with K > 4 the 4 largest are kept and renormalised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from shared.errors import InputError

from .rig_file import Rig, quaternions, rigid_inverse

DEFAULT_FPS = 24.0


def glb_skin_weights(index: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V,K) weights → (V,4) joints uint16 and weights float32: the 4 largest, renormalised; zero pad."""
    v, k = index.shape
    order = np.argsort(-value, axis=1)[:, :4]
    idx = np.take_along_axis(index, order, axis=1)
    val = np.take_along_axis(value, order, axis=1).astype(np.float64)
    if k < 4:
        idx = np.concatenate([idx, np.zeros((v, 4 - k), idx.dtype)], axis=1)
        val = np.concatenate([val, np.zeros((v, 4 - k))], axis=1)
    idx = np.where(val > 0, idx, 0)
    val /= val.sum(axis=1, keepdims=True)
    return idx.astype(np.uint16), val.astype(np.float32)


def write_glb(rig: Rig, rest: np.ndarray, faces: np.ndarray | None, path: str | Path) -> Path:
    """Write `rig` skinning `rest` (V,3) with `faces` (F,3) (none: a point mesh) to a .glb at `path`."""
    try:
        import pygltflib as g
    except ImportError as exc:
        raise InputError("Writing .glb needs pygltflib: pip install pygltflib.") from exc

    rest = np.asarray(rest, dtype=np.float32)
    if rest.shape != (rig.weight_index.shape[0], 3):
        raise InputError(f"The rig skins {rig.weight_index.shape[0]} vertices; the rest pose has shape {rest.shape}.")
    path = Path(path)
    b, t = rig.bone_count, rig.frame_count
    fps = rig.fps or DEFAULT_FPS
    blob = bytearray()
    views: list = []
    accessors: list = []

    def add(array: np.ndarray, ctype: int, atype: str, target: int | None = None, minmax: bool = False) -> int:
        data = np.ascontiguousarray(array)
        while len(blob) % 4:
            blob.append(0)
        views.append(g.BufferView(buffer=0, byteOffset=len(blob), byteLength=data.nbytes, target=target))
        blob.extend(data.tobytes())
        acc = g.Accessor(bufferView=len(views) - 1, componentType=ctype, count=int(data.shape[0]), type=atype)
        if minmax:
            flat = data.reshape(data.shape[0], -1)
            acc.min, acc.max = flat.min(axis=0).tolist(), flat.max(axis=0).tolist()
        accessors.append(acc)
        return len(accessors) - 1

    joints, weights = glb_skin_weights(np.asarray(rig.weight_index), np.asarray(rig.weight_value))
    attrs = g.Attributes(
        POSITION=add(rest, g.FLOAT, g.VEC3, g.ARRAY_BUFFER, minmax=True),
        JOINTS_0=add(joints, g.UNSIGNED_SHORT, g.VEC4, g.ARRAY_BUFFER),
        WEIGHTS_0=add(weights, g.FLOAT, g.VEC4, g.ARRAY_BUFFER),
    )
    if faces is not None and len(faces):
        prim = g.Primitive(
            attributes=attrs,
            indices=add(np.asarray(faces, np.uint32).ravel(), g.UNSIGNED_INT, g.SCALAR, g.ELEMENT_ARRAY_BUFFER),
            mode=g.TRIANGLES,
        )
    else:
        prim = g.Primitive(attributes=attrs, mode=g.POINTS)

    rest_m = np.asarray(rig.rest_matrices, np.float64)
    pose_m = np.asarray(rig.pose_matrices, np.float64)
    parents = np.asarray(rig.parents)
    has = parents >= 0
    par = np.where(has, parents, 0)
    rest_local = np.where(has[:, None, None], rigid_inverse(rest_m[par]), np.eye(4)) @ rest_m
    pose_local = np.where(has[None, :, None, None], rigid_inverse(pose_m[:, par]), np.eye(4)) @ pose_m
    ibm = np.linalg.inv(rest_m).transpose(0, 2, 1).astype(np.float32)  # column-major storage

    rest_q = Rotation.from_matrix(rest_local[:, :3, :3]).as_quat()  # x,y,z,w as glTF wants
    nodes = [g.Node(name=rig.name, mesh=0, skin=0)]
    for j in range(b):
        nodes.append(
            g.Node(
                name=rig.bone_names[j],
                translation=rest_local[j, :3, 3].tolist(),
                rotation=rest_q[j].tolist(),
                children=[int(c) + 1 for c in np.flatnonzero(parents == j)],
            )
        )
    times = add((np.arange(t) / fps).astype(np.float32), g.FLOAT, g.SCALAR, minmax=True)
    q = quaternions(pose_local[..., :3, :3])  # (T,B,4) w,x,y,z, sign-continuous
    samplers, channels = [], []
    for j in range(b):
        out = add(np.ascontiguousarray(q[:, j][:, [1, 2, 3, 0]]).astype(np.float32), g.FLOAT, g.VEC4)
        samplers.append(g.AnimationSampler(input=times, output=out, interpolation="LINEAR"))
        channels.append(
            g.AnimationChannel(sampler=len(samplers) - 1, target=g.AnimationChannelTarget(node=j + 1, path="rotation"))
        )
        if parents[j] < 0:
            out = add(pose_local[:, j, :3, 3].astype(np.float32), g.FLOAT, g.VEC3)
            samplers.append(g.AnimationSampler(input=times, output=out, interpolation="LINEAR"))
            channels.append(
                g.AnimationChannel(
                    sampler=len(samplers) - 1, target=g.AnimationChannelTarget(node=j + 1, path="translation")
                )
            )

    gltf = g.GLTF2(
        asset=g.Asset(generator="Tessera 4D rig", version="2.0"),
        scene=0,
        scenes=[g.Scene(nodes=[0] + [int(j) + 1 for j in np.flatnonzero(~has)])],
        nodes=nodes,
        meshes=[g.Mesh(name=rig.name, primitives=[prim])],
        skins=[g.Skin(name=rig.name, joints=list(range(1, b + 1)), inverseBindMatrices=add(ibm, g.FLOAT, g.MAT4))],
        animations=[g.Animation(name=f"{rig.name}_{rig.mode}", samplers=samplers, channels=channels)],
        accessors=accessors,
        bufferViews=views,
        buffers=[g.Buffer(byteLength=len(blob))],
    )
    gltf.set_binary_blob(bytes(blob))
    path.parent.mkdir(parents=True, exist_ok=True)
    gltf.save_binary(str(path))
    return path

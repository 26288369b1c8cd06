"""Rig from motion in real Blender: the motion collector, the `rig` applier (exact synthetic rig,
played back through the depsgraph), the operator end to end through the real backend, GLB export."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from blender_checks import connect, evaluated_positions
from blender_rig import DATA, REPO, addon

CAT = DATA / "mesh-sequences" / "cat-poses.npz"
HORSE = DATA / "mesh-sequences" / "horse-gallop.npz"
RIG_PLUGIN = REPO / "backend" / "plugins" / "rig.py"


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def mesh_object(bpy, name: str, vertices: np.ndarray, faces: np.ndarray):
    me = bpy.data.meshes.new(name)
    me.vertices.add(len(vertices))
    me.vertices.foreach_set("co", vertices.astype(np.float32).ravel())
    me.loops.add(faces.size)
    me.loops.foreach_set("vertex_index", faces.astype(np.int32).ravel())
    me.polygons.add(len(faces))
    me.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    me.polygons.foreach_set("loop_total", np.full(len(faces), 3, np.int32))
    me.update(calc_edges=True)
    ob = bpy.data.objects.new(name, me)
    bpy.context.scene.collection.objects.link(ob)
    return ob


def shape_key_animated(bpy, name: str, rest: np.ndarray, faces: np.ndarray, frames: np.ndarray):
    """One shape key per frame, keyed 0 → 1 → 0 so scene frame 1 + i shows frames[i]."""
    ob = mesh_object(bpy, name, rest, faces)
    ob.shape_key_add(name="Basis", from_mix=False)
    for i, pos in enumerate(frames):
        kb = ob.shape_key_add(name=f"frame {i}", from_mix=False)
        kb.data.foreach_set("co", pos.astype(np.float32).ravel())
        for f, v in ((i, 0.0), (i + 1, 1.0), (i + 2, 0.0)):
            if 1 <= f <= len(frames):
                kb.value = v
                kb.keyframe_insert("value", frame=f)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, len(frames)
    return ob


# -- a synthetic articulated chain with exact ground truth ---------------------------------------


def _rot(axis: str, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    m = np.eye(4)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def _move(x, y, z) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = (x, y, z)
    return m


def chain_rig(frames: int = 12):
    """A tube along +X bending at two joints: (rest vertices, faces, rig arrays, meta, truth (T,V,3))."""
    rings, around, radius = 31, 8, 0.2
    x = np.linspace(0.0, 3.0, rings)
    a = np.linspace(0, 2 * np.pi, around, endpoint=False)
    verts = np.stack(
        [np.repeat(x, around), np.tile(radius * np.cos(a), rings), np.tile(radius * np.sin(a), rings)], -1
    ).astype(np.float32)
    r, k = np.meshgrid(np.arange(rings - 1), np.arange(around), indexing="ij")
    v00, v01 = r * around + k, r * around + (k + 1) % around
    faces = np.concatenate(
        [np.stack([v00, v01, v00 + around], -1), np.stack([v01, v01 + around, v00 + around], -1)]
    ).reshape(-1, 3)

    # Bones point along +X (Blender bones point along their local +Y), tilted about X so the
    # matrices are not axis aligned; the root also moves.
    parents = np.array([-1, 0, 1], np.int32)
    align = _rot("z", -np.pi / 2) @ _rot("y", 0.3)  # local +Y → +X
    rest = np.stack([_move(b, 0, 0) @ align for b in range(3)])
    t = np.arange(frames)
    pose = np.empty((frames, 3, 4, 4))
    for i in t:
        for b in range(3):
            bend = _rot("x", 0.6 * np.sin(0.5 * i + b)) @ _rot("z", 0.4 * np.cos(0.3 * i - b))
            if b == 0:
                pose[i, b] = _move(0.1 * i, 0.05 * i, 0.2 * np.sin(i)) @ rest[0] @ bend
            else:
                local = np.linalg.inv(rest[b - 1]) @ rest[b]
                pose[i, b] = pose[i, b - 1] @ local @ bend
    seg = np.clip(verts[:, 0], 0, 2.999)
    index = np.stack([np.floor(seg), np.minimum(np.floor(seg) + 1, 2)], -1).astype(np.int32)
    frac = seg - np.floor(seg)
    w1 = np.where(frac > 0.7, (frac - 0.7) / 0.3 * 0.5, 0.0)
    w1[index[:, 0] == 2] = 0.0
    weights = np.stack([1.0 - w1, w1], -1).astype(np.float32)
    arrays = {
        "parents": parents,
        "rest_matrices": rest.astype(np.float32),
        "pose_matrices": pose.astype(np.float32),
        "weight_index": index,
        "weight_value": weights,
    }
    meta = {"name": "Chain Rig", "bone_names": ["hip", "knee", "ankle"], "mode": "skeleton", "e_rms": 0.0}
    deform = arrays["pose_matrices"].astype(np.float64) @ np.linalg.inv(arrays["rest_matrices"].astype(np.float64))
    homo = np.concatenate([verts, np.ones((len(verts), 1), np.float32)], -1).astype(np.float64)
    truth = np.zeros((frames, len(verts), 3))
    for j in range(2):
        m = deform[:, index[:, j]]
        truth += weights[None, :, j, None] * np.einsum("tvij,vj->tvi", m, homo)[..., :3]
    return verts, faces, arrays, meta, truth


def apply(bpy, ob, arrays, meta, target="COPY", frame_start=1):
    rig = addon().appliers.rig
    options = rig.RigOptions(source=ob.name if ob else "", frame_start=frame_start, target=target)
    return rig.apply_rig(bpy.context, "job-test", meta, arrays, options)


# -- (a) the collector ---------------------------------------------------------------------------


def test_collector_returns_the_shape_key_motion_of_a_real_sequence(blender):
    bpy = blender
    cat = load(CAT)
    ob = shape_key_animated(bpy, "Cat", cat["rest"], cat["faces"], cat["frames"])
    scene = bpy.context.scene
    scene.frame_set(4)
    collect = addon().collectors.mesh_motion.evaluated_motion
    rest, frames, faces, matrix, moves = collect(bpy.context, ob, 1, len(cat["frames"]))
    assert not moves and np.array_equal(matrix, np.eye(4))
    assert scene.frame_current == 4  # the user's frame is back
    assert rest.dtype == np.float32 and frames.dtype == np.float32 and faces.dtype == np.int32
    assert np.array_equal(rest, cat["rest"])
    assert frames.shape == cat["frames"].shape
    np.testing.assert_allclose(frames, cat["frames"], atol=1e-5)  # basis + 1·(key − basis) in float32
    assert np.array_equal(frames[5], evaluated_positions(bpy, ob, 6))
    assert np.array_equal(np.sort(faces, axis=1), np.sort(cat["faces"], axis=1))


def test_collector_errors_say_what_to_change(blender):
    bpy = blender
    mm = addon().collectors.mesh_motion
    verts, faces, *_ = chain_rig()
    static = mesh_object(bpy, "Statue", verts, faces)
    with pytest.raises(mm.MotionError, match="nothing to rig"):
        mm.evaluated_motion(bpy.context, static, 1, 10)
    with pytest.raises(mm.MotionError, match="at least 2"):
        mm.evaluated_motion(bpy.context, static, 5, 5)
    empty = bpy.data.objects.new("Empty", None)
    with pytest.raises(mm.MotionError, match="not|select"):
        mm.evaluated_motion(bpy.context, empty, 1, 10)

    # A mesh that loses a vertex at frame 3: a Mask modifier switched on by a keyframe.
    horse_like = mesh_object(bpy, "Horse", verts, faces)
    horse_like.vertex_groups.new(name="keep").add(list(range(len(verts) - 1)), 1.0, "REPLACE")
    mask = horse_like.modifiers.new("mask", "MASK")
    mask.vertex_group = "keep"
    for frame, on in ((1, False), (2, False), (3, True)):
        mask.show_viewport = on
        horse_like.keyframe_insert(f'modifiers["{mask.name}"].show_viewport', frame=frame)
    horse_like.shape_key_add(name="Basis")
    kb = horse_like.shape_key_add(name="up")
    kb.data.foreach_set("co", (verts + 0.1).ravel())
    kb.value = 1.0
    v = len(verts)
    with pytest.raises(mm.MotionError, match=f"changes vertex count at frame 3 \\({v} → {v - 1}\\)"):
        mm.evaluated_motion(bpy.context, horse_like, 1, 5)


# -- (b) the applier with an exact rig -------------------------------------------------------------


def rigged_positions(bpy, ob, frames: int, start: int = 1) -> np.ndarray:
    return np.stack([evaluated_positions(bpy, ob, start + t) for t in range(frames)])


def test_applier_plays_back_the_exact_rig(blender):
    bpy = blender
    verts, faces, arrays, meta, truth = chain_rig()
    source = mesh_object(bpy, "Chain", verts, faces)
    source.location = (0.0, 0.0, 0.0)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 3, 8
    result = apply(bpy, source, arrays, meta, frame_start=3)

    arm = bpy.data.objects[result.armature]
    mesh = bpy.data.objects[result.mesh]
    assert arm.name == "Chain Rig" and arm.type == "ARMATURE" and mesh.name == "Chain Rigged"
    assert [b.name for b in arm.data.bones] == ["hip", "knee", "ankle"]
    assert [b.parent.name if b.parent else None for b in arm.data.bones] == [None, "hip", "knee"]
    np.testing.assert_allclose(
        np.array([np.array(b.matrix_local) for b in arm.data.bones]), arrays["rest_matrices"], atol=1e-5
    )
    assert [g.name for g in mesh.vertex_groups] == ["hip", "knee", "ankle"]
    dense = np.zeros((len(verts), 3), np.float32)
    np.add.at(dense, (np.arange(len(verts))[:, None], arrays["weight_index"]), arrays["weight_value"])
    for b, group in enumerate(mesh.vertex_groups):
        got = np.zeros(len(verts), np.float32)
        nz = np.flatnonzero(dense[:, b] > 0)
        got[nz] = [group.weight(int(i)) for i in nz]
        assert np.array_equal(got, dense[:, b]), group.name
    mod = mesh.modifiers["Tessera Rig"]
    assert mod.type == "ARMATURE" and mod.object == arm
    assert mesh.data.shape_keys is None and source.data is not mesh.data
    action = arm.animation_data.action
    assert tuple(action.frame_range) == (3.0, 3.0 + len(truth) - 1)
    assert scene.frame_end == 3 + len(truth) - 1  # widened to the whole motion

    played = rigged_positions(bpy, mesh, len(truth), start=3)
    np.testing.assert_allclose(played, truth, atol=2e-5)
    for t in (0, 5, 11):
        scene.frame_set(3 + t)
        pb = np.array([np.array(p.matrix) for p in arm.pose.bones])
        np.testing.assert_allclose(pb, arrays["pose_matrices"][t], atol=2e-5)


def test_replace_mutes_the_old_animation_and_keeps_the_shape_keys(blender):
    bpy = blender
    verts, faces, arrays, meta, truth = chain_rig()
    ob = shape_key_animated(bpy, "Chain", verts, faces, truth.astype(np.float32))
    cache = ob.modifiers.new("old cache", "MESH_CACHE")
    subsurf = ob.modifiers.new("smooth look", "SUBSURF")
    subsurf.levels = 0
    keys_before = [kb.name for kb in ob.data.shape_keys.key_blocks]
    result = apply(bpy, ob, arrays, meta, target="REPLACE")
    assert result.mesh == "Chain"
    assert [kb.name for kb in ob.data.shape_keys.key_blocks] == keys_before
    assert all(kb.mute for kb in ob.data.shape_keys.key_blocks[1:])
    assert ob.data.shape_keys.animation_data.action is not None  # the user's keys stay keyed
    assert np.array_equal(
        np.array([kb.data[0].co[:] for kb in ob.data.shape_keys.key_blocks[1:]], np.float32),
        truth[:, 0].astype(np.float32),
    )
    assert not cache.show_viewport and not cache.show_render and subsurf.show_viewport
    assert ob.modifiers[0].name == "Tessera Rig"
    np.testing.assert_allclose(rigged_positions(bpy, ob, len(truth)), truth, atol=2e-5)


def test_rig_result_that_does_not_fit_the_mesh_changes_nothing(blender):
    bpy = blender
    verts, faces, arrays, meta, _ = chain_rig()
    ob = mesh_object(bpy, "Chain", verts[:-8], faces[: -2 * 8])
    objects = len(bpy.data.objects)
    with pytest.raises(Exception, match="weight_index"):
        apply(bpy, ob, arrays, meta)
    assert len(bpy.data.objects) == objects


def test_a_20_bone_rig_on_horse_gallop_applies_quickly(blender):
    bpy = blender
    horse = load(HORSE)
    ob = shape_key_animated(bpy, "Horse", horse["rest"], horse["faces"], horse["frames"])
    start = time.perf_counter()
    addon().collectors.mesh_motion.evaluated_motion(bpy.context, ob, 1, len(horse["frames"]))
    print(f"horse-gallop motion collected in {time.perf_counter() - start:.3f} s")
    rng = np.random.default_rng(0)
    b, t, v = 20, len(horse["frames"]), len(horse["rest"])
    parents = np.arange(-1, b - 1, dtype=np.int32)
    rest = np.stack([_move(*rng.normal(size=3)) @ _rot("z", rng.normal()) for _ in range(b)])
    pose = np.stack(
        [[_move(*(0.1 * rng.normal(size=3))) @ r @ _rot("x", 0.2 * rng.normal()) for r in rest] for _ in range(t)]
    )
    index = np.stack([rng.choice(b, 4, replace=False) for _ in range(v)]).astype(np.int32)
    weights = rng.random((v, 4)).astype(np.float32)
    weights /= weights.sum(1, keepdims=True)
    arrays = {
        "parents": parents,
        "rest_matrices": rest.astype(np.float32),
        "pose_matrices": pose.astype(np.float32),
        "weight_index": index,
        "weight_value": weights.astype(np.float32),
    }
    meta = {"name": "Horse Rig", "bone_names": [f"bone {i}" for i in range(b)], "mode": "skeleton", "e_rms": 0.0}
    start = time.perf_counter()
    result = apply(bpy, ob, arrays, meta)
    seconds = time.perf_counter() - start
    print(f"20-bone rig on horse-gallop ({v} vertices, {t} frames) applied in {seconds:.3f} s")
    assert seconds < 5.0
    skin = addon().appliers.rig.skin(horse["rest"], arrays)
    mesh = bpy.data.objects[result.mesh]
    for frame in (0, 17, 47):
        np.testing.assert_allclose(evaluated_positions(bpy, mesh, 1 + frame), skin[frame], atol=1e-3)


# -- (d) GLB export ----------------------------------------------------------------------------


def read_glb_json(path: Path) -> dict:
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert magic == b"glTF" and version == 2 and length == len(data)
    chunk_length, chunk_type = struct.unpack_from("<I4s", data, 12)
    assert chunk_type == b"JSON"
    return json.loads(data[20 : 20 + chunk_length])


def test_export_gltf_writes_a_skinned_animated_glb(blender, tmp_path):
    bpy = blender
    verts, faces, arrays, meta, _ = chain_rig()
    source = mesh_object(bpy, "Chain", verts, faces)
    result = apply(bpy, source, arrays, meta)
    arm = bpy.data.objects[result.armature]
    for ob in bpy.context.view_layer.objects:
        ob.select_set(False)
    arm.select_set(True)
    bpy.context.view_layer.objects.active = arm
    other = arm.animation_data.action.copy()  # another Action for these bones in the file: not the rig's take
    other.name, other.use_fake_user = "Someone else's walk", True
    path = tmp_path / "chain.glb"
    assert bpy.ops.tessera.export_gltf(filepath=str(path)) == {"FINISHED"}
    gltf = read_glb_json(path)
    assert gltf["skins"] and len(gltf["skins"][0]["joints"]) == 3
    assert len(gltf["animations"]) == 1 and gltf["animations"][0]["channels"]  # the rig's take only
    attributes = [p["attributes"] for mesh in gltf["meshes"] for p in mesh["primitives"]]
    assert any("JOINTS_0" in a and "WEIGHTS_0" in a for a in attributes)
    assert {n.get("name") for n in gltf["nodes"]} >= {"hip", "knee", "ankle", "Chain Rigged"}
    assert [ob.name for ob in bpy.context.selected_objects] == ["Chain Rig"]  # selection restored


def test_export_gltf_needs_an_armature(blender, tmp_path):
    bpy = blender
    for ob in bpy.context.view_layer.objects:
        ob.select_set(False)
    with pytest.raises(RuntimeError, match="armature"):
        bpy.ops.tessera.export_gltf(filepath=str(tmp_path / "x.glb"))
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(RuntimeError, match=r"Cannot write .*rig\.glb: its folder cannot be made"):
        bpy.ops.tessera.export_gltf(filepath=str(tmp_path / "taken" / "rig.glb"))  # checked before exporting


# -- (c) end to end through the real backend ---------------------------------------------------


@pytest.mark.skipif(not RIG_PLUGIN.is_file(), reason="backend/plugins/rig.py (rig.from_motion) has not landed yet")
def test_rig_from_motion_end_to_end_matches_the_source_within_its_error(blender, backend):
    bpy = blender
    cat = load(CAT)
    ob = shape_key_animated(bpy, "Cat", cat["rest"], cat["faces"], cat["frames"])
    bpy.context.view_layer.objects.active = ob
    connect(bpy, backend)
    assert "rig.from_motion" in addon().session.SESSION.client.plugins
    assert bpy.ops.tessera.rig_from_motion(bones=8, mode="SKELETON", iterations=5) == {"FINISHED"}
    assert bpy.ops.tessera.wait(timeout=90) == {"FINISHED"}
    job = next(j for j in addon().session.SESSION.client.jobs.values() if j.plugin == "rig.from_motion")
    arm_name, mesh_name = job.options["rig_result"]
    arm, mesh = bpy.data.objects[arm_name], bpy.data.objects[mesh_name]
    assert arm.type == "ARMATURE" and len(arm.data.bones) == 8
    assert any(b.parent is not None for b in arm.data.bones)  # skeleton mode: a hierarchy
    e_rms = float(arm["tessera_e_rms"])
    played = rigged_positions(bpy, mesh, len(cat["frames"]))
    # E_RMS (Kavan 2010, shared/data/README.md) = 1000 · ||A − A'||_F / sqrt(3 T V) · 2 / diag.
    diag = float(np.linalg.norm(cat["rest"].max(0) - cat["rest"].min(0)))
    played_e_rms = 1000 * float(np.sqrt(np.mean((played - cat["frames"]) ** 2))) * 2 / diag
    print(f"end to end: reported E_RMS {e_rms:.4f}, played back in Blender {played_e_rms:.4f}")
    assert played_e_rms <= 1.05 * e_rms + 1e-3, (played_e_rms, e_rms)
    assert ob.data.shape_keys.animation_data.action is not None  # COPY: the source keeps its animation


def pump_rig_result(bpy, job_id: str, options, meta: dict, arrays: dict) -> tuple[str, str]:
    """Apply a rig result through the pump as if job `job_id` (submitted with RigOptions `options`) sent it;
    (armature, mesh) names."""
    a = addon()
    job = a.client.JobRecord(id=job_id, plugin="rig.from_motion", options=options.as_job_options())
    msg = a.shared.messages.Result(job=job_id, index=0, type="rig", meta=meta, arrays=arrays)
    assert a.pump._apply_result(job, msg, bpy.context.scene, bpy.context) is True
    return job.options["rig_result"]


def test_the_pump_applies_a_rig_result_where_the_operator_said(blender):
    bpy = blender
    verts, faces, arrays, meta, truth = chain_rig()
    source = mesh_object(bpy, "Chain", verts, faces)
    options = addon().appliers.rig.RigOptions(source="Chain", frame_start=5, target="COPY")
    arm_name, mesh_name = pump_rig_result(bpy, "job-1", options, meta, arrays)
    assert bpy.data.objects[mesh_name].parent == bpy.data.objects[arm_name]
    assert source.modifiers.get("Tessera Rig") is None  # COPY leaves the source alone
    np.testing.assert_allclose(evaluated_positions(bpy, bpy.data.objects[mesh_name], 5 + 7), truth[7], atol=2e-5)


def test_a_rig_finds_its_mesh_after_a_rename_but_not_after_a_delete(blender):
    """Jobs remember the mesh by name and session_uid: renaming it while the rig is solved is fine."""
    bpy = blender
    verts, faces, arrays, meta, truth = chain_rig()
    source = mesh_object(bpy, "Chain", verts, faces)
    rig_options = addon().appliers.rig.RigOptions
    options = rig_options(source="Chain", frame_start=5, target="COPY", source_uid=source.session_uid)
    source.name = "Links"
    mesh_object(bpy, "Chain", verts[:3], faces[:1])  # another object takes the old name
    arm_name, mesh_name = pump_rig_result(bpy, "job-2", options, meta, arrays)
    assert mesh_name == "Links Rigged"
    np.testing.assert_allclose(evaluated_positions(bpy, bpy.data.objects[mesh_name], 5 + 7), truth[7], atol=2e-5)

    bpy.data.objects.remove(bpy.data.objects["Links"])
    with pytest.raises(LookupError, match="'Chain' this rig was solved from was deleted"):
        pump_rig_result(bpy, "job-3", options, meta, arrays)


def test_rig_from_motion_needs_a_backend_and_a_moving_mesh(blender):
    bpy = blender
    verts, faces, *_ = chain_rig()
    ob = mesh_object(bpy, "Statue", verts, faces)
    bpy.context.view_layer.objects.active = ob
    with pytest.raises(RuntimeError, match="No backend connection"):
        bpy.ops.tessera.rig_from_motion()
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        with pytest.raises(RuntimeError, match="'Statue' is in Edit Mode: switch to Object Mode"):
            bpy.ops.tessera.rig_from_motion()
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
    camera = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    bpy.context.scene.collection.objects.link(camera)
    bpy.context.view_layer.objects.active = camera
    with pytest.raises(RuntimeError, match="'Cam' is a camera object: make the mesh the active object"):
        bpy.ops.tessera.rig_from_motion()  # the greyed-out button's tooltip says why


def test_quaternions_round_trip_including_half_turns(blender):
    from mathutils import Matrix, Quaternion

    rig = addon().appliers.rig
    rng = np.random.default_rng(1)
    q = rng.normal(size=(200, 4))
    q = np.concatenate([q, [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0], [0, 0.6, 0.8, 0]]])
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    mats = np.array([np.array(Quaternion(x).to_matrix()) for x in q])
    back = rig.quaternions(mats)
    again = np.array([np.array(Quaternion(x).to_matrix()) for x in back])
    np.testing.assert_allclose(again, mats, atol=1e-6)
    assert Matrix(again[0].tolist())  # a valid rotation for Blender


def test_rig_from_motion_sends_the_collected_motion_and_remembers_where_it_goes(blender, backend, monkeypatch):
    """The operator's request as the backend would receive it (the client's submit is recorded)."""
    bpy = blender
    cat = load(CAT)
    ob = shape_key_animated(bpy, "Cat", cat["rest"], cat["faces"], cat["frames"])
    bpy.context.view_layer.objects.active = ob
    connect(bpy, backend)
    client = addon().session.SESSION.client
    sent = {}

    def record(plugin, params=None, arrays=None, options=None):
        sent.update(plugin=plugin, params=params, arrays=arrays, options=options)
        return type("Job", (), {"id": "job-x"})()

    monkeypatch.setattr(client, "submit", record)
    bpy.context.scene.frame_end = 40  # 31 frames after the animation only hold its last pose: not sent
    start = time.perf_counter()
    assert bpy.ops.tessera.rig_from_motion(bones=7, mode="FREE", max_influences=3, target="REPLACE") == {"FINISHED"}
    print(f"collected {cat['frames'].shape} in {time.perf_counter() - start:.3f} s")
    assert sent["plugin"] == "rig.from_motion"
    assert sent["params"] == {"bones": 7, "mode": "free", "max_influences": 3, "iterations": 30, "name": "Cat Rig"}
    assert set(sent["arrays"]) == {"rest", "frames", "faces"}
    np.testing.assert_allclose(sent["arrays"]["frames"], cat["frames"], atol=1e-5)
    assert sent["arrays"]["faces"].shape == cat["faces"].shape
    assert sent["options"] == {
        "rig_source": "Cat",
        "rig_frame_start": 1,
        "rig_target": "REPLACE",
        "rig_object_matrix": np.eye(4).ravel().tolist(),
        "rig_object_moves": False,
        "rig_source_uid": ob.session_uid,  # found again after a rename
        **{"scene": "Scene", "scene_uid": bpy.context.scene.session_uid, "frame_start": 1},  # where results go
    }


# -- object-level motion (keyed location / rotation on top of the mesh's own deformation) ---------


def world_positions(bpy, ob, frame: int) -> np.ndarray:
    co = evaluated_positions(bpy, ob, frame).astype(np.float64)
    m = np.array(ob.matrix_world)
    return co @ m[:3, :3].T + m[:3, 3]


def travelling_chain(bpy, name: str):
    """The chain's shape-key motion plus keyed object location and rotation (a mesh that walks away)."""
    verts, faces, _, _, truth = chain_rig()
    ob = shape_key_animated(bpy, name, verts, faces, truth.astype(np.float32))
    ob.rotation_mode = "XYZ"
    for i in range(len(truth)):
        ob.location = (0.3 * i, -0.1 * i, 0.05 * i)
        ob.rotation_euler = (0.0, 0.1 * i, 0.25 * i)
        ob.keyframe_insert("location", frame=1 + i)
        ob.keyframe_insert("rotation_euler", frame=1 + i)
    bpy.context.view_layer.objects.active = ob
    return ob, len(truth)


def test_collector_bakes_object_level_motion_into_the_first_frames_space(blender):
    bpy = blender
    ob, frames = travelling_chain(bpy, "Walker")
    motion = addon().collectors.mesh_motion.evaluated_motion(bpy.context, ob, 1, frames)
    assert motion.object_moves
    first = motion.object_matrix
    for t in (0, 5, frames - 1):
        world = world_positions(bpy, ob, 1 + t)
        baked = motion.frames[t].astype(np.float64) @ first[:3, :3].T + first[:3, 3]
        np.testing.assert_allclose(baked, world, atol=1e-4)


@pytest.mark.parametrize("target", ["COPY", "REPLACE", "REPLACE_NLA"])
def test_rig_from_motion_carries_object_level_motion(blender, backend, target):
    bpy = blender
    ob, frames = travelling_chain(bpy, f"Walker {target}")
    if target == "REPLACE_NLA":  # the object's keys pushed down into an NLA strip: no active action
        action = ob.animation_data.action
        ob.animation_data.nla_tracks.new().strips.new(action.name, 1, action)
        ob.animation_data.action = None
        target = "REPLACE"
    truth = np.stack([world_positions(bpy, ob, 1 + t) for t in range(frames)])
    connect(bpy, backend)
    assert bpy.ops.tessera.rig_from_motion(bones=3, mode="FREE", target=target) == {"FINISHED"}
    assert bpy.ops.tessera.wait(timeout=90) == {"FINISHED"}
    job = [j for j in addon().session.SESSION.client.jobs.values() if j.plugin == "rig.from_motion"][-1]
    arm_name, mesh_name = job.options["rig_result"]
    mesh = bpy.data.objects[mesh_name]
    played = np.stack([world_positions(bpy, mesh, 1 + t) for t in range(frames)])
    diag = float(np.linalg.norm(truth[0].max(0) - truth[0].min(0)))
    err = 1000 * float(np.sqrt(np.mean((played - truth) ** 2))) * 2 / diag
    reported = float(bpy.data.objects[arm_name]["tessera_e_rms"])
    print(f"{target}: reported E_RMS {reported:.4f}, played back in world space {err:.4f}")
    assert err <= 1.05 * reported + 1e-2
    if target == "REPLACE":
        assert "object location keys" in mesh["tessera_disabled"]
        assert "object rotation_euler keys" in mesh["tessera_disabled"]
        assert ob.animation_data.action is not None or len(ob.animation_data.nla_tracks)  # muted, not deleted


def test_replace_refuses_motion_that_comes_from_a_parent(blender, backend):
    bpy = blender
    verts, faces, _, _, truth = chain_rig()
    ob = shape_key_animated(bpy, "Rider", verts, faces, truth.astype(np.float32))
    carrier = bpy.data.objects.new("Carrier", None)
    bpy.context.scene.collection.objects.link(carrier)
    for i in range(len(truth)):
        carrier.location = (0.2 * i, 0, 0)
        carrier.keyframe_insert("location", frame=1 + i)
    ob.parent = carrier
    bpy.context.view_layer.objects.active = ob
    connect(bpy, backend)
    with pytest.raises(RuntimeError, match="parent or constraints.*Copy"):
        bpy.ops.tessera.rig_from_motion(bones=3, target="REPLACE")


@pytest.mark.parametrize("target", ["COPY", "REPLACE"])
def test_a_subdivision_at_the_end_of_the_stack_is_rigged_under(blender, backend, target):
    """Subdivision last (as characters have it) shapes the moving mesh, not its motion: the motion is read without
    it, the rig goes under it, and the rigged mesh looks like the source, subdivided, at every frame."""
    bpy = blender
    verts, faces, _, _, truth = chain_rig()
    ob = shape_key_animated(bpy, f"Smooth {target}", verts, faces, truth.astype(np.float32))
    smooth = ob.modifiers.new("smooth look", "SUBSURF")
    smooth.levels = 1
    bpy.context.view_layer.objects.active = ob
    source = np.stack([world_positions(bpy, ob, 1 + t) for t in range(len(truth))])
    assert source.shape[1] > len(verts)  # evaluated with the subdivision
    connect(bpy, backend)
    assert bpy.ops.tessera.rig_from_motion(bones=3, mode="FREE", target=target) == {"FINISHED"}
    assert bpy.ops.tessera.wait(timeout=90) == {"FINISHED"}
    job = [j for j in addon().session.SESSION.client.jobs.values() if j.plugin == "rig.from_motion"][-1]
    mesh = bpy.data.objects[job.options["rig_result"][1]]
    assert [m.type for m in mesh.modifiers if m.show_viewport] == ["ARMATURE", "SUBSURF"] and smooth.show_viewport
    played = np.stack([world_positions(bpy, mesh, 1 + t) for t in range(len(truth))])
    diag = float(np.linalg.norm(source[0].max(0) - source[0].min(0)))
    assert np.abs(played - source).max() < 0.02 * diag, np.abs(played - source).max() / diag

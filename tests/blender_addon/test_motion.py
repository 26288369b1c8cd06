"""Motion tokens, the Blender side, in real Blender: the armature clip collector against forward
kinematics of a BVH imported with Blender's own importer, the motion.clip applier (round trip, kept
keys bit for bit, bad clips change nothing), the four operators' requests (client.submit recorded)
and their errors, and the pump applying a motion.clip result / a finished training."""

from __future__ import annotations

import importlib
import re

import numpy as np
import pytest
from blender_checks import connect
from blender_rig import ADDON_MODULE, DATA, addon

BVH_DIR = DATA / "motion" / "bandai-namco-1" / "data"
DASH = BVH_DIR / "dataset-1_dash_normal_001.bvh"  # 20 frames, 22 joints (joint_Root → Hips → ...)
RUN = BVH_DIR / "dataset-1_run_normal_001.bvh"


def am():
    return importlib.import_module(f"{ADDON_MODULE}.collectors.armature_motion")


def applier():
    return importlib.import_module(f"{ADDON_MODULE}.appliers.motion")


def import_bvh(bpy, path):
    assert bpy.ops.import_anim.bvh(filepath=str(path)) == {"FINISHED"}
    ob = bpy.context.active_object
    first, last = (int(round(x)) for x in ob.animation_data.action.frame_range)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = first, last
    return ob


def bvh_offsets(path) -> dict[str, np.ndarray]:
    """Each joint's OFFSET as the file writes it (End Sites skipped)."""
    out, name = {}, None
    for line in path.read_text().splitlines():
        words = line.split()
        if words and words[0] in ("ROOT", "JOINT"):
            name = words[1]
        elif words and words[0] == "End":
            name = None
        elif words and words[0] == "OFFSET" and name is not None:
            out[name] = np.array(words[1:4], np.float64)
            name = None
        elif words and words[0] == "MOTION":
            break
    return out


def quat_matrices(q: np.ndarray) -> np.ndarray:
    w, x, y, z = np.moveaxis(q.astype(np.float64), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def forward_kinematics(parents, offsets, rotations, root_positions):
    """Global (T,J,3) positions and (T,J,3,3) rotations of a wire clip (Y-up)."""
    local = quat_matrices(rotations)
    t, j = rotations.shape[:2]
    rot, pos = np.empty_like(local), np.empty((t, j, 3))
    for k, p in enumerate(parents):
        if p < 0:
            rot[:, k], pos[:, k] = local[:, k], root_positions
        else:
            rot[:, k] = rot[:, p] @ local[:, k]
            pos[:, k] = pos[:, p] + np.einsum("tij,j->ti", rot[:, p], offsets[k].astype(np.float64))
    return pos, rot


def y_up(v: np.ndarray) -> np.ndarray:
    return np.stack([v[..., 0], v[..., 2], -v[..., 1]], -1)


def pose(bpy, ob, names, frame):
    """(J,4,4) evaluated pose_bone.matrix of `names` at `frame`."""
    bpy.context.scene.frame_set(frame)
    ob_eval = ob.evaluated_get(bpy.context.evaluated_depsgraph_get())
    return np.array([np.array(ob_eval.pose.bones[n].matrix) for n in names])


def keyed_chain(bpy, name="Chain", frames=(1, 12, 30)):
    """A 4-bone armature (quaternion bones, tilted rest frames, root location) keyed on `frames`."""
    from mathutils import Euler, Quaternion

    arm = bpy.data.armatures.new(name)
    ob = bpy.data.objects.new(name, arm)
    bpy.context.scene.collection.objects.link(ob)
    bpy.context.view_layer.objects.active = ob
    bpy.ops.object.mode_set(mode="EDIT")
    heads = [(0, 0, 1), (0.1, 0.05, 1.5), (0.3, -0.1, 1.9), (0.5, 0.0, 2.1)]
    bones = []
    for i, h in enumerate(heads):
        eb = arm.edit_bones.new(f"b{i}")
        eb.head, eb.tail, eb.roll = h, (h[0] + 0.1, h[1] + 0.2, h[2] + 0.4), 0.3 * i
        if bones:
            eb.parent = bones[-1]
        bones.append(eb)
    bpy.ops.object.mode_set(mode="OBJECT")
    for k, f in enumerate(frames):
        for i, pb in enumerate(ob.pose.bones):
            pb.rotation_mode = "QUATERNION"
            pb.rotation_quaternion = Quaternion(Euler((0.3 * k + 0.1 * i, -0.2 * i, 0.4 * k - 0.1)))
            pb.keyframe_insert("rotation_quaternion", frame=f)
        ob.pose.bones[0].location = (0.2 * k, 0.1 * k * k, 0.05)
        ob.pose.bones[0].keyframe_insert("location", frame=f)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = frames[0], frames[-1]
    return ob


def action_keys(action, slot=None) -> dict[tuple[str, int], np.ndarray]:
    out = {}
    for fc in am().action_fcurves(action, slot):
        co = np.empty(len(fc.keyframe_points) * 2, np.float32)
        fc.keyframe_points.foreach_get("co", co)
        out[(fc.data_path, fc.array_index)] = co.reshape(-1, 2)
    return out


# -- (a) the collector ---------------------------------------------------------------------------


def test_collector_matches_forward_kinematics_of_the_imported_bvh(blender):
    bpy = blender
    ob = import_bvh(bpy, DASH)
    bpy.context.scene.frame_set(4)
    clip = am().armature_clip(bpy.context, ob, 1, 20)
    assert bpy.context.scene.frame_current == 4  # restored
    names, parents, offsets, rotations, root_positions = clip
    # joint_Root only carries Hips, which moves away from it (its own position channels): Hips is the root
    assert names[0] == "Hips" and "joint_Root" not in names and len(names) == 21
    assert parents.dtype == np.int32 and offsets.dtype == rotations.dtype == root_positions.dtype == np.float32
    assert rotations.shape == (20, 21, 4) and root_positions.shape == (20, 3) and parents[0] == -1
    assert all(parents[j] < j for j in range(1, len(parents)))
    np.testing.assert_allclose(np.linalg.norm(rotations, axis=-1), 1.0, atol=1e-5)
    # offsets are the file's OFFSETs (Y-up, same units) below the root; the root's is its rest head
    file_offsets = bvh_offsets(DASH)
    for j, name in enumerate(names[1:], 1):
        np.testing.assert_allclose(offsets[j], file_offsets[name], atol=1e-4, err_msg=name)
    np.testing.assert_allclose(offsets[0], file_offsets["joint_Root"] + file_offsets["Hips"], atol=1e-4)
    positions, _ = forward_kinematics(parents, offsets, rotations, root_positions)
    height = float(np.ptp(positions[0, :, 1]))
    assert height > 100  # centimetres, as in the file
    for frame in (1, 7, 13, 20):
        heads = y_up(pose(bpy, ob, names, frame)[:, :3, 3])
        np.testing.assert_allclose(positions[frame - 1], heads, atol=1e-3 * height, err_msg=f"frame {frame}")
    assert am().keyed_frames(ob) == list(range(1, 21))


def test_collector_errors_say_what_to_do(blender):
    bpy = blender
    MotionError = am().MotionError
    mesh = bpy.data.objects.new("Box", bpy.data.meshes.new("Box"))
    bpy.context.scene.collection.objects.link(mesh)
    with pytest.raises(MotionError, match="'Box' is a mesh object: select an armature"):
        am().armature_clip(bpy.context, mesh, 1, 10)
    empty = bpy.data.objects.new("Empty Rig", bpy.data.armatures.new("Empty Rig"))
    with pytest.raises(MotionError, match="has no bones"):
        am().armature_clip(bpy.context, empty, 1, 10)
    ob = keyed_chain(bpy)
    with pytest.raises(MotionError, match="at least 2"):
        am().armature_clip(bpy.context, ob, 5, 5)
    ob.animation_data_clear()
    with pytest.raises(MotionError, match="has no keyframes: key a few poses"):
        am().armature_clip(bpy.context, ob, 1, 30)
    assert issubclass(MotionError, importlib.import_module(f"{ADDON_MODULE}.shared.errors").InputError)


# -- (b) round trip ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["bvh", "quaternion chain"])
def test_applying_the_collected_clip_reproduces_the_pose_and_keeps_the_keys(blender, source):
    bpy = blender
    ob = import_bvh(bpy, DASH) if source == "bvh" else keyed_chain(bpy)
    scene = bpy.context.scene
    first, last = scene.frame_start, scene.frame_end
    clip = am().armature_clip(bpy.context, ob, first, last)
    names = list(clip.names)
    all_bones = [b.name for b in ob.data.bones]
    before = np.array([pose(bpy, ob, names, f) for f in range(first, last + 1)])
    old = ob.animation_data.action
    old_keys = action_keys(old, ob.animation_data.action_slot)
    kept = [(0, 0), (10, 11)]
    meta = {"name": "take", "fps": 30.0, "joints": names, "kept": kept}
    arrays = {"rotations": clip.rotations, "root_positions": clip.root_positions}
    objects = set(bpy.data.objects.keys())
    name = applier().apply_clip(bpy.context, ob, meta, arrays, first, "inbetween")

    assert name == f"{ob.name} inbetween take 1" and ob.animation_data.action.name == name
    assert old.use_fake_user and ob["tessera_previous_action"] == old.name and old.name in bpy.data.actions
    assert set(bpy.data.objects.keys()) == objects
    after = np.array([pose(bpy, ob, names, f) for f in range(first, last + 1)])
    size = float(np.ptp(before[..., :3, 3].reshape(-1, 3), axis=0).max())
    np.testing.assert_allclose(after[..., :3, 3], before[..., :3, 3], atol=1e-5 * size)
    np.testing.assert_allclose(after[..., :3, :3], before[..., :3, :3], atol=1e-5)
    # the kept frames hold exactly the previous action's key values on every channel both key
    new_keys = action_keys(ob.animation_data.action, ob.animation_data.action_slot)
    assert len(new_keys) >= 4 * len(names)
    compared = 0
    for channel, co in new_keys.items():
        if channel not in old_keys:
            continue
        old_co = dict(zip(old_keys[channel][:, 0].tolist(), old_keys[channel][:, 1].tolist(), strict=True))
        for f in (first, first + 10, first + 11):
            if float(f) in old_co:
                row = co[co[:, 0] == f]
                assert row[0, 1].tobytes() == np.float32(old_co[float(f)]).tobytes(), (channel, f)
                compared += 1
    assert compared >= 2 * 4 * len(names)  # at least frames 0 and 10 on every rotation channel
    # every frame is keyed; bones above the clip's root are keyed too (at rest, or kept values)
    assert {len(co) for co in new_keys.values()} == {last - first + 1}
    assert {p.split('"')[1] for p, _ in new_keys} == set(all_bones)


def test_a_second_take_gets_the_next_number_and_remembers_the_one_before(blender):
    bpy = blender
    ob = keyed_chain(bpy)
    clip = am().armature_clip(bpy.context, ob, 1, 30)
    meta = {"name": "take", "fps": 24, "joints": list(clip.names), "kept": []}
    arrays = {"rotations": clip.rotations, "root_positions": clip.root_positions}
    first = applier().apply_clip(bpy.context, ob, meta, arrays, 1, "generate")
    second = applier().apply_clip(bpy.context, ob, meta, arrays, 1, "generate")
    assert (first, second) == ("Chain generate take 1", "Chain generate take 2")
    assert ob["tessera_previous_action"] == first and bpy.data.actions[first].use_fake_user


# -- (c) bad clips change nothing ----------------------------------------------------------------


def _bad_clips(clip):
    names = list(clip.names)
    good = {"rotations": clip.rotations, "root_positions": clip.root_positions}
    meta = {"name": "take", "fps": 30.0, "joints": names, "kept": []}
    nan = clip.rotations.copy()
    nan[3, 1, 2] = np.nan
    yield "shape", dict(good, rotations=clip.rotations[:, :-1]), meta
    yield "shape", good, dict(meta, joints=names[:-1])
    yield "NaN", dict(good, rotations=nan), meta
    yield "has no bone 'nope'", good, dict(meta, joints=["nope", *names[1:]])
    yield "does not follow its parent", good, dict(meta, joints=names[::-1])
    yield "kept range", good, dict(meta, kept=[[0, 99]])


@pytest.mark.parametrize("case", range(6))
def test_a_bad_clip_raises_and_changes_nothing(blender, case):
    bpy = blender
    ob = keyed_chain(bpy)
    clip = am().armature_clip(bpy.context, ob, 1, 30)
    match, arrays, meta = list(_bad_clips(clip))[case]
    action, actions, objects = ob.animation_data.action, set(bpy.data.actions.keys()), set(bpy.data.objects.keys())
    InputError = importlib.import_module(f"{ADDON_MODULE}.shared.errors").InputError
    with pytest.raises(InputError, match=match):
        applier().apply_clip(bpy.context, ob, meta, arrays, 1, "inbetween")
    assert ob.animation_data.action == action and not action.use_fake_user and "tessera_previous_action" not in ob
    assert set(bpy.data.actions.keys()) == actions and set(bpy.data.objects.keys()) == objects


# -- (d) the operators' requests -----------------------------------------------------------------


@pytest.fixture
def sent(blender, backend, monkeypatch):
    """Connected to the real backend; client.submit records what the operators send."""
    connect(blender, backend)
    client = addon().session.SESSION.client
    record: dict = {}

    def submit(plugin, params=None, arrays=None, options=None):
        record.update(plugin=plugin, params=params, arrays=arrays, options=options)
        return type("Job", (), {"id": "job-x"})()

    monkeypatch.setattr(client, "submit", submit)
    return record


def test_inbetween_sends_the_action_and_the_keyed_frames(blender, sent):
    bpy = blender
    ob = keyed_chain(bpy)
    bpy.context.scene.render.fps = 25
    assert bpy.ops.tessera.motion_inbetween(model="/models/m1") == {"FINISHED"}
    assert sent["plugin"] == "motion.inbetween"
    assert sent["params"] == {
        "model": "/models/m1",
        "joints": "b0\nb1\nb2\nb3",
        "fps": 25.0,
        "keep": "0-0,11-11,29-29",
        "method": "auto",
        "mirror": True,
    }
    assert bpy.ops.tessera.motion_inbetween(model="/models/m1", method="tokens", use_mirror=False) == {"FINISHED"}
    assert sent["params"]["method"] == "tokens" and sent["params"]["mirror"] is False
    bpy.ops.tessera.motion_inbetween(model="/models/m1")
    clip = am().armature_clip(bpy.context, ob, 1, 30)
    assert set(sent["arrays"]) == {"parents", "offsets", "rotations", "root_positions"}
    for key in sent["arrays"]:
        np.testing.assert_array_equal(sent["arrays"][key], getattr(clip, key))
    assert sent["arrays"]["rotations"].shape == (30, 4, 4) and sent["arrays"]["parents"].tolist() == [-1, 0, 1, 2]
    assert sent["options"] == {
        "motion_armature": "Chain",
        "motion_frame_start": 1,
        "motion_mode": "inbetween",
        "motion_kept": [[0, 0], [11, 11], [29, 29]],
        "motion_armature_uid": ob.session_uid,  # found again after a rename
        **{"scene": "Scene", "scene_uid": bpy.context.scene.session_uid, "frame_start": 1},  # where results go
    }
    bpy.context.scene.tessera.motion_model = "/models/trained"  # model="" uses the scene's
    assert bpy.ops.tessera.motion_inbetween() == {"FINISHED"}
    assert sent["params"]["model"] == "/models/trained"


def test_edit_sends_the_selected_bones_and_the_preview_range(blender, sent):
    bpy = blender
    ob = keyed_chain(bpy)
    scene = bpy.context.scene
    scene.tessera.motion_model = "/models/m1"
    for pb in ob.pose.bones:
        pb.select = pb.name in ("b1", "b3")
    scene.use_preview_range = True
    scene.frame_preview_start, scene.frame_preview_end = 10, 20
    assert bpy.ops.tessera.motion_edit(seed=7) == {"FINISHED"}
    assert sent["plugin"] == "motion.edit"
    assert sent["params"] == {
        "model": "/models/m1",
        "joints": "b0\nb1\nb2\nb3",
        "fps": 24.0,
        "frames": "9-19",
        "bones": "b1\nb3",
        "seed": 7,
    }
    assert set(sent["arrays"]) == {"parents", "offsets", "rotations", "root_positions"}
    assert sent["options"]["motion_mode"] == "edit" and sent["options"]["motion_kept"] == [[0, 8], [20, 29]]
    scene.use_preview_range = False
    assert bpy.ops.tessera.motion_edit() == {"FINISHED"}
    assert sent["params"]["frames"] == "0-29" and sent["options"]["motion_kept"] == []


def test_generate_sends_the_skeleton_only(blender, sent):
    bpy = blender
    ob = import_bvh(bpy, DASH)
    bpy.context.view_layer.objects.active = ob
    assert bpy.ops.tessera.motion_generate(text="walk, tired", frames=90, seed=3, model="/m") == {"FINISHED"}
    assert sent["plugin"] == "motion.generate"
    params = sent["params"]
    assert params["text"] == "walk, tired" and params["frames"] == 90 and params["seed"] == 3
    assert set(params) == {"model", "joints", "fps", "text", "frames", "seed"}
    assert set(sent["arrays"]) == {"parents", "offsets"} and sent["arrays"]["offsets"].shape == (21, 3)
    assert params["joints"].split("\n")[0] == "Hips"
    assert sent["options"]["motion_mode"] == "generate"


def test_train_sends_the_files_actions_or_a_folder(blender, sent):
    bpy = blender
    run = import_bvh(bpy, RUN)
    dash = import_bvh(bpy, DASH)  # same skeleton: the run action animates the dash armature's bones too
    bpy.context.view_layer.objects.active = dash
    own, own_slot = dash.animation_data.action, dash.animation_data.action_slot
    assert bpy.ops.tessera.motion_train(out="/models/new", steps=50) == {"FINISHED"}
    assert sent["plugin"] == "motion.train"
    params = sent["params"]
    assert {k: params[k] for k in ("data", "out", "labels_from_filenames", "steps")} == {
        "data": "",
        "out": "/models/new",
        "labels_from_filenames": True,
        "steps": 50,
    }
    labels = params["labels"].split("\n")
    assert sorted(labels) == sorted([run.animation_data.action.name, dash.animation_data.action.name])
    lengths = sent["arrays"]["clip_lengths"]
    assert lengths.dtype == np.int32 and sum(lengths) == len(sent["arrays"]["rotations"])
    assert sent["arrays"]["rotations"].shape[1:] == (21, 4) and sent["arrays"]["root_positions"].shape[1] == 3
    assert params["joints"].split("\n") == [b.name for b in dash.data.bones][1:]  # the clip root's skeleton
    assert params["fps"] == pytest.approx(bpy.context.scene.render.fps / bpy.context.scene.render.fps_base)
    assert sent["options"] == {
        "motion_train_out": "/models/new",
        **{"scene": "Scene", "scene_uid": bpy.context.scene.session_uid, "frame_start": 1},  # where results go
    }
    assert dash.animation_data.action == own and dash.animation_data.action_slot == own_slot  # restored
    assert bpy.ops.tessera.motion_train(data="/bvh", out="/models/new", labels_from_filenames=False) == {"FINISHED"}
    assert sent["params"] == {"data": "/bvh", "out": "/models/new", "labels_from_filenames": False, "steps": 2000}
    assert sent["arrays"] is None


@pytest.mark.parametrize(
    "setup, call, message",
    [
        ("chain", lambda ops: ops.motion_inbetween(), "Choose a motion model"),
        ("mesh", lambda ops: ops.motion_inbetween(model="/m"), "'Box' is a mesh object: select the armature"),
        ("none", lambda ops: ops.motion_generate(text="walk", model="/m"), "No object is active"),
        ("unkeyed", lambda ops: ops.motion_inbetween(model="/m"), "has no keyframes"),
        ("nla", lambda ops: ops.motion_inbetween(model="/m"), "has its keys in NLA strips, not in an active Action"),
        ("chain", lambda ops: ops.motion_edit(model="/m"), "No bones of 'Chain' are selected"),
        ("chain", lambda ops: ops.motion_generate(model="/m"), "Type what the motion should be"),
        ("chain", lambda ops: ops.motion_train(), "Choose a folder for the trained model"),
        ("unkeyed", lambda ops: ops.motion_train(out="/o"), "No Action in this file animates"),
        # the .blend is not saved: '//' has no folder, and the backend would write wherever it runs
        ("chain", lambda ops: ops.motion_train(out="//models/walk"), "The path 'models/walk' (out) is relative"),
        ("chain", lambda ops: ops.motion_inbetween(model="models/m"), "Save the .blend first for '//' paths"),
    ],
)
def test_operator_errors_say_what_to_do_and_send_nothing(blender, sent, setup, call, message):
    bpy = blender
    ob = keyed_chain(bpy)
    for pb in ob.pose.bones:
        pb.select = False
    if setup == "unkeyed":
        old = ob.animation_data.action
        ob.animation_data_clear()
        bpy.data.actions.remove(old)
    elif setup == "nla":  # the keys pushed down into a strip: no active Action
        action = ob.animation_data.action
        ob.animation_data.nla_tracks.new().strips.new(action.name, 1, action)
        ob.animation_data.action = None
    elif setup == "mesh":
        box = bpy.data.objects.new("Box", bpy.data.meshes.new("Box"))
        bpy.context.scene.collection.objects.link(box)
        bpy.context.view_layer.objects.active = box
    elif setup == "none":
        bpy.context.view_layer.objects.active = None
    actions = set(bpy.data.actions.keys())
    with pytest.raises(RuntimeError, match=re.escape(message)):
        call(bpy.ops.tessera)
    assert sent == {} and set(bpy.data.actions.keys()) == actions


# -- (e) the pump --------------------------------------------------------------------------------


def test_the_pump_applies_a_motion_clip_where_the_operator_said(blender):
    bpy = blender
    pump = importlib.import_module(f"{ADDON_MODULE}.pump")
    client_mod = importlib.import_module(f"{ADDON_MODULE}.client")
    messages = importlib.import_module(f"{ADDON_MODULE}.shared.messages")
    ob = keyed_chain(bpy)
    clip = am().armature_clip(bpy.context, ob, 1, 30)
    names = list(clip.names)
    expected = [pose(bpy, ob, names, f) for f in (5, 20)]
    old = ob.animation_data.action
    ob.name = "Chain"
    options = applier().MotionOptions("Chain", 11, "edit", [(0, 0)]).as_job_options()
    job = client_mod.JobRecord(id="job-1", plugin="motion.edit", options=options)
    meta = {"name": "take", "fps": 30.0, "joints": names, "kept": []}
    arrays = {"rotations": clip.rotations, "root_positions": clip.root_positions}
    msg = messages.Result(job="job-1", index=0, type="motion.clip", meta=meta, arrays=arrays)
    assert pump._apply_result(job, msg, bpy.context.scene, bpy.context) is True
    assert job.options["motion_result"] == "Chain edit take 1" == ob.animation_data.action.name
    assert ob["tessera_previous_action"] == old.name
    # placed from scene frame 11 on: clip frame 4 at scene frame 15 (frame 0 is kept from the old action)
    np.testing.assert_allclose(pose(bpy, ob, names, 15), expected[0], atol=1e-5)
    np.testing.assert_allclose(pose(bpy, ob, names, 30), expected[1], atol=1e-5)
    assert bpy.context.scene.frame_end == 40
    # a result for an armature that is gone fails the job instead of writing anywhere
    job.options["motion_armature"] = "Gone"
    with pytest.raises(LookupError, match="'Gone'"):
        pump._apply_result(job, msg, bpy.context.scene, bpy.context)


def test_a_finished_training_becomes_the_scenes_motion_model(blender):
    bpy = blender
    pump = importlib.import_module(f"{ADDON_MODULE}.pump")
    client_mod = importlib.import_module(f"{ADDON_MODULE}.client")
    messages = importlib.import_module(f"{ADDON_MODULE}.shared.messages")
    job = client_mod.JobRecord(id="job-t", plugin="motion.train", options={"motion_train_out": "/models/new"})
    client = type("Client", (), {"jobs": {"job-t": job}})()
    assert pump._apply(client, messages.Done(job="job-t", results=0), bpy.context) is False
    assert bpy.context.scene.tessera.motion_model == "/models/new"
    assert "Motion model trained" in addon().session.SESSION.last_notice


# -- (f) end to end: a real backend in-betweens with a real (tiny) model --------------------------

WALK = BVH_DIR / "dataset-1_walk_tired_001.bvh"  # 247 frames


@pytest.fixture(scope="module")
def tiny_motion_model(tmp_path_factory):
    """The motion tests' tiny model (tests/backend/motion/conftest.py sizes), trained by the CLI in its own
    process so that torch never loads beside bpy here."""
    import importlib.util
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "motion_test_fixtures", Path(__file__).resolve().parents[1] / "backend" / "motion" / "conftest.py"
    )
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    base = tmp_path_factory.mktemp("motion")
    data = base / "clips"
    data.mkdir()
    for clip in fixtures.TINY_CLIPS:
        shutil.copy(clip, data / clip.name)
    config = json.dumps({k: v for k, v in fixtures.TINY_CONFIG.items() if not k.endswith("_steps")})
    out = base / "model"
    cmd = [str(Path(sys.executable).parent / "tessera4d"), "motion", "train", "--data", str(data), "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="400")
    done = subprocess.run([*cmd, "--steps", "60", "--config", config], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return out


def thin_out_keys(action, keep_frames) -> None:
    """Keep the action's keys only on `keep_frames` (the imported BVH keys every frame)."""
    for fc in am().action_fcurves(action):
        co = np.empty(len(fc.keyframe_points) * 2, np.float32)
        fc.keyframe_points.foreach_get("co", co)
        co = co.reshape(-1, 2)
        kept = co[np.isin(np.round(co[:, 0]), keep_frames)]
        fc.keyframe_points.clear()
        fc.keyframe_points.add(len(kept))
        fc.keyframe_points.foreach_set("co", kept.ravel())
        fc.update()


def test_inbetween_end_to_end_makes_a_take_and_keeps_the_users_keys(blender, backend, tiny_motion_model):
    bpy = blender
    ob = import_bvh(bpy, WALK)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 30, 1.0  # the clip's (and the model's) rate
    scene.frame_start, scene.frame_end = 1, 100
    keys = [1, 30, 60, 100]
    user = ob.animation_data.action
    thin_out_keys(user, keys)
    before = action_keys(user)
    names = list(am().armature_clip(bpy.context, ob, 1, 100).names)
    posed = {f: pose(bpy, ob, names, f) for f in keys}
    connect(bpy, backend)
    assert "motion.inbetween" in addon().session.SESSION.client.plugins
    assert bpy.ops.tessera.motion_inbetween(model=str(tiny_motion_model)) == {"FINISHED"}
    assert bpy.ops.tessera.wait(timeout=120) == {"FINISHED"}
    job = next(j for j in addon().session.SESSION.client.jobs.values() if j.plugin == "motion.inbetween")
    assert job.state.name == "DONE", (job.state, job.message, job.error_code)
    take = ob.animation_data.action
    assert take is not user and take.name == job.options["motion_result"]
    # the take is keyed on the generated frames, and the user's action and keys are untouched
    frames = {int(round(f)) for co in action_keys(take).values() for f in co[:, 0]}
    assert set(range(2, 30)) <= frames and set(range(61, 100)) <= frames
    after = action_keys(user)
    assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in before)
    for f in keys:  # the kept (keyed) frames pose the armature as the user keyed them
        np.testing.assert_allclose(pose(bpy, ob, names, f), posed[f], atol=1e-3)
    moved = pose(bpy, ob, names, 45)
    assert np.isfinite(moved).all()

"""Mesh sequences streamed through a real backend into real Blender, played back exactly."""

import time

import numpy as np
import pytest
from blender_checks import connect, evaluated_positions, load_and_wait, load_one_frame_per_chunk
from blender_rig import HORSE, addon

FRAMES_TO_CHECK = (0, 1, 17, 47)


@pytest.fixture(scope="module")
def horse():
    with np.load(HORSE) as data:
        return {k: data[k] for k in data.files}


def check_plays_source(bpy, ob, frames, indices=FRAMES_TO_CHECK):
    start = bpy.context.scene.frame_start
    for i in indices:
        assert np.array_equal(evaluated_positions(bpy, ob, start + i), frames[i]), f"frame {i}"


def test_horse_streams_into_a_mesh_cache_that_plays_exactly_and_survives_reopen(blender, backend, horse, tmp_path):
    bpy = blender
    blend = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))  # saved first: files go next to it
    connect(bpy, backend)
    load_and_wait(bpy, HORSE)

    ob = bpy.data.objects["horse-gallop"]
    assert len(ob.data.vertices) == 8431 and len(ob.data.polygons) == len(horse["faces"])
    mod = ob.modifiers["Tessera Mesh Cache"]
    assert mod.type == "MESH_CACHE" and mod.cache_format == "PC2"
    assert mod.filepath.startswith("//tessera4d/shot/") and mod.filepath.endswith(".pc2")
    assert (mod.forward_axis, mod.up_axis, mod.play_mode) == ("POS_Y", "POS_Z", "SCENE")
    scene = bpy.context.scene
    assert mod.frame_start == scene.frame_start
    assert scene.frame_end >= scene.frame_start + 47
    check_plays_source(bpy, ob, horse["frames"])

    bpy.ops.wm.save_mainfile()
    bpy.ops.tessera.disconnect()
    backend.stop()
    try:
        bpy.ops.wm.open_mainfile(filepath=str(blend))
        check_plays_source(bpy, bpy.data.objects["horse-gallop"], horse["frames"])
    finally:
        backend.start()


def test_unsaved_session_files_move_next_to_the_blend_on_first_save(blender, backend, horse, tmp_path):
    bpy = blender
    connect(bpy, backend)
    load_and_wait(bpy, HORSE)
    ob = bpy.data.objects["horse-gallop"]
    mod = ob.modifiers["Tessera Mesh Cache"]
    unsaved_file = mod.filepath
    assert not unsaved_file.startswith("//")
    assert "/extensions/" in unsaved_file and "/unsaved/" in unsaved_file  # the user folder, not the add-on's

    blend = tmp_path / "later.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    assert mod.filepath.startswith("//tessera4d/later/"), mod.filepath
    moved = tmp_path / "tessera4d" / "later" / mod.filepath.rsplit("/", 1)[1]
    assert moved.is_file()
    import os

    assert not os.path.exists(unsaved_file)
    check_plays_source(bpy, ob, horse["frames"], (0, 30))

    bpy.ops.wm.open_mainfile(filepath=str(blend))
    mod = bpy.data.objects["horse-gallop"].modifiers["Tessera Mesh Cache"]
    assert mod.filepath.startswith("//tessera4d/later/")
    check_plays_source(bpy, bpy.data.objects["horse-gallop"], horse["frames"], (0, 30, 47))


def test_y_up_option_rotates_rest_and_frames_to_z_up(blender, backend, horse):
    bpy = blender
    connect(bpy, backend)
    load_and_wait(bpy, HORSE, y_up=True)
    ob = bpy.data.objects["horse-gallop"]

    def z_up(p):
        return np.stack([p[..., 0], -p[..., 2], p[..., 1]], axis=-1).astype(np.float32)

    rest = np.empty(len(ob.data.vertices) * 3, np.float32)
    ob.data.vertices.foreach_get("co", rest)
    assert np.array_equal(rest.reshape(-1, 3), z_up(horse["rest"]))
    check_plays_source(bpy, ob, z_up(horse["frames"]), (0, 20))


def write_obj(path, vertices, faces):
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")


def test_vertex_count_change_fails_the_job_and_keeps_earlier_frames(blender, backend, tmp_path):
    bpy = blender
    folder = tmp_path / "changing"
    folder.mkdir()
    rng = np.random.default_rng(3)
    grid = rng.uniform(-1, 1, (6, 3)).astype(np.float32)
    faces = [(0, 1, 2), (3, 4, 5)]
    frames = [grid + 0.1 * i for i in range(5)]
    for i, verts in enumerate(frames):
        write_obj(folder / f"frame_{i:03d}.obj", verts, faces)
    extra = np.vstack([grid, [[0, 0, 2]]])
    write_obj(folder / "frame_005.obj", extra, [*faces, (0, 1, 6)])

    connect(bpy, backend)
    # Through the generic plugin runner, one frame per chunk, so frames 0-4 arrive before the change.
    load_one_frame_per_chunk(bpy, folder)
    with pytest.raises(RuntimeError, match=r"vertex count.*6 → 7"):
        bpy.ops.tessera.wait(timeout=60)

    ob = bpy.data.objects["changing"]
    from_pc2 = addon().appliers.pc2.read(addon().storage.absolute(ob.modifiers[0].filepath))
    assert from_pc2.shape[0] == 5
    for i in range(from_pc2.shape[0]):
        assert np.allclose(from_pc2[i], frames[i], atol=1e-6)  # OBJ text keeps 6 decimals
        assert np.array_equal(evaluated_positions(bpy, ob, bpy.context.scene.frame_start + i), from_pc2[i])

    # The backend keeps serving after the failure.
    load_and_wait(bpy, HORSE)
    assert "horse-gallop" in bpy.data.objects


def test_a_sequence_renamed_while_it_streams_gets_all_its_frames(blender, backend, horse):
    bpy = blender
    connect(bpy, backend)
    load_one_frame_per_chunk(bpy, HORSE)
    deadline = time.monotonic() + 60
    while "horse-gallop" not in bpy.data.objects:
        assert time.monotonic() < deadline, "no rest mesh arrived"
        addon().pump.pump(bpy.context)
    bpy.data.objects["horse-gallop"].name = "Hero horse"
    assert bpy.ops.tessera.wait(timeout=120) == {"FINISHED"}
    ob = bpy.data.objects["Hero horse"]
    assert addon().appliers.pc2.read_header(addon().storage.absolute(ob.modifiers[0].filepath))[2] == 48
    check_plays_source(bpy, ob, horse["frames"])


def test_results_go_into_the_collection_active_at_submit(blender, backend):
    bpy = blender
    character = bpy.data.collections.new("CHAR_horse")
    bpy.context.scene.collection.children.link(character)
    layer = bpy.context.view_layer
    layer.active_layer_collection = layer.layer_collection.children["CHAR_horse"]
    connect(bpy, backend)
    load_and_wait(bpy, HORSE)
    ob = bpy.data.objects["horse-gallop"]
    assert [c.name for c in ob.users_collection] == ["CHAR_horse"]


def test_results_go_to_the_scene_and_frames_they_were_asked_for(blender, backend, horse):
    """While a job runs the user edits the frame range and switches to another scene: its results still land in
    the scene it was submitted from, playing from that scene's first frame as it was then."""
    bpy = blender
    shot = bpy.context.scene
    shot.frame_start, shot.frame_end = 10, 20
    connect(bpy, backend)
    assert bpy.ops.tessera.load_mesh_sequence(filepath=str(HORSE)) == {"FINISHED"}
    shot.frame_start, shot.frame_end = 101, 110
    layout = bpy.data.scenes.new("Layout")
    bpy.context.window.scene = layout
    assert bpy.ops.tessera.wait(timeout=120) == {"FINISHED"}
    ob = bpy.data.objects["horse-gallop"]
    assert list(ob.users_scene) == [shot]
    assert (layout.frame_start, layout.frame_end) == (1, 250)  # Blender's defaults: untouched
    assert (shot.frame_start, shot.frame_end) == (101, 110)  # the user's edit, kept
    bpy.context.window.scene = shot
    assert ob.modifiers["Tessera Mesh Cache"].frame_start == 10
    for i in (0, 47):
        assert np.array_equal(evaluated_positions(bpy, ob, 10 + i), horse["frames"][i]), f"frame {i}"


def test_a_sequence_removed_while_it_streams_comes_again_whole(blender, backend, horse):
    """Undo past the results' arrival (or a delete) removes the object of a running job: its results come
    again into a new object and the stream goes on; nothing computed is lost, the job is not cancelled."""
    bpy = blender
    connect(bpy, backend)
    load_one_frame_per_chunk(bpy, HORSE)
    session = addon().session.SESSION
    (job,) = [j for j in session.client.jobs.values() if not j.state.finished]
    deadline = time.monotonic() + 60
    while job.applied < 4:  # the rest mesh and a few frames
        assert time.monotonic() < deadline, "no frames arrived"
        addon().pump.pump(bpy.context)
    bpy.data.objects.remove(bpy.data.objects["horse-gallop"])
    assert bpy.ops.tessera.wait(timeout=120) == {"FINISHED"}
    assert "come again into a new object" in session.last_notice
    ob = bpy.data.objects["horse-gallop"]
    assert addon().appliers.pc2.read_header(addon().storage.absolute(ob.modifiers[0].filepath))[2] == 48
    check_plays_source(bpy, ob, horse["frames"])


def test_addon_refuses_a_chunk_with_another_vertex_count_without_touching_the_cache(blender, backend, horse):
    """The add-on checks every chunk itself (shared.results.check_mesh_frames) before writing."""
    bpy = blender
    connect(bpy, backend)
    load_and_wait(bpy, HORSE)
    target_module = addon().appliers.mesh_sequence
    ob = bpy.data.objects["horse-gallop"]
    path = addon().storage.absolute(ob.modifiers[0].filepath)
    before = path.read_bytes()
    sequence = target_module.MeshSequence(ob.name, 8431, 48)
    bad = {"positions": np.zeros((1, 8430, 3), np.float32)}
    with pytest.raises(Exception, match=r"changes vertex count at frame 48 \(8431 → 8430\)"):
        target_module.apply_frames(sequence, {"start": 48}, bad)
    assert path.read_bytes() == before

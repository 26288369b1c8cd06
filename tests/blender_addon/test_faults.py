"""Faults: a backend killed mid-job, bad input. The user sees each clearly; nothing is applied twice."""

import time

import numpy as np
import pytest
from blender_checks import connect, evaluated_positions, load_and_wait, load_one_frame_per_chunk
from blender_rig import DATA, HORSE, addon

SAMBA = DATA / "mesh-sequences" / "samba.npz"


def test_killed_backend_is_lost_within_two_seconds_and_resumes_after_restart(blender, backend):
    bpy = blender
    session = addon().session.SESSION
    pump = addon().pump.pump
    connect(bpy, backend)
    load_one_frame_per_chunk(bpy, SAMBA)
    job = next(iter(session.client.jobs.values()))
    deadline = time.monotonic() + 30
    while job.applied < 6 and time.monotonic() < deadline:
        pump(None)
    assert job.applied >= 6

    backend.kill9()
    killed = time.monotonic()
    while session.client.state.value != "lost" and time.monotonic() - killed < 5:
        pump(None)
        time.sleep(0.01)
    assert session.client.state.value == "lost"
    assert time.monotonic() - killed <= 2.1
    applied_before = job.applied
    with pytest.raises(RuntimeError, match="lost"):
        bpy.ops.tessera.wait(timeout=5)

    backend.start()
    connect(bpy, backend)  # same address: reconnect with the same session, fetch from job.applied
    try:
        bpy.ops.tessera.wait(timeout=120)
    except RuntimeError as exc:
        # The usual case: the backend died mid-job and says so; what it made is still applied.
        # (Under heavy load it may have finished before the kill: then wait() succeeds.)
        assert "backend stopped while this job was running" in str(exc), exc
    assert job.state.finished and job.applied >= applied_before
    ob = bpy.data.objects["samba"]
    frames = addon().appliers.pc2.read(addon().storage.absolute(ob.modifiers[0].filepath))
    assert frames.shape[0] == job.applied - 1  # one frame per result after the rest mesh, none twice
    with np.load(SAMBA) as data:
        source = data["frames"]
    assert np.array_equal(frames, source[: frames.shape[0]])
    last = frames.shape[0] - 1
    assert np.array_equal(evaluated_positions(bpy, ob, bpy.context.scene.frame_start + last), source[last])


def test_missing_file_fails_with_the_servers_message_and_the_backend_keeps_serving(blender, backend, tmp_path):
    bpy = blender
    connect(bpy, backend)
    missing = tmp_path / "nowhere" / "gone.npz"
    assert bpy.ops.tessera.load_mesh_sequence(filepath=str(missing)) == {"FINISHED"}
    with pytest.raises(RuntimeError, match=r"failed: .*gone\.npz"):
        bpy.ops.tessera.wait(timeout=60)
    load_and_wait(bpy, HORSE)
    assert "horse-gallop" in bpy.data.objects


def test_non_finite_vertices_fail_with_a_clear_message(blender, backend, tmp_path):
    bpy = blender
    with np.load(HORSE) as data:
        rest, faces, frames = data["rest"], data["faces"], data["frames"][:4].copy()
    frames[2, 100, 1] = np.nan
    bad = tmp_path / "nan.npz"
    np.savez(bad, rest=rest, faces=faces, frames=frames)
    connect(bpy, backend)
    scene = bpy.context.scene
    scene.frame_end = 2
    objects, meshes = set(bpy.data.objects.keys()), set(bpy.data.meshes.keys())
    assert bpy.ops.tessera.load_mesh_sequence(filepath=str(bad)) == {"FINISHED"}
    with pytest.raises(RuntimeError, match=r"(?i)nan|finite"):
        bpy.ops.tessera.wait(timeout=60)
    # failed before its first frame: no half-made object, mesh, empty cache or longer frame range is left
    assert set(bpy.data.objects.keys()) == objects and set(bpy.data.meshes.keys()) == meshes
    assert scene.frame_end == 2
    assert not list(addon().storage.output_folder().glob("nan_*.pc2"))
    load_and_wait(bpy, HORSE)


def test_connect_without_a_backend_fails_clearly(blender):
    bpy = blender
    with pytest.raises(RuntimeError, match="No answer from a backend"):
        bpy.ops.tessera.connect(address="tcp://127.0.0.1:9", timeout=0.5)


@pytest.mark.parametrize("address", ["not-an-address", "127.0.0.1:5571", "tcp://gpu-box"])
def test_a_malformed_address_says_how_to_write_one(blender, address):
    with pytest.raises(RuntimeError, match="is not a backend address: write tcp://HOST:PORT"):
        blender.ops.tessera.connect(address=address, timeout=0.5)


def test_remote_address_is_refused_while_online_access_is_off(blender):
    bpy = blender
    assert not bpy.app.online_access  # bpy as a module starts with online access off
    with pytest.raises(RuntimeError, match="online access is off"):
        bpy.ops.tessera.connect(address="tcp://192.0.2.10:5571")


def test_local_mode_without_a_python_path_says_what_to_set(blender):
    bpy = blender
    prefs = bpy.context.preferences.addons["bl_ext.user_default.tessera4d"].preferences
    prefs.mode, prefs.python_executable = "LOCAL", ""
    with pytest.raises(RuntimeError, match="set it in Preferences"):
        bpy.ops.tessera.connect()

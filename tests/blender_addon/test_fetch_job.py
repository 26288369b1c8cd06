"""Closing Blender loses nothing already made: a new Blender session fetches a stored job's results."""

import time

import numpy as np
import pytest
from blender_checks import connect, evaluated_positions, load_and_wait
from blender_rig import HORSE, addon


def pump_until(bpy, condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out pumping"
        addon().pump.pump(bpy.context)
        time.sleep(0.01)


def test_a_new_session_lists_stored_jobs_and_fetches_their_results(blender, backend):
    bpy = blender
    connect(bpy, backend)
    load_and_wait(bpy, HORSE)
    session = addon().session.SESSION
    (job_id,) = [j.id for j in session.client.jobs.values() if j.plugin == "sequence.load_mesh"]

    # "Close Blender": drop the connection, the add-on's memory of its jobs and the scene,
    # as a new Blender process starts (within one process the add-on keeps its job table).
    bpy.ops.tessera.disconnect()
    session.client = None
    session.targets.clear()
    bpy.ops.wm.read_homefile(use_empty=True)
    assert "horse-gallop" not in bpy.data.objects
    connect(bpy, backend)
    assert job_id not in session.client.jobs
    pump_until(bpy, lambda: any(row["id"] == job_id for row in session.client.backend_jobs))
    row = next(row for row in session.client.backend_jobs if row["id"] == job_id)
    assert row["state"] == "done" and row["results"] >= 2

    assert bpy.ops.tessera.fetch_job(job_id=job_id) == {"FINISHED"}
    assert bpy.ops.tessera.wait(timeout=120) == {"FINISHED"}
    ob = bpy.data.objects["horse-gallop"]
    with np.load(HORSE) as data:
        frames = data["frames"]
    start = bpy.context.scene.frame_start
    for i in (0, 23, 47):
        assert np.array_equal(evaluated_positions(bpy, ob, start + i), frames[i]), f"frame {i}"

    # Fetching again makes a second object and leaves the first one as it is.
    assert bpy.ops.tessera.fetch_job(job_id=job_id) == {"FINISHED"}
    assert bpy.ops.tessera.wait(timeout=120) == {"FINISHED"}
    copies = [o for o in bpy.data.objects if o.name.startswith("horse-gallop")]
    assert len(copies) == 2
    for o in copies:
        assert np.array_equal(evaluated_positions(bpy, o, start + 5), frames[5])


def test_fetching_a_job_the_backend_does_not_keep_says_so(blender, backend):
    bpy = blender
    connect(bpy, backend)
    session = addon().session.SESSION
    pump_until(bpy, lambda: session.client.backend_jobs is not None)
    with pytest.raises(RuntimeError, match="no job 'nope'|unknown job|No job"):
        bpy.ops.tessera.fetch_job(job_id="nope")
        bpy.ops.tessera.wait(timeout=10)


def test_a_job_failed_here_can_be_fetched_again_without_reconnecting(blender, backend, monkeypatch):
    """The add-on fails a job itself when it refuses a result; the backend's end of that job still refreshes
    the list of stored jobs, so Fetch Job takes it at once (it was 'no job' until a reconnect)."""
    bpy = blender
    connect(bpy, backend)
    session = addon().session.SESSION
    sequences = addon().appliers.mesh_sequence

    def refuse(*args):
        raise addon().shared.errors.InputError("refused here")

    monkeypatch.setattr(sequences, "check_frames", refuse)
    assert bpy.ops.tessera.load_mesh_sequence(filepath=str(HORSE)) == {"FINISHED"}
    (job_id,) = [j.id for j in session.client.jobs.values() if not j.state.finished]
    with pytest.raises(RuntimeError, match="refused here"):
        bpy.ops.tessera.wait(timeout=60)
    monkeypatch.undo()
    pump_until(bpy, lambda: any(row["id"] == job_id for row in session.client.backend_jobs or ()))
    assert bpy.ops.tessera.fetch_job(job_id=job_id) == {"FINISHED"}


def test_a_rig_fetched_in_a_new_session_binds_the_mesh_it_was_solved_from(blender, backend, tmp_path):
    """The rig job's options (which mesh, where the results go) are stored with the job by the backend, so after
    saving, closing and reopening the .blend, Fetch Results rigs that mesh again, not only the armature."""
    from test_rig import CAT, load, rigged_positions, shape_key_animated

    bpy = blender
    cat = load(CAT)
    ob = shape_key_animated(bpy, "Cat", cat["rest"], cat["faces"], cat["frames"])
    bpy.context.view_layer.objects.active = ob
    connect(bpy, backend)
    assert bpy.ops.tessera.rig_from_motion(bones=4, mode="FREE", iterations=3) == {"FINISHED"}
    session = addon().session.SESSION
    (job_id,) = [j.id for j in session.client.jobs.values() if j.plugin == "rig.from_motion"]
    blend = tmp_path / "cat.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    assert bpy.ops.tessera.wait(timeout=120) == {"FINISHED"}
    _, first_mesh = session.client.jobs[job_id].options["rig_result"]
    expected = rigged_positions(bpy, bpy.data.objects[first_mesh], 3)

    # "Close Blender" after saving (before the rig came back), then open the saved file in a new session
    bpy.ops.tessera.disconnect()
    session.client = None
    session.targets.clear()
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    assert "Cat" in bpy.data.objects and not [o for o in bpy.data.objects if o.type == "ARMATURE"]
    connect(bpy, backend)
    pump_until(bpy, lambda: any(row["id"] == job_id for row in session.client.backend_jobs))
    row = next(row for row in session.client.backend_jobs if row["id"] == job_id)
    assert row["client"]["rig_source"] == "Cat"

    assert bpy.ops.tessera.fetch_job(job_id=job_id) == {"FINISHED"}
    assert bpy.ops.tessera.wait(timeout=120) == {"FINISHED"}
    arm_name, mesh_name = session.client.jobs[job_id].options["rig_result"]
    arm, mesh = bpy.data.objects[arm_name], bpy.data.objects[mesh_name]
    assert arm.type == "ARMATURE" and mesh.type == "MESH" and mesh.modifiers["Tessera Rig"].object == arm
    np.testing.assert_allclose(rigged_positions(bpy, mesh, 3), expected, atol=1e-5)

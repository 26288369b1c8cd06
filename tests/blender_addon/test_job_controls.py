"""Cancel and Release GPU through the operators, against a real backend."""

import time

from blender_checks import connect, load_one_frame_per_chunk
from blender_rig import DATA, addon

SAMBA = DATA / "mesh-sequences" / "samba.npz"


def test_cancel_stops_the_job_and_keeps_what_was_applied(blender, backend):
    bpy = blender
    connect(bpy, backend)
    load_one_frame_per_chunk(bpy, SAMBA)
    client = addon().session.SESSION.client
    job = next(iter(client.jobs.values()))
    while job.applied < 2:
        addon().pump.pump(None)
    assert bpy.ops.tessera.cancel_job(job_id=job.id) == {"FINISHED"}
    assert bpy.ops.tessera.wait(timeout=60) == {"FINISHED"}  # cancelled is not an error
    assert job.state.value in ("cancelled", "done")  # a fast backend may finish before the cancel lands
    ob = bpy.data.objects["samba"]
    frames = addon().appliers.pc2.read(addon().storage.absolute(ob.modifiers[0].filepath))
    assert frames.shape[0] == job.applied - 1
    # cancelling it again says it has ended (CANCELLED, an INFO report, not an error)
    assert bpy.ops.tessera.cancel_job(job_id=job.id) == {"CANCELLED"}


def test_release_gpu_reports_what_the_backend_freed(blender, backend):
    bpy = blender
    connect(bpy, backend)
    session = addon().session.SESSION
    session.last_notice = ""
    assert bpy.ops.tessera.release_gpu() == {"FINISHED"}
    deadline = time.monotonic() + 10
    while not session.last_notice and time.monotonic() < deadline:
        addon().pump.pump(None)
        time.sleep(0.01)
    assert "cached model" in session.last_notice


def test_cancel_of_an_unknown_job_is_a_clear_error(blender, backend):
    import pytest

    bpy = blender
    connect(bpy, backend)
    with pytest.raises(RuntimeError, match="No job 'nope'"):
        bpy.ops.tessera.cancel_job(job_id="nope")

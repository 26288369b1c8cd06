"""Local mode: the add-on starts `python -m backend serve` itself and stops it again."""

import sys

import pytest
from blender_checks import load_and_wait
from blender_rig import ADDON_MODULE, HORSE, addon


def local_prefs(bpy, python):
    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.mode, prefs.python_executable = "LOCAL", python
    return prefs


def test_local_backend_starts_serves_and_stops_on_disconnect_and_disable(blender, tmp_path):
    import addon_utils

    bpy = blender
    prefs = local_prefs(bpy, sys.executable)
    prefs.jobs_folder = str(tmp_path / "jobs")
    assert bpy.ops.tessera.connect(timeout=60) == {"FINISHED"}
    session = addon().session.SESSION
    local = session.local
    assert local.running and session.client.address == local.address
    assert "listening" in local.log_tail()
    assert "/extensions/" in str(local.log_path)  # the user folder, never the add-on folder
    load_and_wait(bpy, HORSE)
    assert (tmp_path / "jobs").is_dir()

    process = local.process
    bpy.ops.tessera.disconnect()
    assert process.poll() is not None and session.local is None

    assert bpy.ops.tessera.connect(timeout=60) == {"FINISHED"}
    process = addon().session.SESSION.local.process
    addon_utils.disable(ADDON_MODULE, default_set=True)
    try:
        assert process.poll() is not None  # unregister stopped it
    finally:
        addon_utils.enable(ADDON_MODULE, default_set=True)


def test_wrong_python_path_is_a_clear_error(blender, tmp_path):
    bpy = blender
    local_prefs(bpy, str(tmp_path / "no-python"))
    with pytest.raises(RuntimeError, match="does not exist"):
        bpy.ops.tessera.connect()


def test_backend_that_exits_early_shows_the_end_of_its_log(blender, tmp_path):
    bpy = blender
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named backend' >&2\nexit 3\n")
    fake.chmod(0o755)
    local_prefs(bpy, str(fake))
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 3.*No module named backend"):
        bpy.ops.tessera.connect(timeout=10)

"""Fixtures for the Blender tests: real Blender (bpy as a module), the extension built and
installed the way users install it, and a real backend process per test module."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from blender_rig import ADDON_MODULE, BLENDER_HOME, REPO, BackendProcess


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    root = tmp_path_factory.mktemp("backend")
    (root / "jobs").mkdir()
    proc = BackendProcess(root / "jobs", root)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory) -> Path:
    """The extension built the way users get it (with wheels when PyPI is reachable)."""
    from backend.addon_build import BuildError, build_extension

    out = tmp_path_factory.mktemp("dist")
    try:
        report = build_extension(out, wheels=True, wheel_cache=REPO / ".cache" / "wheels")
    except BuildError:
        report = build_extension(out, wheels=False)  # offline: the venv already has pyzmq and msgpack
    return Path(getattr(report, "zip_path", report))


@pytest.fixture(scope="session")
def installed_extension(extension_zip):
    import bpy

    result = bpy.ops.extensions.package_install_files(
        filepath=str(extension_zip), repo="user_default", enable_on_install=True
    )
    assert result == {"FINISHED"}
    return ADDON_MODULE


@pytest.fixture
def blender(installed_extension):
    """A fresh empty scene with the extension enabled; yields bpy. Disconnects afterwards."""
    import addon_utils
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    if ADDON_MODULE not in bpy.context.preferences.addons:
        addon_utils.enable(ADDON_MODULE, default_set=True, handle_error=None)
    assert ADDON_MODULE in bpy.context.preferences.addons
    yield bpy
    bpy.ops.tessera.disconnect()


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(BLENDER_HOME, ignore_errors=True)

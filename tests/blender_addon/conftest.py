"""Real Blender (bpy as a module), the real built extension, a real backend process.

HOME and XDG_CACHE_HOME point at a temp dir before bpy is imported: Blender writes its
preferences and extensions under HOME, and Mesa its shader cache under XDG_CACHE_HOME.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="tessera-blender-home-"))
os.environ["HOME"] = str(_HOME)
os.environ["XDG_CACHE_HOME"] = str(_HOME / ".cache")

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
HORSE = DATA / "mesh-sequences" / "horse-gallop.npz"
ADDON_MODULE = "bl_ext.user_default.tessera4d"


def import_without_blender(module: str) -> types.ModuleType:
    """A bpy-free add-on module (e.g. "client", "appliers.pc2") imported without Blender.

    A bare package object whose search path is [blender_addon/, repo root] gives the module
    exactly the relative imports it has inside the built extension (`.shared` → shared/),
    without running the add-on's __init__ (which needs bpy).
    """
    name = "tessera_addon_nobpy"
    if name not in sys.modules:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(REPO / "blender_addon"), str(REPO)]
        sys.modules[name] = pkg
    import importlib

    return importlib.import_module(f"{name}.{module}")


class BackendProcess:
    """`python -m backend serve` on a fixed port; kill -9 and restart keep the jobs folder."""

    def __init__(self, jobs_dir: Path, log_dir: Path, extra_args: tuple[str, ...] = ()):
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.jobs_dir = jobs_dir
        self.log_dir = log_dir
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> None:
        self.starts += 1
        log = self.log_dir / f"backend-{self.starts}.log"
        self.log = log
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "backend",
                    "serve",
                    "--bind",
                    self.address,
                    "--jobs-dir",
                    str(self.jobs_dir),
                    *self.extra_args,
                ],
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "listening" in log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend exited early:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
        raise RuntimeError(f"backend did not start within {timeout} s:\n{log.read_text(errors='replace')}")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill9()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def addon() -> types.ModuleType:
    """The installed add-on's top module (its submodules hold the runtime state)."""
    return sys.modules[ADDON_MODULE]


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
    shutil.rmtree(_HOME, ignore_errors=True)

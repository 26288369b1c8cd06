"""What the Blender tests share: a real backend process, the add-on's modules without Blender,
and HOME/XDG_CACHE_HOME in a temp dir (set on import, before anything imports bpy).

HOME and XDG_CACHE_HOME point at a temp dir before bpy is imported: Blender writes its
preferences and extensions under HOME, and Mesa its shader cache under XDG_CACHE_HOME.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import types
from pathlib import Path

from backend.launcher import free_port, start_backend

BLENDER_HOME = Path(tempfile.mkdtemp(prefix="tessera-blender-home-"))
os.environ["HOME"] = str(BLENDER_HOME)
os.environ["XDG_CACHE_HOME"] = str(BLENDER_HOME / ".cache")

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
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.jobs_dir = jobs_dir
        self.log_dir = log_dir
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> None:
        self.starts += 1
        self.log = self.log_dir / f"backend-{self.starts}.log"
        self.proc, _ = start_backend(self.address, self.jobs_dir, self.log, self.extra_args, timeout=timeout)

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


def addon() -> types.ModuleType:
    """The installed add-on's top module (its submodules hold the runtime state)."""
    return sys.modules[ADDON_MODULE]

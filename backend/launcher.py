"""Start a backend process (`python -m backend serve`) and wait until it listens.

Used by `tessera4d demo` and by the tests' harnesses; the Blender add-on has its own copy of
this idea in `blender_addon/local_backend.py` because it must not import `backend`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from shared.errors import TesseraError

REPO_ROOT = Path(__file__).resolve().parent.parent
LISTENING = "tessera4d backend listening on "


class BackendStartError(TesseraError):
    """The backend process exited or stayed silent; the message ends with its log's last lines."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_backend(
    bind: str,
    jobs_dir: Path,
    log_path: Path,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> tuple[subprocess.Popen, str]:
    """Start `python -m backend serve` with its output in `log_path`; return (process, bound endpoint).

    The endpoint is read from the backend's 'listening' line, so `tcp://127.0.0.1:*` works too.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "backend", "serve", "--bind", bind, "--jobs-dir", str(jobs_dir), *extra_args]
    with log_path.open("wb") as log_file:  # a file, so a chatty backend never blocks on a full pipe
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith(LISTENING):
                return proc, line[len(LISTENING) :].split()[0]
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
    raise BackendStartError(f"The backend did not start (log: {log_path}):\n{tail}")

"""A backend process on this machine, started from the Python the user points the preferences at.

The add-on never imports the backend: it runs `python -m backend serve` in a subprocess,
writes the process's output to a log file in the extension's user folder and stops the
process on disconnect and when the add-on is disabled.
"""

from __future__ import annotations

import socket
import subprocess
from collections import deque
from pathlib import Path


class LocalBackendError(Exception):
    """The local backend could not start or stopped; the message says what to fix."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalBackend:
    """One `python -m backend serve` subprocess bound to localhost."""

    def __init__(self, python: str, jobs_folder: Path, log_path: Path):
        if not python:
            raise LocalBackendError(
                "No Python executable for the local backend: set it in Preferences → Add-ons → Tessera 4D "
                "(the Python of the environment where the tessera4d backend is installed), or switch to Remote."
            )
        if not Path(python).is_file():
            raise LocalBackendError(
                f"The Python executable '{python}' set in the Tessera 4D preferences does not exist."
            )
        self.python = python
        self.jobs_folder = Path(jobs_folder)
        self.log_path = Path(log_path)
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.process: subprocess.Popen | None = None

    def start(self) -> str:
        """Start the process; returns the address to connect to."""
        self.jobs_folder.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Appended, so a restart after a crash keeps the crash's log above the new one.
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it for its whole life
        log.write(f"--- starting the backend on {self.address} ---\n".encode())
        log.flush()
        try:
            self.process = subprocess.Popen(
                [self.python, "-m", "backend", "serve", "--bind", self.address, "--jobs-dir", str(self.jobs_folder)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            raise LocalBackendError(f"Could not run '{self.python}': {exc}") from exc
        finally:
            log.close()  # the child holds its own handle
        return self.address

    def check(self) -> None:
        """Raise LocalBackendError (with the end of the log) if the process has exited."""
        if self.process is None:
            return
        code = self.process.poll()
        if code is not None:
            raise LocalBackendError(
                f"The local backend exited with code {code}. Last lines of {self.log_path}:\n{self.log_tail()}"
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 12) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return "\n".join(deque((line.rstrip() for line in fh), maxlen=lines))
        except OSError:
            return "(no log written)"

    def stop(self, timeout: float = 3.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        self.process = None

"""Start real backend processes (`python -m backend serve`) for the integration tests.

(A uniquely named module: test folders have no __init__.py, so a shared name like `conftest` clashes.)
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from backend.launcher import start_backend

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


@dataclass
class BackendProcess:
    proc: subprocess.Popen
    endpoint: str
    log: Path  # the backend's stderr (its log)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def launch(jobs_dir: Path, *args: str, bind: str = "tcp://127.0.0.1:*", wait: float = 30.0) -> BackendProcess:
    """Start a backend with the test plugins and wait for its 'listening' line."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(REPO)]))
    log = jobs_dir.parent / f"backend-{time.monotonic_ns()}.log"
    extra = ["--plugins-from", "plugins_for_tests", "--log-level", "WARNING", *args]
    proc, endpoint = start_backend(bind, jobs_dir, log, extra, env=env, timeout=wait)
    return BackendProcess(proc, endpoint, log)

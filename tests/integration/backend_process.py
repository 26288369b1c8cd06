"""Start real backend processes (`python -m backend serve`) for the integration tests.

(A uniquely named module: test folders have no __init__.py, so a shared name like `conftest` clashes.)
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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
    cmd = [sys.executable, "-m", "backend", "serve", "--bind", bind, "--jobs-dir", str(jobs_dir)]
    cmd += ["--plugins-from", "plugins_for_tests", "--log-level", "WARNING", *args]
    log = jobs_dir.parent / f"backend-{time.monotonic_ns()}.log"  # a file, so a chatty log never blocks it
    jobs_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as log_file:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log_file, text=True)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if line.startswith("tessera4d backend listening on "):
                return BackendProcess(proc, line.split()[4], log)
        if proc.poll() is not None:
            raise RuntimeError(f"backend exited with {proc.returncode}: {log.read_text()}")
    proc.kill()
    raise RuntimeError("backend did not start in time")

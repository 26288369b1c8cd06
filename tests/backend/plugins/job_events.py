"""Run a job on an in-process JobManager and collect its events (shared by the plugin tests)."""

from __future__ import annotations

import time

from backend.jobs import JobManager
from shared import messages as wire


def run_job(m: JobManager, job: str, plugin: str, params: dict, arrays=None, timeout=60.0) -> list[wire.Message]:
    m.submit(job, plugin, params, arrays or {})
    return events_until_end(m, job, timeout)


def events_until_end(m: JobManager, job: str, timeout: float, got=None) -> list[wire.Message]:
    got = list(got or [])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got += [e for e in m.take_events() if e.job == job]
        if got and isinstance(got[-1], (wire.Done, wire.Failed, wire.Cancelled)):
            return got
        time.sleep(0.01)
    raise AssertionError(f"job {job} did not end: {[type(e).__name__ for e in got]}")


def results(events) -> list[wire.Result]:
    return [e for e in events if isinstance(e, wire.Result)]

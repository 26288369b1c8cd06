"""The plugin API and the host that finds plugins.

A plugin is a class with a `spec` (a `shared.schemas.PluginSpec`) and a `run(ctx)`
generator that yields `Progress` and `Output` events. The job manager persists every
`Output` to the job folder before it is sent, checks for cancel between events, and
turns exceptions into typed `failed` replies. Plugins register through the entry-point
group `tessera4d.plugins` (the built-in ones too), e.g. in a third-party pyproject.toml:

    [project.entry-points."tessera4d.plugins"]
    "mystudio.retime" = "mystudio.plugins:Retime"
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shared.errors import JobCancelled
from shared.schemas import PluginSpec

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "tessera4d.plugins"


@dataclass
class Progress:
    """Where the job is: `fraction` in 0..1 over the whole job, `stage` a short label."""

    stage: str
    fraction: float
    message: str = ""
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # optional preview
    warning: str = ""  # something the user should keep seeing (the add-on shows it with the job until it is cleared)


@dataclass
class Output:
    """One result of the stream (a type from shared.results, its meta and arrays)."""

    type: str
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]


class ModelCache:
    """Models a plugin keeps between jobs; `release` empties it and the CUDA cache."""

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: str, load: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._items:
                self._items[key] = load()
            return self._items[key]

    def release(self) -> str:
        """Drop every cached model and free what the GPU allocator holds. Returns what it did, in words."""
        with self._lock:
            count = len(self._items)
            self._items.clear()
        import gc
        import sys

        gc.collect()
        freed = f"dropped {count} cached model(s)"
        torch = sys.modules.get("torch")  # only if a plugin already imported it: never import torch just for this
        if torch is not None and torch.cuda.is_available():
            before = torch.cuda.memory_reserved()
            torch.cuda.empty_cache()
            freed += f", freed {(before - torch.cuda.memory_reserved()) / 2**20:.0f} MiB of CUDA cache"
        return freed


@dataclass
class JobContext:
    """What a running plugin sees: its checked params, input arrays, a folder, cancel, device."""

    job_id: str
    params: dict[str, Any]
    arrays: dict[str, np.ndarray]
    job_dir: Path
    device: str = "cpu"
    models: ModelCache = field(default_factory=ModelCache)
    cancel_event: threading.Event = field(default_factory=threading.Event)

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def check_cancelled(self) -> None:
        """Call between steps of long inner loops; raises JobCancelled once the user cancelled."""
        if self.cancel_event.is_set():
            raise JobCancelled(f"Job {self.job_id} was cancelled.")


def stream_progress(
    ctx: JobContext, solve: Callable[[Callable[[str, float, str], None], Callable[[], None]], Any]
) -> Generator[Progress, None, Any]:
    """Run a callback-style computation `solve(progress, check_cancelled)` and stream its progress.

    For compute cores written as plain functions (`progress(stage, fraction, message)` callbacks,
    `check_cancelled()` between steps): `result = yield from stream_progress(ctx, lambda p, c: ...)`.
    The computation runs on a helper thread so its progress reaches the client while it works;
    when the job stops listening (cancel, backend stop) it is stopped at its next check, and its
    exception, if any, is re-raised here.
    """
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def check() -> None:
        if stop.is_set():
            raise JobCancelled(f"Job {ctx.job_id} was stopped.")
        ctx.check_cancelled()

    def progress(stage: str, fraction: float, message: str) -> None:
        events.put(Progress(stage, fraction, message))

    def work() -> None:
        try:
            outcome["result"] = solve(progress, check)
        except BaseException as exc:  # re-raised in the job's thread
            outcome["error"] = exc
        finally:
            events.put(None)

    worker = threading.Thread(target=work, name=f"job-{ctx.job_id}", daemon=True)
    worker.start()
    try:
        while (item := events.get()) is not None:
            yield item
    finally:
        stop.set()  # the job stopped listening: the computation stops at its next check
        worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


class Plugin:
    """Base class for plugins: set `spec`, implement `run`."""

    spec: ClassVar[PluginSpec]

    def run(self, ctx: JobContext) -> Iterator[Progress | Output]:
        raise NotImplementedError


def discover_plugins() -> dict[str, type[Plugin]]:
    """Load every plugin registered in the `tessera4d.plugins` entry-point group.

    A plugin that fails to import is logged and skipped so one broken third-party
    package cannot take the backend down.
    """
    found: dict[str, type[Plugin]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
            spec = cls.spec
        except Exception:
            log.exception("Plugin entry point %r could not be loaded; skipping it", ep.name)
            continue
        if spec.name != ep.name:
            log.warning("Plugin entry point %r declares name %r; using the declared name", ep.name, spec.name)
        found[spec.name] = cls
    return dict(sorted(found.items()))

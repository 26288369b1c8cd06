"""The job manager: a queue of jobs and one worker thread that runs plugin generators.

`run_job` is the loop that drives one plugin: every `Progress` becomes an event, every
`Output` is checked, written to the job folder and only then sent; cancel is checked between
yields. `JobManager` queues submitted jobs for its worker and hands finished events to the
server's I/O loop through `take_events()` plus a `notify` callback (called from any thread),
so the loop never waits on a job.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared import messages as wire
from shared.codec import ALLOWED_DTYPES
from shared.errors import ErrorCode, InputError, JobCancelled, ParamError, TesseraError
from shared.schemas import PluginSpec, validate_params

from .job_store import (
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    WARNING_CHARS,
    JobFolder,
    JobRecord,
    JobStore,
    json_default,
)
from .plugin_host import JobContext, ModelCache, Output, Plugin, Progress, discover_plugins

log = logging.getLogger(__name__)

PROGRESS_SAVE_INTERVAL_S = 1.0  # job.json is rewritten on progress at most this often
JOB_LIST_BUDGET = 512 * 1024  # characters of JSON in a `jobs` reply: half the 1 MiB envelope limit

#: One process-wide model cache: plugins share it and `release` empties it.
MODELS = ModelCache()


def resolve_devices() -> list[str]:
    """Every CUDA GPU ('cuda:0', 'cuda:1', …) when torch is installed and sees one, else ['cpu'].

    Imports torch only if it is installed (and never in the I/O thread's way: the manager calls
    this from its start-up thread)."""
    if importlib.util.find_spec("torch") is None:
        return ["cpu"]
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken torch install must not stop the backend
        log.exception("torch is installed but could not be imported; running on the CPU")
        return ["cpu"]
    return [f"cuda:{i}" for i in range(count)] or ["cpu"]


def check_device(device: str) -> str:
    """`device` ("cpu", "cuda", "cuda:1") checked against what this machine has; InputError naming the choices
    otherwise. Returns it normalised ("cuda" → "cuda:0")."""
    name = device.strip().lower()
    if name == "cpu":
        return "cpu"
    kind, _, index = name.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise InputError(f"Unknown device {device!r}: use cpu, cuda or cuda:N (e.g. cuda:1).")
    available = [d for d in resolve_devices() if d != "cpu"]
    if not available:
        raise InputError(
            f"Device {device!r} asked for, but this machine's torch sees no CUDA GPU (no GPU, no driver, or a "
            "CPU-only torch build): use --device cpu, or install a CUDA build of torch on a GPU machine."
        )
    chosen = f"cuda:{int(index or 0)}"
    if chosen not in available:
        raise InputError(f"Device {device!r} does not exist here: this machine has {', '.join(available)}.")
    return chosen


def _check_arrays(arrays: Any, what: str) -> dict[str, np.ndarray]:
    """Arrays a plugin yields must be able to travel: wire dtypes, finite floats. Returns them C-contiguous."""
    if not isinstance(arrays, dict):
        raise TesseraError(f"{what}: arrays must be a dict of numpy arrays, got {type(arrays).__name__}.")
    out = {}
    for name, value in arrays.items():
        arr = np.ascontiguousarray(value)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        if arr.dtype.str not in ALLOWED_DTYPES:
            raise TesseraError(f"{what}: array '{name}' has dtype {arr.dtype}, which cannot be sent.")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise TesseraError(f"{what}: array '{name}' contains NaN or infinite values.")
        out[str(name)] = arr
    return out


def _plain_meta(item: Output, what: str) -> dict[str, Any]:
    """The meta as plain JSON types (numpy scalars become numbers, tuples lists), so what is sent
    live is exactly what a later fetch reads back from disk."""
    if not isinstance(item.type, str) or not isinstance(item.meta, dict):
        raise TesseraError(f"{what}: type must be a string and meta a dict.")
    try:
        return json.loads(json.dumps(item.meta, default=json_default))
    except (TypeError, ValueError) as exc:
        raise TesseraError(f"{what}: meta must be JSON-able (numbers, text, lists, dicts): {exc}") from exc


def end_message(record: JobRecord) -> wire.Message:
    """The Done / Failed / Cancelled message that describes an ended job."""
    if record.state == DONE:
        seconds = max(record.finished - (record.started or record.created), 0.0)
        return wire.Done(job=record.id, results=record.results, seconds=seconds)
    if record.state == CANCELLED:
        return wire.Cancelled(job=record.id, results=record.results)
    return wire.Failed(job=record.id, code=record.error_code, message=record.error_message, results=record.results)


def run_job(
    plugin: type[Plugin],
    ctx: JobContext,
    folder: JobFolder,
    record: JobRecord,
    emit: Callable[[wire.Message], None],
    lock: threading.RLock,
) -> None:
    """Run one job to its end, updating `record` (and job.json) under `lock` and emitting wire messages.

    `emit` is called with `lock` held, after the record change it reports, so a reader holding
    the lock always sees events and record agree. Never raises for plugin errors: they end the job.
    """
    name = plugin.spec.name
    with lock:
        record.state, record.started = RUNNING, time.time()
        folder.save(record)
    last_save = time.monotonic()
    end_state, code, message = DONE, "", ""
    gen: Iterator[Progress | Output] | None = None
    try:
        ctx.check_cancelled()
        gen = plugin().run(ctx)
        for item in gen:
            if isinstance(item, Output):
                index = record.results
                what = f"Plugin '{name}' result {index} ({item.type})"
                meta = _plain_meta(item, what)
                arrays = _check_arrays(item.arrays, what)
                folder.write_result(index, item.type, meta, arrays)  # persisted before it is sent
                with lock:
                    record.results = index + 1
                    folder.save(record)
                    last_save = time.monotonic()
                    emit(wire.Result(job=record.id, index=index, type=item.type, meta=meta, arrays=arrays))
            elif isinstance(item, Progress):
                arrays = _check_arrays(item.arrays, f"Plugin '{name}' progress preview")
                with lock:
                    record.stage, record.message = str(item.stage), str(item.message)
                    record.add_warning(str(item.warning))
                    record.fraction = min(max(float(item.fraction), 0.0), 1.0)
                    if time.monotonic() - last_save > PROGRESS_SAVE_INTERVAL_S:
                        folder.save(record)
                        last_save = time.monotonic()
                    emit(
                        wire.Progress(
                            job=record.id,
                            stage=record.stage,
                            fraction=record.fraction,
                            message=record.message,
                            warning=str(item.warning)[:WARNING_CHARS],
                            arrays=arrays,
                        )
                    )
            else:
                raise TesseraError(f"Plugin '{name}' yielded {type(item).__name__}; yield Progress or Output.")
            if ctx.cancelled:
                raise JobCancelled(f"Job {record.id} was cancelled.")
    except JobCancelled:
        end_state, message = CANCELLED, "Cancelled."
    except TesseraError as exc:
        end_state, code, message = FAILED, exc.code.value, exc.message
    except Exception as exc:
        log.exception("Plugin %r failed in job %s", name, record.id)
        end_state, code = FAILED, ErrorCode.PLUGIN_ERROR.value
        message = f"Plugin '{name}' raised {type(exc).__name__}: {exc}"
    finally:
        if gen is not None and hasattr(gen, "close"):
            try:
                gen.close()  # runs the plugin's finally blocks (frees GPU memory, closes files)
            except Exception:
                log.exception("Plugin %r raised while being closed", name)
    with lock:
        record.state, record.finished = end_state, time.time()
        record.error_code, record.error_message = code, message
        if end_state == DONE:
            record.fraction, record.stage = 1.0, record.stage or "done"
        else:
            record.message = message
        folder.save(record)
        emit(end_message(record))


@dataclass
class _QueuedJob:
    record: JobRecord
    plugin: type[Plugin]
    params: dict[str, Any]
    arrays: dict[str, np.ndarray]
    cancel: threading.Event = field(default_factory=threading.Event)


class JobManager:
    """A queue and one worker thread per device (each GPU, or the CPU): a free worker takes the
    next job. Thread-safe: `submit`, `cancel`, `take_events` are called from the I/O loop."""

    def __init__(
        self,
        store: JobStore,
        plugins: dict[str, type[Plugin]] | None = None,
        notify: Callable[[], None] | None = None,
        devices: list[str] | None = None,
    ) -> None:
        self.store = store
        self.plugins = dict(discover_plugins() if plugins is None else plugins)
        self.notify = notify or (lambda: None)
        self.lock = threading.RLock()
        self.records: dict[str, JobRecord] = store.load_all()
        self.models = MODELS
        self.devices: list[str] = list(devices or [])
        self.device_ready = threading.Event()  # set once the devices are known and their workers run
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._jobs: dict[str, _QueuedJob] = {}  # queued or running
        self._running: set[str] = set()
        self._events: deque[wire.Message] = deque()
        self._workers: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Find the devices (this may import torch, so not on the caller's thread) and start a worker on each."""
        threading.Thread(target=self._start_workers, name="tessera4d-devices", daemon=True).start()

    def _start_workers(self) -> None:
        if not self.devices:
            self.devices = resolve_devices()
        for device in self.devices:
            worker = threading.Thread(target=self._work, args=(device,), name=f"tessera4d-worker-{device}", daemon=True)
            self._workers.append(worker)
            worker.start()
        log.info("Workers ready on %s", ", ".join(self.devices))
        self.device_ready.set()

    @property
    def device(self) -> str:
        """The devices in words, as the handshake reports them (e.g. 'cuda:0, cuda:1' or 'cpu')."""
        return ", ".join(self.devices) or "cpu"

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel what runs, drop the queue and let the workers end."""
        with self.lock:
            for job in self._jobs.values():
                job.cancel.set()
        self.device_ready.wait(timeout)
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join(timeout)

    # -- requests from the I/O loop ---------------------------------------------------------
    def specs(self) -> list[PluginSpec]:
        return [cls.spec for cls in self.plugins.values()]

    def submit(
        self,
        job_id: str,
        plugin: str,
        params: dict[str, Any],
        arrays: dict[str, np.ndarray],
        client: dict[str, Any] | None = None,
    ) -> int:
        """Queue a job; returns how many jobs run or wait before it. Raises TesseraError if refused. `client`:
        the client's own notes on the job, stored with it (Submit.client)."""
        cls = self.plugins.get(plugin)
        if cls is None:
            known = ", ".join(self.plugins) or "none"
            message = f"No plugin named {plugin!r} on this backend (it has: {known})."
            raise TesseraError(message, ErrorCode.UNKNOWN_PLUGIN)
        checked = validate_params(cls.spec, params)
        with self.lock:
            if job_id in self.records:
                raise ParamError(f"Job id {job_id!r} is already used; submit with a new id.")
            record = self.store.create(job_id, plugin, checked, client)
            self.records[job_id] = record
            self._jobs[job_id] = _QueuedJob(record, cls, checked, dict(arrays))
            position = len(self._jobs) - 1
        self._queue.put(job_id)
        return position

    def cancel(self, job_id: str) -> None:
        """Stop a job at its next step. An ended job's end message is sent again. Raises for an unknown job."""
        with self.lock:
            record = self._record(job_id)
            job = self._jobs.get(job_id)
            if job is not None:
                job.cancel.set()
                if record.state == QUEUED:  # never started: end it now, the worker will skip it
                    del self._jobs[job_id]
                    record.state, record.finished, record.message = CANCELLED, time.time(), "Cancelled."
                    self.store.folder(job_id).save(record)
                    self._emit(end_message(record))
            elif record.ended:
                self._emit(end_message(record))

    def record(self, job_id: str) -> JobRecord:
        """A copy of a job's record. Raises TesseraError(unknown_job)."""
        with self.lock:
            return copy.deepcopy(self._record(job_id))

    def snapshot(self, job_id: str) -> tuple[list[wire.Message], JobRecord]:
        """Pending events and a copy of the record, taken together: later events are newer than the record."""
        with self.lock:
            return self.take_events(), self.record(job_id)

    def job_list(self, budget: int = JOB_LIST_BUDGET) -> list[dict[str, Any]]:
        """Every job's summary, oldest first; when they would not fit in one message (`budget` characters of
        JSON, well under the envelope limit), the newest that do."""
        with self.lock:
            rows = [r.summary() for r in sorted(self.records.values(), key=lambda r: r.created, reverse=True)]
        kept, size = [], 0
        for row in rows:
            size += len(json.dumps(row, default=json_default))
            if size > budget:
                break
            kept.append(row)
        return kept[::-1]

    def counts(self) -> tuple[int, int]:
        """(running, queued) job counts."""
        with self.lock:
            return len(self._running), len(self._jobs) - len(self._running)

    def take_events(self) -> list[wire.Message]:
        with self.lock:
            events = list(self._events)
            self._events.clear()
            return events

    def release(self) -> str:
        """Drop cached models and empty the CUDA cache; returns what was freed, in words."""
        return self.models.release()

    # -- internals ------------------------------------------------------------------------------
    def _record(self, job_id: str) -> JobRecord:
        record = self.records.get(job_id)
        if record is None:
            raise TesseraError(f"No job {job_id!r} on this backend.", ErrorCode.UNKNOWN_JOB)
        return record

    def _emit(self, msg: wire.Message) -> None:
        with self.lock:
            self._events.append(msg)
        self.notify()

    def _work(self, device: str) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            with self.lock:
                job = self._jobs.get(job_id)
                if job is None:  # cancelled while queued
                    continue
                self._running.add(job_id)
            ctx = JobContext(
                job_id=job_id,
                params=job.params,
                arrays=job.arrays,
                job_dir=self.store.folder(job_id).path,
                device=device,
                models=self.models,
                cancel_event=job.cancel,
            )
            try:
                run_job(job.plugin, ctx, self.store.folder(job_id), job.record, self._emit, self.lock)
            except Exception:  # run_job handles plugin errors; this is a disk error or a bug: keep serving
                log.exception("Job %s could not be run", job_id)
                with self.lock:
                    job.record.state, job.record.error_code = FAILED, ErrorCode.PLUGIN_ERROR.value
                    job.record.error_message = "The backend could not run this job; see its log."
                    self._emit(end_message(job.record))
            finally:
                with self.lock:
                    self._jobs.pop(job_id, None)
                    self._running.discard(job_id)

"""The job folder on disk: what survives a closed Blender, a dropped link or a dead backend.

Layout of one job (`<jobs_dir>/<job_id>/`):

    job.json             the JobRecord (plugin, params, state, progress, result count, error, times)
    results/000000.npz   one file per Output, written BEFORE the result is sent: every array under
                         its own name (uncompressed), plus `__type__` (the result type) and
                         `__meta__` (the meta dict as a JSON string), both 0-d unicode arrays

`job.json` and each result are written to a temporary file and moved into place with
`os.replace`, so a reader (or a restarted backend) never sees half a file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import ErrorCode, ParamError, TesseraError

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
FINAL_STATES = (DONE, FAILED, CANCELLED)
MAX_WARNINGS, WARNING_CHARS = 8, 1000  # a job's kept warnings: a few sentences each, not a log

_JOB_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")
_TYPE_KEY, _META_KEY = "__type__", "__meta__"


def check_job_id(job_id: str) -> str:
    """Job ids become folder names, so only a safe subset is accepted (no '/', no '..')."""
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise ParamError(
            f"Job id {job_id!r} is not usable: use 1-64 letters, digits, '_', '-' or '.' (not starting with '.').",
            ErrorCode.MALFORMED,
        )
    return job_id


def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def jsonable(params: dict[str, Any]) -> dict[str, Any]:
    """The entries of `params` that survive a JSON round trip (others are left out of job.json)."""
    out = {}
    for key, value in params.items():
        try:
            out[key] = json.loads(json.dumps(value, default=json_default))
        except (TypeError, ValueError):
            log.debug("Parameter %r is not JSON-able; not stored in job.json", key)
    return out


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@dataclass
class JobRecord:
    """What job.json holds. Times are Unix seconds; `fraction` is 0..1 over the whole job."""

    id: str
    plugin: str
    params: dict[str, Any]
    state: str = QUEUED
    stage: str = ""
    fraction: float = 0.0
    message: str = ""
    results: int = 0
    error_code: str = ""
    error_message: str = ""
    created: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    client: dict[str, Any] = field(default_factory=dict)  # the client's own notes on the job (Submit.client)
    warnings: list[str] = field(default_factory=list)  # the job's Progress warnings, each once, at most MAX_WARNINGS

    @property
    def ended(self) -> bool:
        return self.state in FINAL_STATES

    def add_warning(self, warning: str) -> None:
        """Keep `warning` (once; the first MAX_WARNINGS of a job, each at most WARNING_CHARS long)."""
        warning = warning[:WARNING_CHARS]
        if warning and warning not in self.warnings and len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(warning)

    def summary(self) -> dict[str, Any]:
        """The dict a `jobs` reply carries for this job."""
        keys = ("id", "plugin", "state", "stage", "fraction", "message", "results", "created", "client", "warnings")
        return {k: getattr(self, k) for k in keys}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class JobFolder:
    """One job's folder: its record and its stored results."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.results_dir = self.path / "results"

    def save(self, record: JobRecord) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.path / "job.json", json.dumps(asdict(record), indent=1, default=json_default).encode())

    def load(self) -> JobRecord:
        return JobRecord.from_json(json.loads((self.path / "job.json").read_text()))

    def result_path(self, index: int) -> Path:
        return self.results_dir / f"{index:06d}.npz"

    def write_result(self, index: int, type_: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
        """Persist one result (before it is sent). Raises TesseraError if it cannot be stored."""
        bad = [name for name in arrays if name in (_TYPE_KEY, _META_KEY)]
        if bad:
            raise TesseraError(f"Result {index} uses the reserved array name(s) {bad}.")
        try:
            meta_json = json.dumps(meta, default=json_default)
        except (TypeError, ValueError) as exc:
            raise TesseraError(f"Result {index} ({type_}) has meta that is not JSON-able: {exc}") from exc
        self.results_dir.mkdir(parents=True, exist_ok=True)
        path = self.result_path(index)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, **{_TYPE_KEY: np.array(type_), _META_KEY: np.array(meta_json)})
        os.replace(tmp, path)
        return path

    def read_result(self, index: int) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
        """(type, meta, arrays) of stored result `index`; arrays have the dtypes and shapes that were sent."""
        with np.load(self.result_path(index), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files if name not in (_TYPE_KEY, _META_KEY)}
            return str(npz[_TYPE_KEY]), json.loads(str(npz[_META_KEY])), arrays

    def iter_results(self, start: int, stop: int) -> Iterator[tuple[int, str, dict[str, Any], dict[str, np.ndarray]]]:
        for index in range(max(start, 0), stop):
            type_, meta, arrays = self.read_result(index)
            yield index, type_, meta, arrays


class JobStore:
    """Every job folder under `root`; `load_all` at server start marks jobs a dead backend left behind."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def folder(self, job_id: str) -> JobFolder:
        return JobFolder(self.root / check_job_id(job_id))

    def exists(self, job_id: str) -> bool:
        return (self.root / check_job_id(job_id)).exists()

    def create(
        self, job_id: str, plugin: str, params: dict[str, Any], client: dict[str, Any] | None = None
    ) -> JobRecord:
        """Make the folder and job.json of a new queued job (`client`: Submit.client). Refuses a used id."""
        if self.exists(job_id):
            raise ParamError(f"Job id {job_id!r} is already used; submit with a new id.", ErrorCode.BAD_PARAMS)
        record = JobRecord(
            id=job_id, plugin=plugin, params=jsonable(params), created=time.time(), client=jsonable(client or {})
        )
        self.folder(job_id).save(record)
        return record

    def load_all(self) -> dict[str, JobRecord]:
        """Read every job; a job left queued/running by a stopped backend becomes failed (backend_stopped)."""
        records: dict[str, JobRecord] = {}
        for path in sorted(self.root.iterdir()):
            if not (path / "job.json").is_file() or not _JOB_ID.match(path.name):
                continue
            folder = JobFolder(path)
            try:
                record = folder.load()
            except (OSError, ValueError, TypeError) as exc:
                log.warning("Skipping unreadable job folder %s: %s", path, exc)
                continue
            if not record.ended:
                kept, was = _count_results(folder), record.state
                record.results = kept
                record.state = FAILED
                record.error_code = ErrorCode.BACKEND_STOPPED.value
                record.error_message = (
                    f"The backend stopped while this job was {was}; "
                    f"{kept} result(s) made before that were kept and can be fetched. Submit it again to finish."
                )
                record.message = record.error_message
                record.finished = time.time()
                folder.save(record)
            records[record.id] = record
        return records


def _count_results(folder: JobFolder) -> int:
    """How many consecutive results (from 0) are complete on disk."""
    count = 0
    while folder.result_path(count).is_file():
        count += 1
    return count

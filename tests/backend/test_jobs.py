"""The job manager with a plugin defined here: events, persistence, cancel, errors, queueing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from backend.job_store import WARNING_CHARS, JobStore
from backend.jobs import JobManager
from backend.plugin_host import JobContext, Output, Plugin, Progress
from shared import messages as wire
from shared.errors import ErrorCode, InputError, JobCancelled, ParamError, TesseraError
from shared.schemas import ParamSpec, PluginSpec

pytestmark = pytest.mark.timeout(30)


class Steps(Plugin):
    """Yields `n` results; `fail` picks how it ends; `gate` (a class-level Event) holds it before each step."""

    spec = PluginSpec(
        name="test.steps",
        summary="steps",
        params=[
            ParamSpec("n", "int", default=3, min=0),
            ParamSpec("fail", "enum", default="no", choices=["no", "input", "runtime", "cancel", "nan"]),
            ParamSpec("warn", "str", default=""),
        ],
        outputs=["mesh_frames"],
    )
    gate = threading.Event()
    closed: list[str] = []

    def run(self, ctx: JobContext) -> Iterator[Progress | Output]:
        try:
            for i in range(ctx.params["n"]):
                self.gate.wait(5)
                yield Progress("step", i / ctx.params["n"], f"step {i}", warning=ctx.params["warn"])
                yield Output("mesh.frames", {"start": np.int64(i)}, {"positions": np.full((1, 2, 3), i, np.float32)})
            fail = ctx.params["fail"]
            if fail == "input":
                raise InputError("That input is no good.")
            if fail == "runtime":
                raise ZeroDivisionError("division by zero")
            if fail == "cancel":
                raise JobCancelled("stop")
            if fail == "nan":
                yield Output("mesh.frames", {"start": 0}, {"positions": np.full((1, 2, 3), np.nan, np.float32)})
        finally:
            self.closed.append(ctx.job_id)


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[JobManager]:
    Steps.gate.set()
    wake = threading.Event()
    m = JobManager(JobStore(tmp_path), plugins={"test.steps": Steps}, notify=wake.set)
    m.start()
    assert m.device_ready.wait(10) and m.device == "cpu"
    yield m
    Steps.gate.set()
    m.stop()


def events_until_end(m: JobManager, job: str, timeout: float = 10.0) -> list[wire.Message]:
    got: list[wire.Message] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got += [e for e in m.take_events() if e.job == job]
        if got and isinstance(got[-1], (wire.Done, wire.Failed, wire.Cancelled)):
            return got
        time.sleep(0.005)
    raise AssertionError(f"job {job} did not end: {got}")


def test_job_emits_progress_and_persisted_results_then_done(manager: JobManager) -> None:
    assert manager.submit("a", "test.steps", {"n": 3}, {}) == 0
    events = events_until_end(manager, "a")
    results = [e for e in events if isinstance(e, wire.Result)]
    assert [r.index for r in results] == [0, 1, 2] and isinstance(events[-1], wire.Done)
    assert sum(isinstance(e, wire.Progress) for e in events) == 3
    folder = manager.store.folder("a")
    for r in results:  # every result sent is on disk, identical; meta as plain JSON types
        type_, meta, arrays = folder.read_result(r.index)
        np.testing.assert_array_equal(arrays["positions"], r.arrays["positions"])
        assert meta == r.meta == {"start": r.index} and type(r.meta["start"]) is int and type_ == r.type
    record = folder.load()
    assert record.state == "done" and record.results == 3 and record.fraction == 1.0


def test_a_jobs_warnings_are_sent_with_its_progress_and_kept_once_in_its_record(manager: JobManager) -> None:
    """A warning outlives the progress message it came with: stored once in job.json and in the jobs row."""
    manager.submit("w", "test.steps", {"n": 3, "warn": "Dense mesh: this will be slow."}, {})
    events = events_until_end(manager, "w")
    assert [e.warning for e in events if isinstance(e, wire.Progress)] == ["Dense mesh: this will be slow."] * 3
    assert manager.store.folder("w").load().warnings == ["Dense mesh: this will be slow."]
    assert [r["warnings"] for r in manager.job_list() if r["id"] == "w"] == [["Dense mesh: this will be slow."]]
    manager.submit("long", "test.steps", {"n": 1, "warn": "x" * 5000}, {})
    sent = [e.warning for e in events_until_end(manager, "long") if isinstance(e, wire.Progress)]
    assert sent == ["x" * WARNING_CHARS] and manager.store.folder("long").load().warnings == sent
    manager.submit("none", "test.steps", {"n": 2}, {})
    events_until_end(manager, "none")
    assert manager.store.folder("none").load().warnings == []


def test_bad_params_and_unknown_plugins_are_refused_at_submit(manager: JobManager) -> None:
    with pytest.raises(ParamError):
        manager.submit("b", "test.steps", {"n": "lots"}, {})
    with pytest.raises(TesseraError) as err:
        manager.submit("b", "nope", {}, {})
    assert err.value.code == ErrorCode.UNKNOWN_PLUGIN
    assert manager.job_list() == []


def test_the_job_list_keeps_to_one_message_newest_first(tmp_path: Path) -> None:
    """Jobs' rows (now with the client's notes) beyond what one `jobs` reply holds: the newest are listed."""
    store = JobStore(tmp_path)
    for i in range(30):
        store.create(f"j{i:02d}", "test.steps", {}, {"note": "x" * 1000})
        time.sleep(0.001)  # distinct creation times
    m = JobManager(JobStore(tmp_path), plugins={"test.steps": Steps})
    assert [r["id"] for r in m.job_list()] == [f"j{i:02d}" for i in range(30)]
    rows = m.job_list(budget=10_000)
    assert 5 <= len(rows) <= 9  # a row is over 1 kB
    assert [r["id"] for r in rows] == [f"j{i:02d}" for i in range(30 - len(rows), 30)]
    assert rows[0]["client"] == {"note": "x" * 1000}
    big = wire.Jobs(id="1", jobs=m.job_list())
    assert len(wire.to_frames(big)[0]) < 1 << 20


@pytest.mark.parametrize(
    ("fail", "state", "code", "words"),
    [
        ("input", "failed", "bad_input", "no good"),
        ("runtime", "failed", "plugin_error", "ZeroDivisionError"),
        ("cancel", "cancelled", "", ""),
        ("nan", "failed", "plugin_error", "NaN"),
    ],
)
def test_plugin_errors_become_typed_end_states(
    manager: JobManager, fail: str, state: str, code: str, words: str
) -> None:
    manager.submit("c", "test.steps", {"n": 1, "fail": fail}, {})
    end = events_until_end(manager, "c")[-1]
    assert end.KIND == state and end.results == 1
    if code:
        assert end.code == code and words in end.message
    manager.submit("d", "test.steps", {"n": 1}, {})  # the worker keeps serving
    assert isinstance(events_until_end(manager, "d")[-1], wire.Done)


def test_cancel_stops_running_job_between_steps_and_closes_generator(manager: JobManager) -> None:
    Steps.gate.clear()
    manager.submit("e", "test.steps", {"n": 100}, {})
    manager.submit("f", "test.steps", {"n": 1}, {})
    time.sleep(0.1)
    assert manager.counts() == (1, 1)
    manager.cancel("f")  # queued: cancelled at once, never runs
    manager.cancel("e")
    Steps.gate.set()
    end = events_until_end(manager, "e")[-1]
    assert isinstance(end, wire.Cancelled) and end.results <= 1 and "e" in Steps.closed
    assert manager.record("f").state == "cancelled" and "f" not in Steps.closed
    with pytest.raises(TesseraError) as err:
        manager.cancel("zzz")
    assert err.value.code == ErrorCode.UNKNOWN_JOB


def test_release_drops_cached_models(manager: JobManager) -> None:
    manager.models.get("big", lambda: object())
    assert "dropped 1" in manager.release()


class WhereAmI(Plugin):
    """Holds until released and reports the device it ran on."""

    spec = PluginSpec(name="test.where", summary="device probe", outputs=["mesh_frames"])
    started: list[str] = []
    release = threading.Event()

    def run(self, ctx: JobContext) -> Iterator[Progress | Output]:
        self.started.append(ctx.device)
        self.release.wait(10)
        yield Progress("ran", 1.0, ctx.device)


def test_one_worker_per_device_runs_jobs_side_by_side(tmp_path: Path) -> None:
    WhereAmI.started.clear()
    WhereAmI.release.clear()
    m = JobManager(JobStore(tmp_path), plugins={"test.where": WhereAmI}, devices=["cuda:0", "cuda:1"])
    m.start()
    try:
        assert m.device_ready.wait(10) and m.device == "cuda:0, cuda:1"
        for job in ("a", "b", "c"):
            m.submit(job, "test.where", {}, {})
        deadline = time.monotonic() + 10
        while len(WhereAmI.started) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(WhereAmI.started) == ["cuda:0", "cuda:1"]  # two at once, one per device
        assert m.counts() == (2, 1)  # the third waits for a free device
        WhereAmI.release.set()
        while m.counts() != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(WhereAmI.started) == 3 and m.counts() == (0, 0)
    finally:
        WhereAmI.release.set()
        m.stop()


def test_stream_progress_streams_a_callback_computation_and_stops_it_on_cancel(tmp_path: Path) -> None:
    from backend.plugin_host import stream_progress

    ctx = JobContext(job_id="s", params={}, arrays={}, job_dir=tmp_path)

    def solve(progress, check_cancelled):
        for i in range(3):
            check_cancelled()
            progress("step", (i + 1) / 3, f"step {i}")
        return "answer"

    def plugin():
        result = yield from stream_progress(ctx, solve)
        yield Output("mesh.frames", {"result": result}, {})

    events = list(plugin())
    assert [e.message for e in events[:3]] == ["step 0", "step 1", "step 2"]
    assert events[-1].meta == {"result": "answer"}

    steps = []

    def endless(progress, check_cancelled):
        while True:
            check_cancelled()
            steps.append(1)
            progress("loop", 0.5, "")
            time.sleep(0.001)

    gen = stream_progress(ctx, endless)
    next(gen)
    gen.close()  # the job stopped listening: the computation ends at its next check
    settled = len(steps)
    time.sleep(0.05)
    assert len(steps) == settled

    ctx.cancel_event.set()
    with pytest.raises(JobCancelled):
        list(stream_progress(ctx, solve))

"""The backend over real ZeroMQ, in its own process: the contract the Blender client relies on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
import zmq.auth
from backend_process import REPO, BackendProcess, launch
from plugins_for_tests import frame_positions

from backend.client import BackendClient, BackendTimeout
from shared import messages as wire
from shared.errors import ErrorCode, TesseraError
from shared.version import PROTOCOL_VERSION

pytestmark = pytest.mark.timeout(60)


def collect(client: BackendClient, job: str, timeout: float = 20.0) -> tuple[list[wire.Message], wire.Message]:
    events = list(client.iter_events(job, timeout))
    return events[:-1], events[-1]


def results_of(events: list[wire.Message]) -> list[wire.Result]:
    return [e for e in events if isinstance(e, wire.Result)]


def test_handshake_lists_plugins_with_their_params(backend: BackendProcess) -> None:
    with BackendClient(backend.endpoint) as client:
        reply = client.hello()
    assert reply.device == "cpu" and reply.protocol == PROTOCOL_VERSION and reply.server
    names = [spec.name for spec in client.plugins]
    assert "test.count" in names and "test.fail" in names
    count = next(s for s in client.plugins if s.name == "test.count")
    assert count.param("delay").type == "float"


def test_anything_before_hello_is_refused(backend: BackendProcess) -> None:
    with BackendClient(backend.endpoint) as client:
        with pytest.raises(TesseraError) as err:
            client.ping()
        assert err.value.code == ErrorCode.NOT_AUTHENTICATED
        client.hello()
        assert client.ping().running == 0


def test_other_protocol_version_is_refused_naming_both(backend: BackendProcess) -> None:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(backend.endpoint)
    try:
        env = {"v": 999, "kind": "hello", "id": "x1", "job": "", "body": {"protocol": 999}, "arrays": []}
        sock.send_multipart([msgpack.packb(env)])
        assert sock.poll(5000)
        reply = wire.from_frames(sock.recv_multipart())
        assert isinstance(reply, wire.Error) and reply.code == ErrorCode.VERSION_MISMATCH.value
        assert "999" in reply.message and str(PROTOCOL_VERSION) in reply.message and reply.reply_to == "x1"
        # The same through a well-formed hello that states another protocol.
        sock.send_multipart(wire.to_frames(wire.Hello(protocol=7)))
        reply = wire.from_frames(sock.recv_multipart())
        assert reply.code == ErrorCode.VERSION_MISMATCH.value and "7" in reply.message
    finally:
        sock.close(linger=0)


def test_job_streams_progress_and_results_then_done(backend: BackendProcess) -> None:
    with BackendClient(backend.endpoint) as client:
        client.hello()
        job = client.submit("test.count", {"n": 4, "vertices": 5})
        events, end = collect(client, job)
    assert isinstance(end, wire.Done) and end.results == 4 and end.seconds >= 0
    results = results_of(events)
    assert [r.index for r in results] == [0, 1, 2, 3]
    for r in results:
        assert r.type == "mesh.frames" and r.meta == {"start": r.index}
        np.testing.assert_array_equal(r.arrays["positions"], frame_positions(r.index, 5))
    assert any(isinstance(e, wire.Progress) and e.stage == "counting" for e in events)


def test_refused_submits_fail_with_typed_codes(backend: BackendProcess) -> None:
    with BackendClient(backend.endpoint) as client:
        client.hello()
        for plugin, params, code in [
            ("no.such", {}, ErrorCode.UNKNOWN_PLUGIN),
            ("test.count", {"n": -3}, ErrorCode.BAD_PARAMS),
            ("test.count", {"colour": 1}, ErrorCode.BAD_PARAMS),
        ]:
            with pytest.raises(TesseraError) as err:
                client.submit(plugin, params)
            assert err.value.code == code
        job = client.submit("test.count", {"n": 1})
        with pytest.raises(TesseraError) as err:
            client.submit("test.count", {"n": 1}, job=job)
        assert err.value.code == ErrorCode.BAD_PARAMS and "already used" in err.value.message
        with pytest.raises(TesseraError):
            client.submit("test.count", {}, job="../escape")


def test_plugin_errors_end_the_job_typed_and_keep_earlier_results(backend: BackendProcess) -> None:
    with BackendClient(backend.endpoint) as client:
        client.hello()
        events, end = collect(client, client.submit("test.fail", {"mode": "input", "after": 2}))
        assert isinstance(end, wire.Failed) and end.code == "bad_input" and "7 vertices" in end.message
        assert end.results == 2 and len(results_of(events)) == 2
        _, end = collect(client, client.submit("test.fail", {"mode": "runtime"}))
        assert end.code == "plugin_error" and "RuntimeError" in end.message and "boom" in end.message
        _, end = collect(client, client.submit("test.count", {"n": 2}))  # the worker keeps serving
        assert isinstance(end, wire.Done)


def test_cancel_stops_a_running_job_quickly(backend: BackendProcess) -> None:
    with BackendClient(backend.endpoint) as client:
        client.hello()
        job = client.submit("test.count", {"n": 1000, "delay": 0.02})
        seen = []
        for event in client.iter_events(job):
            seen.append(event)
            if isinstance(event, wire.Result) and event.index == 2:
                asked = time.monotonic()
                client.cancel(job)
            if isinstance(event, (wire.Done, wire.Failed, wire.Cancelled)):
                break
        assert isinstance(seen[-1], wire.Cancelled) and 3 <= seen[-1].results < 1000
        assert time.monotonic() - asked < 1.0
        client.send(wire.Cancel(job="never-submitted"))
        reply = client.receive(5)
        assert isinstance(reply, wire.Error) and reply.code == "unknown_job" and reply.job == "never-submitted"


def test_fetch_after_reconnect_replays_identical_results_then_streams_live(backend: BackendProcess) -> None:
    first = BackendClient(backend.endpoint, session="blender-session-1")
    first.hello()
    job = first.submit("test.count", {"n": 30, "delay": 0.02, "vertices": 1000})
    early = []
    for event in first.iter_events(job):
        if isinstance(event, wire.Result):
            early.append(event)
            if len(early) == 3:
                break
    first.close()  # Blender closed mid-job

    with BackendClient(backend.endpoint, session="blender-session-1") as second:
        second.hello()
        second.fetch(job, start=0)
        events, end = collect(second, job)
    assert isinstance(end, wire.Done) and end.results == 30
    results = results_of(events)
    assert [r.index for r in results] == list(range(30))
    for r in results:
        np.testing.assert_array_equal(r.arrays["positions"], frame_positions(r.index, 1000))
        assert r.arrays["positions"].dtype == np.float32
    for old in early:
        np.testing.assert_array_equal(old.arrays["positions"], results[old.index].arrays["positions"])

    with BackendClient(backend.endpoint) as other:
        other.hello()
        other.fetch(job, start=28)
        events, end = collect(other, job)
        assert [r.index for r in results_of(events)] == [28, 29] and isinstance(end, wire.Done)
        other.fetch("missing-job")
        with pytest.raises(TesseraError) as err:
            list(other.iter_events("missing-job", 5))
        assert err.value.code == ErrorCode.UNKNOWN_JOB


def test_jobs_list_ping_while_running_and_release(backend: BackendProcess) -> None:
    with BackendClient(backend.endpoint) as client:
        client.hello()
        job = client.submit("test.count", {"n": 20, "delay": 0.05})
        queued = client.submit("test.count", {"n": 1})
        next(client.iter_events(job))
        pong = client.ping(timeout=1.0)
        assert pong.running == 1 and pong.queued == 1
        listed = {j["id"]: j for j in client.jobs()}
        assert listed[job]["state"] == "running" and listed[job]["plugin"] == "test.count"
        assert listed[queued]["state"] == "queued"
        keys = {"id", "plugin", "state", "stage", "fraction", "message", "results", "created", "client", "warnings"}
        assert set(listed[job]) == keys and listed[job]["client"] == {} and listed[job]["warnings"] == []
        assert "dropped" in client.release()
        client.cancel(job)
        assert isinstance(collect(client, job)[1], wire.Cancelled)
        assert isinstance(collect(client, queued)[1], wire.Done)


def _keys(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    out = subprocess.run(
        [sys.executable, "-m", "backend", "keys", "generate", str(keys)], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "server.key" in out.stdout and "client.key_secret" in out.stdout
    return keys


def test_curve_authorised_key_works_unknown_key_gets_no_reply(tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    backend = launch(tmp_path / "jobs", "--curve-keys", str(keys))
    try:
        with BackendClient(backend.endpoint, curve=keys) as client:
            client.hello()
            _, end = collect(client, client.submit("test.count", {"n": 2}))
            assert isinstance(end, wire.Done)

        stranger = tmp_path / "stranger"
        stranger.mkdir()
        zmq.auth.create_certificates(stranger, "client")
        (stranger / "server.key").write_bytes((keys / "server.key").read_bytes())
        with BackendClient(backend.endpoint, curve=stranger) as intruder:
            with pytest.raises(BackendTimeout):
                intruder.hello(timeout=1.5)
        with BackendClient(backend.endpoint) as plain:  # no CURVE at all
            with pytest.raises(BackendTimeout):
                plain.hello(timeout=1.5)
    finally:
        backend.kill()


def test_non_loopback_bind_without_keys_refuses_to_start(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "backend", "serve", "--bind", "tcp://0.0.0.0:0", "--jobs-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "keys generate" in out.stderr and "Traceback" not in out.stderr


def test_port_in_use_is_a_clear_error(backend: BackendProcess, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "backend", "serve", "--bind", backend.endpoint, "--jobs-dir", str(tmp_path / "j2")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1 and "Cannot listen" in out.stderr and "Traceback" not in out.stderr


def test_results_survive_a_killed_backend(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    backend = launch(jobs)
    with BackendClient(backend.endpoint, session="s") as client:
        client.hello()
        job = client.submit("test.count", {"n": 1000, "delay": 0.02, "vertices": 100})
        before = []
        for event in client.iter_events(job):
            if isinstance(event, wire.Result):
                before.append(event)
                if len(before) == 5:
                    break
    os.kill(backend.proc.pid, signal.SIGKILL)
    backend.proc.wait(10)

    restarted = launch(jobs)
    try:
        with BackendClient(restarted.endpoint, session="s") as client:
            client.hello()
            listed = {j["id"]: j for j in client.jobs()}
            assert listed[job]["state"] == "failed"
            client.fetch(job)
            events, end = collect(client, job)
        assert isinstance(end, wire.Failed) and end.code == ErrorCode.BACKEND_STOPPED.value
        kept = results_of(events)
        assert end.results == len(kept) >= 5 and f"{len(kept)} result(s)" in end.message
        for old in before:
            np.testing.assert_array_equal(old.arrays["positions"], kept[old.index].arrays["positions"])
    finally:
        restarted.kill()

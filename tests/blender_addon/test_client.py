"""The client state machine against a real backend process over real ZeroMQ (no Blender)."""

import time

import numpy as np
import pytest
from blender_rig import HORSE, BackendProcess, import_without_blender

client_module = import_without_blender("client")
BackendClient = client_module.BackendClient
ConnectionState = client_module.ConnectionState
JobState = client_module.JobState


def poll_until(client, condition, timeout=20.0):
    got = []
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        got += client.poll(max_messages=16, time_budget=0.005)
        time.sleep(0.002)
    assert condition(), f"timed out; state {client.state}: {client.state_message}"
    return got


def connected_client(backend, **kw):
    client = BackendClient(backend.address, client_name="test", **kw)
    client.connect()
    poll_until(client, lambda: client.state != ConnectionState.CONNECTING)
    assert client.state == ConnectionState.CONNECTED, client.state_message
    return client


def test_handshake_lists_plugins_with_schemas(backend):
    client = connected_client(backend)
    assert "sequence.load_mesh" in client.plugins
    spec = client.plugins["sequence.load_mesh"]
    assert spec.param("path").type == "path"
    assert client.server and client.device
    assert client.state_message.startswith("Connected")
    client.close()
    assert client.state == ConnectionState.DISCONNECTED


def test_job_results_arrive_in_order_then_done(backend):
    client = connected_client(backend)
    job = client.submit("sequence.load_mesh", {"path": str(HORSE), "chunk_frames": 10})
    indices = []

    def take(msgs):
        for msg in msgs:
            if getattr(msg, "index", None) is not None and msg.job == job.id and type(msg).__name__ == "Result":
                indices.append(msg.index)
                client.result_applied(job.id)

    deadline = time.monotonic() + 30
    while not job.state.finished and time.monotonic() < deadline:
        take(client.poll(max_messages=4, time_budget=0.005))
    assert job.state == JobState.DONE, job.message
    assert indices == list(range(1 + 5))  # rest + 48 frames in chunks of 10
    assert job.applied == job.expected == 6
    assert job.fraction == 1.0
    client.close()


def test_unknown_plugin_is_refused_before_sending(backend):
    client = connected_client(backend)
    with pytest.raises(client_module.ClientError, match="no plugin 'nope'"):
        client.submit("nope")
    client.close()


def test_reconnect_fetches_from_what_was_applied_without_duplicates(backend):
    client = connected_client(backend)
    job = client.submit("sequence.load_mesh", {"path": str(HORSE), "chunk_frames": 4})
    seen = []
    deadline = time.monotonic() + 30
    while len(seen) < 3 and time.monotonic() < deadline:
        for msg in client.poll(max_messages=1, time_budget=0.005):
            if type(msg).__name__ == "Result":
                seen.append(msg.index)
                client.result_applied(job.id)
    client.reconnect()  # a dropped connection: new socket, same session
    deadline = time.monotonic() + 30
    while not job.state.finished and time.monotonic() < deadline:
        for msg in client.poll(max_messages=8, time_budget=0.005):
            if type(msg).__name__ == "Result":
                seen.append(msg.index)
                client.result_applied(job.id)
    assert job.state == JobState.DONE, job.message
    assert seen == list(range(1 + 12))  # rest + 48 frames / 4, each exactly once
    client.close()


def test_results_are_float32_arrays_of_the_source(backend):
    client = connected_client(backend)
    job = client.submit("sequence.load_mesh", {"path": str(HORSE), "chunk_frames": 48})
    results = [m for m in poll_until(client, lambda: job.state.finished) if type(m).__name__ == "Result"]
    src = np.load(HORSE)
    assert np.array_equal(results[0].arrays["rest"], src["rest"])
    assert np.array_equal(results[1].arrays["positions"], src["frames"])
    client.close()


def test_killed_backend_is_lost_within_two_seconds(backend):
    client = connected_client(backend)
    poll_until(client, lambda: client.last_pong is not None, timeout=5)
    backend.kill9()
    killed = time.monotonic()
    poll_until(client, lambda: client.state == ConnectionState.LOST, timeout=5)
    lost_after = time.monotonic() - killed
    assert lost_after <= 2.1, lost_after
    assert "closed" in client.state_message or "not answered" in client.state_message
    with pytest.raises(client_module.ClientError, match="lost"):
        client.submit("sequence.load_mesh", {"path": str(HORSE)})
    backend.start()
    client.reconnect()
    poll_until(client, lambda: client.state == ConnectionState.CONNECTED)
    client.close()


def test_a_client_that_was_busy_is_not_lost_for_its_own_silence(backend):
    """Blender busy for longer than LOST_AFTER (a capture renders, then submits) sent no pings, so the backend had
    nothing to answer: the next poll pings instead of declaring the backend lost."""
    client = connected_client(backend)
    client.last_pong = None
    time.sleep(client.lost_after + 0.5)
    assert client.poll(max_messages=16, time_budget=0.0) == []
    assert client.state == ConnectionState.CONNECTED, client.state_message
    poll_until(client, lambda: client.last_pong is not None, timeout=5.0)
    assert client.state == ConnectionState.CONNECTED
    client.close()


def _silent_backend():
    """A ROUTER socket that answers the handshake and then nothing, while libzmq still answers heartbeats: a
    backend whose loop is held up (a heavy job on a busy CPU) or hung, with its process alive."""
    import zmq

    from shared import messages as wire

    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")

    def serve(client, seconds):
        """Poll `client` for `seconds`, answering only its Hello."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            client.poll(max_messages=16, time_budget=0.005)
            try:
                identity, *frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                time.sleep(0.01)
                continue
            if isinstance(wire.from_frames(frames), wire.Hello):
                router.send_multipart([identity, *wire.to_frames(wire.Plugins(server="silent"))], copy=False)

    return router, f"tcp://127.0.0.1:{port}", serve


def test_a_backend_held_up_for_seconds_is_not_lost_but_a_hung_one_is():
    router, address, serve = _silent_backend()
    try:
        patient = BackendClient(address, client_name="test")
        patient.connect()
        serve(patient, 3.0)  # pings unanswered for 3 s: more than LOST_AFTER, less than UNANSWERED_AFTER
        assert patient.state == ConnectionState.CONNECTED, patient.state_message
        assert patient.last_pong is None  # it really was silent
        patient.close()

        strict = BackendClient(address, client_name="test", unanswered_after=1.0)
        strict.connect()
        serve(strict, 2.0)
        assert strict.state == ConnectionState.LOST
        assert "not answered" in strict.state_message and "still connected" in strict.state_message
        strict.close()
    finally:
        router.close(linger=0)


def test_no_backend_at_address_is_lost_after_handshake_timeout():
    client = BackendClient("tcp://127.0.0.1:9", handshake_timeout=0.3)
    client.connect()
    poll_until(client, lambda: client.state != ConnectionState.CONNECTING, timeout=3)
    assert client.state == ConnectionState.LOST
    assert "No answer" in client.state_message
    client.close()


def test_missing_curve_keys_give_a_clear_error(tmp_path):
    client = BackendClient("tcp://127.0.0.1:9", keys_folder=tmp_path)
    with pytest.raises(client_module.ClientError, match="server.key"):
        client.connect()


def test_curve_keys_authenticate_and_a_client_without_them_gets_no_answer(tmp_path):
    from backend.security import generate_keys

    keys = tmp_path / "keys"
    keys.mkdir()
    generate_keys(keys)
    (tmp_path / "jobs").mkdir()
    server = BackendProcess(tmp_path / "jobs", tmp_path, extra_args=("--curve-keys", str(keys)))
    server.start()
    try:
        client = connected_client(server, keys_folder=keys)
        assert "sequence.load_mesh" in client.plugins
        client.close()

        stranger = BackendClient(server.address, handshake_timeout=1.0)
        stranger.connect()
        poll_until(stranger, lambda: stranger.state != ConnectionState.CONNECTING, timeout=5)
        assert stranger.state == ConnectionState.LOST
        stranger.close()
    finally:
        server.stop()


def test_hung_backend_is_lost_within_two_seconds_even_while_results_wait_to_be_applied(backend):
    """A frozen backend keeps its TCP connection open: only heartbeats can tell. They run in
    libzmq's I/O thread, so results queued for the add-on do not hide the hang."""
    import signal

    client = connected_client(backend)
    poll_until(client, lambda: client.last_pong is not None, timeout=5)
    client.submit("sequence.load_mesh", {"path": str(HORSE), "chunk_frames": 1})
    time.sleep(0.5)  # the backend streams ahead; nothing is applied meanwhile
    backend.proc.send_signal(signal.SIGSTOP)
    try:
        frozen = time.monotonic()
        while client.state != ConnectionState.LOST and time.monotonic() - frozen < 5:
            client.poll(max_messages=1)  # a slow consumer: one message per call
            time.sleep(0.02)
        assert client.state == ConnectionState.LOST
        assert time.monotonic() - frozen <= 2.1, time.monotonic() - frozen
    finally:
        backend.proc.send_signal(signal.SIGCONT)
        client.close()


def test_a_jobs_options_travel_as_plain_notes_and_come_back_for_fetching(backend):
    """Names and settings go with the job (Submit.client) and come back in `jobs`; arrays stay here; the session
    uids are cleared for another session."""
    options = {
        "rig_source": "Cat",
        "rig_source_uid": 41,
        "collection": ["Shots", 7],
        "kept": [(0, 3), (8, 9)],
        "dress_materials": np.zeros(5, np.int32),
        "y_up": True,
    }
    notes = client_module.job_notes(options)
    assert notes == {"rig_source": "Cat", "rig_source_uid": 41, "collection": ["Shots", 7], "kept": [[0, 3], [8, 9]],
                     "y_up": True}  # fmt: skip
    assert client_module.job_notes({"big": "x" * (client_module.NOTE_LIMIT + 1)}) == {}

    client = connected_client(backend)
    try:
        job = client.submit("sequence.load_mesh", {"path": str(HORSE), "chunk_frames": 48}, options=options)
        poll_until(client, lambda: job.state.finished)
        client.list_jobs()
        poll_until(client, lambda: any(row["id"] == job.id for row in client.backend_jobs))
        assert client.stored_options(job.id) == {**notes, "rig_source_uid": 0, "collection": ["Shots", 0]}
        assert client.stored_options("never-submitted") == {}
    finally:
        client.close()


def test_a_jobs_warnings_stay_after_later_progress_replaces_its_message():
    """Progress.warning is kept on the job (each once); the message is whatever the latest progress says."""
    m = client_module.m
    client = BackendClient("tcp://127.0.0.1:1", client_name="test")
    job = client_module.JobRecord(id="j1", plugin="gaussians4d.fit", state=JobState.RUNNING)
    client.jobs[job.id] = job
    note = "the rest mesh has 200,000 vertices: slow on the CPU."
    for msg in (
        m.Progress(job="j1", stage="reading", message=f"Warning: {note}", warning=note),
        m.Progress(job="j1", stage="reading", message=f"Warning: {note}", warning=note),
        m.Progress(job="j1", stage="fit", fraction=0.5, message="step 150/300"),
    ):
        client._handle(msg)
    assert job.message == "step 150/300" and job.warnings == [note]

"""The add-on's connection to a backend: one DEALER socket, never blocking.

Pure Python + zmq + the protocol (no bpy), so it is tested without Blender. The pump
calls `poll()` from Blender's main thread; every call returns at once with what arrived.

States: disconnected → connecting → connected, or version_mismatch (the handshake was
refused), or lost: the connection closed, libzmq's heartbeats went unanswered for `LOST_AFTER` seconds (a
backend that died, froze or dropped off the network), or the backend's own loop left our pings unanswered for
`UNANSWERED_AFTER` seconds while the process was still there (hung). A lost client keeps its job
table; `reconnect()` opens a new socket, says Hello with the same session and fetches
every unfinished job from the number of results already applied, so nothing is applied
twice and nothing is skipped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from .shared import messages as m
from .shared.codec import DEFAULT_LIMITS
from .shared.errors import ErrorCode, ProtocolError, VersionMismatch
from .shared.schemas import PluginSpec

PING_EVERY = 0.5  # seconds between heartbeats
LOST_AFTER = 2.0  # seconds without a libzmq heartbeat answer before the backend counts as lost
# Seconds a backend that still answers libzmq's heartbeats may leave our pings unanswered before it counts as
# hung. Its Python loop answers them, and a heavy job on a busy CPU has held that loop up for 1.5 s (the test
# suite on 2 cores), which a 2 s limit reported as a lost backend while the job ran on.
UNANSWERED_AFTER = 10.0


class ConnectionState(StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    VERSION_MISMATCH = "version_mismatch"
    LOST = "lost"


class JobState(StrEnum):
    SUBMITTED = "submitted"  # sent, no answer yet
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclass
class JobRecord:
    """What the add-on knows about one job it submitted."""

    id: str
    plugin: str
    state: JobState = JobState.SUBMITTED
    stage: str = ""
    fraction: float = 0.0
    message: str = ""
    applied: int = 0  # results written into Blender; a refetch starts here
    received: int = 0  # results handed to the pump (≥ applied only while one is being applied)
    expected: int | None = None  # total results, known once the job ended on the backend
    options: dict[str, Any] = field(default_factory=dict)  # add-on side options (e.g. y_up)
    error_code: str = ""
    preview: Any = None  # the latest progress preview array (e.g. generated views), if the plugin sends them
    previews: int = 0  # how many previews arrived (the pump shows each new one)
    warnings: list[str] = field(default_factory=list)  # the backend's warnings on this job, each once


AFTER_LOSS = (
    "Reconnect: if the backend still runs, its jobs go on from where they were; if it stopped, restart it and "
    "reconnect: its unfinished jobs are reported failed, with the results they made kept (Fetch)."
)


_NOT_PLAIN = object()
NOTE_LIMIT = 2048  # characters of a job's options sent along as its `client` notes (names and settings, not data)


def job_notes(options: dict[str, Any]) -> dict[str, Any]:
    """The options of a job that travel with it as Submit.client: the plain values (text, numbers, flags and
    lists or maps of them: object names, frame ranges, settings). Arrays (a take's per-triangle materials, its
    UVs) stay in this session, and the rest is dropped too if it would exceed NOTE_LIMIT."""

    def plain(value: Any) -> Any:
        """`value` with tuples as lists, or _NOT_PLAIN."""
        if value is None or isinstance(value, (str, bool, int, float)):
            return value
        if isinstance(value, (list, tuple)):
            items = [plain(v) for v in value]
            return _NOT_PLAIN if any(v is _NOT_PLAIN for v in items) else items
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            items = {k: plain(v) for k, v in value.items()}
            return _NOT_PLAIN if any(v is _NOT_PLAIN for v in items.values()) else items
        return _NOT_PLAIN

    notes = {k: v for k, v in ((k, plain(v)) for k, v in options.items()) if v is not _NOT_PLAIN}
    return notes if len(repr(notes)) <= NOTE_LIMIT else {}


class ClientError(Exception):
    """A request the client cannot send in its current state; the message says why."""


class BackendClient:
    """A non-blocking protocol client. Call `poll()` often; it also sends heartbeats."""

    def __init__(
        self,
        address: str,
        *,
        session: str | None = None,
        client_name: str = "tessera4d add-on",
        keys_folder: str | Path | None = None,
        handshake_timeout: float = LOST_AFTER,
        lost_after: float = LOST_AFTER,
        unanswered_after: float = UNANSWERED_AFTER,
        context: zmq.Context | None = None,
    ):
        self.address = address
        self.session = session or m.new_id()
        self.client_name = client_name
        self.keys_folder = Path(keys_folder) if keys_folder else None
        self.handshake_timeout = handshake_timeout
        self.lost_after = lost_after
        self.unanswered_after = unanswered_after
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self.state = ConnectionState.DISCONNECTED
        self.state_message = ""
        self.server = ""
        self.device = ""
        self.plugins: dict[str, PluginSpec] = {}
        self.jobs: dict[str, JobRecord] = {}
        self.backend_jobs: list[dict[str, Any]] = []  # every job the backend stores (its `jobs` reply)
        self.last_pong: m.Pong | None = None
        self._last_received = 0.0
        self._last_ping = 0.0
        self._first_unanswered_ping: float | None = None  # the first ping sent since the last message arrived
        self._connect_started = 0.0

    # -- connection -------------------------------------------------------------------------

    def connect(self) -> None:
        """Open a socket and say Hello. Returns at once; `poll()` completes the handshake."""
        self._close_socket()
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)  # closing must never hang Blender on unsent messages
        sock.setsockopt(zmq.MAXMSGSIZE, DEFAULT_LIMITS.max_array_bytes)
        # ZMTP heartbeats run in libzmq's I/O thread, so a dead or unreachable backend is noticed
        # however far behind the add-on is in applying results it already received.
        sock.setsockopt(zmq.HEARTBEAT_IVL, int(PING_EVERY * 1000))
        # A hang right after a heartbeat is seen at the next one (PING_EVERY) plus this timeout.
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int((self.lost_after - PING_EVERY) * 1000))
        if self.keys_folder is not None:
            self._set_curve_keys(sock)
        self._monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        sock.connect(self.address)
        self._socket = sock
        now = time.monotonic()
        self._connect_started = self._last_received = self._last_ping = now
        self.state = ConnectionState.CONNECTING
        self.state_message = f"Connecting to {self.address}…"
        self._send(m.Hello(client=self.client_name, session=self.session))

    def reconnect(self) -> None:
        """New socket, same session: unfinished jobs are fetched once the handshake is done."""
        for job in self.jobs.values():
            job.received = job.applied  # anything handed out but not applied will come again
        self.connect()

    def close(self) -> None:
        self._close_socket()
        self.state = ConnectionState.DISCONNECTED
        self.state_message = "Disconnected."

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.disable_monitor()
            self._socket.close(linger=0)
            self._socket = None
        if self._monitor is not None:
            self._monitor.close(linger=0)
            self._monitor = None

    def _transport_dropped(self) -> bool:
        """True if the connection to the backend closed (crash, kill, heartbeat timeout)."""
        dropped = False
        while self._monitor is not None:
            try:
                event = recv_monitor_message(self._monitor, flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            dropped |= event["event"] == zmq.EVENT_DISCONNECTED
        return dropped

    def _set_curve_keys(self, sock: zmq.Socket) -> None:
        folder = self.keys_folder
        server_key, client_key = folder / "server.key", folder / "client.key_secret"
        for path in (server_key, client_key):
            if not path.is_file():
                raise ClientError(
                    f"CURVE keys folder {folder} has no {path.name}; it needs server.key (the backend's "
                    "public key) and client.key_secret (this client's key pair)."
                )
        server_public, _ = zmq.auth.load_certificate(str(server_key))
        client_public, client_secret = zmq.auth.load_certificate(str(client_key))
        if not client_secret:
            raise ClientError(f"{client_key} holds no secret key; create it with zmq.auth.create_certificates.")
        sock.curve_serverkey = server_public
        sock.curve_publickey = client_public
        sock.curve_secretkey = client_secret

    @property
    def connected(self) -> bool:
        return self.state == ConnectionState.CONNECTED

    # -- requests ---------------------------------------------------------------------------

    def submit(
        self,
        plugin: str,
        params: dict[str, Any] | None = None,
        arrays: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> JobRecord:
        """Send a job; returns its record (the id is chosen here)."""
        self._need_connection()
        if self.plugins and plugin not in self.plugins:
            raise ClientError(
                f"The backend at {self.address} has no plugin '{plugin}'; it offers: {', '.join(self.plugins)}."
            )
        job = JobRecord(id=m.new_id(), plugin=plugin, options=dict(options or {}))
        self.jobs[job.id] = job
        params, arrays = dict(params or {}), dict(arrays or {})
        self._send(m.Submit(job=job.id, plugin=plugin, params=params, arrays=arrays, client=job_notes(job.options)))
        return job

    def cancel(self, job_id: str) -> None:
        self._need_connection()
        self._send(m.Cancel(job=job_id))

    def fetch(self, job_id: str, start: int) -> None:
        self._need_connection()
        self._send(m.Fetch(job=job_id, start=start))

    def attach(self, job_id: str, plugin: str = "", options: dict[str, Any] | None = None) -> JobRecord:
        """Apply a job's stored results again from the first one (any job the backend keeps, e.g. one
        submitted before Blender was closed); its results arrive like a live job's. `options`: the add-on's
        options for applying them (see stored_options)."""
        self._need_connection()
        job = JobRecord(id=job_id, plugin=plugin, state=JobState.RUNNING, stage="fetching", options=dict(options or {}))
        self.jobs[job_id] = job
        self._send(m.Fetch(job=job_id, start=0))
        return job

    def stored_options(self, job_id: str) -> dict[str, Any]:
        """The add-on options a job was submitted with, as the backend keeps them (its `jobs` reply; {} for a job
        it does not list), to apply it in this session: by the names of the objects they name. The session_uids
        in them (keys ending in `_uid`, the collection's) belonged to the session that submitted it, and in
        this one may be another object's, so they are cleared."""
        row = next((r for r in self.backend_jobs if r.get("id") == job_id), {})
        options = dict(row.get("client") or {})
        for key in options:
            if key.endswith("_uid"):
                options[key] = 0
        if isinstance(options.get("collection"), list) and options["collection"]:
            options["collection"] = [options["collection"][0], 0]
        return options

    def release(self) -> None:
        self._need_connection()
        self._send(m.Release())

    def list_jobs(self) -> None:
        self._need_connection()
        self._send(m.Jobs())

    def _need_connection(self) -> None:
        if self._socket is None or self.state in (ConnectionState.DISCONNECTED, ConnectionState.VERSION_MISMATCH):
            raise ClientError(f"Not connected to a backend ({self.state.value}). Connect first.")
        if self.state == ConnectionState.LOST:
            raise ClientError(f"The backend at {self.address} is lost: {self.state_message} Reconnect first.")

    def _send(self, msg: m.Message) -> None:
        assert self._socket is not None
        try:
            self._socket.send_multipart(m.to_frames(msg), copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:
            # The outgoing queue is full: the backend has not read for a long time.
            self._declare_lost(f"The backend at {self.address} stopped reading messages.")

    # -- job bookkeeping ----------------------------------------------------------------------

    def result_applied(self, job_id: str) -> None:
        """The pump wrote one result into Blender; a refetch now starts after it."""
        job = self.jobs.get(job_id)
        if job is not None:
            job.applied += 1

    def restart_results(self, job_id: str) -> None:
        """Apply a running job's results again from the first one (the objects they went into were removed,
        e.g. by Undo): the backend resends what it stored and streams on; results already in flight that
        arrive out of order are asked for again, duplicates dropped (see _on_result)."""
        job = self.jobs.get(job_id)
        if job is None or job.state.finished:
            return
        job.applied = job.received = 0
        if self.connected:  # else the reconnect fetches from job.applied, now the first result
            self._send(m.Fetch(job=job_id, start=0))

    def fail_locally(self, job_id: str, message: str, code: str = ErrorCode.BAD_INPUT.value) -> None:
        """The add-on refused a result (e.g. vertex count changed): stop the job and say why."""
        job = self.jobs.get(job_id)
        if job is None or job.state.finished:
            return
        job.state, job.message, job.error_code = JobState.FAILED, message, code
        if self.connected:
            self._send(m.Cancel(job=job_id))

    def unfinished_jobs(self) -> list[JobRecord]:
        return [j for j in self.jobs.values() if not j.state.finished]

    # -- receiving --------------------------------------------------------------------------

    def poll(self, max_messages: int = 64, time_budget: float = 0.005) -> list[m.Message]:
        """Receive without blocking: at most `max_messages`, stopping once `time_budget` s passed.

        Returns the typed messages the caller should act on (results to apply, job ends,
        errors). Bookkeeping messages (pong, plugins, progress) update this object too.
        """
        if self._socket is None or self.state in (ConnectionState.DISCONNECTED, ConnectionState.VERSION_MISMATCH):
            return []
        start = time.monotonic()
        out: list[m.Message] = []
        while len(out) < max_messages and time.monotonic() - start < time_budget:
            try:
                frames = self._socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self._last_received = time.monotonic()
            try:
                msg = m.from_frames(frames)
            except VersionMismatch as exc:
                self._refuse_version(str(exc))
                break
            except ProtocolError as exc:
                out.append(m.Error(code=exc.code.value, message=f"Unreadable message from the backend: {exc}"))
                continue
            if self._handle(msg):
                out.append(msg)
        self.check_connection()
        return out

    def check_connection(self) -> None:
        """Heartbeat and loss detection; `poll` calls it, and so may a caller that is not receiving."""
        if self._socket is None:
            return
        if self._transport_dropped() and self.state in (ConnectionState.CONNECTING, ConnectionState.CONNECTED):
            self._declare_lost(
                f"The connection to the backend at {self.address} closed (it stopped, crashed or the network "
                f"dropped). Results already received are still applied. {AFTER_LOSS}"
            )
            return
        now = time.monotonic()
        if self.state == ConnectionState.CONNECTING:
            if now - self._connect_started > self.handshake_timeout:
                self._declare_lost(
                    f"No answer from a backend at {self.address} within {self.handshake_timeout:g} s. "
                    "Is it running, and is the address right?"
                )
            return
        if self.state != ConnectionState.CONNECTED:
            return
        # Silence counts from the first ping sent since the last message: while Blender is busy (a long render,
        # a capture) nobody pings, and the backend, which only answers, has nothing to say.
        unanswered = self._first_unanswered_ping
        if unanswered is not None and unanswered < self._last_received:
            unanswered = None
        if (
            now - self._last_received > self.unanswered_after
            and unanswered is not None
            and now - unanswered > self.unanswered_after - PING_EVERY
        ):
            self._declare_lost(
                f"The backend at {self.address} has not answered for {now - self._last_received:.1f} s although "
                "it is still connected (it hung, or its machine is overloaded). Results already received are still "
                f"applied. {AFTER_LOSS}"
            )
            return
        if now - self._last_ping >= PING_EVERY:
            self._last_ping = now
            if unanswered is None:
                self._first_unanswered_ping = now
            self._send(m.Ping(time=time.time()))

    def _declare_lost(self, why: str) -> None:
        self.state = ConnectionState.LOST
        self.state_message = why

    def _refuse_version(self, why: str) -> None:
        self.state = ConnectionState.VERSION_MISMATCH
        self.state_message = why
        self._close_socket()

    def _handle(self, msg: m.Message) -> bool:
        """Update state from one message; True if the caller should see it."""
        if isinstance(msg, m.Plugins):
            self._on_plugins(msg)
            return True
        if isinstance(msg, m.Pong):
            self.last_pong = msg
            return False
        if isinstance(msg, m.Jobs):
            self.backend_jobs = list(msg.jobs)
            return False
        if isinstance(msg, m.Error):
            if msg.code == ErrorCode.VERSION_MISMATCH.value:
                self._refuse_version(msg.message)
            elif msg.code == ErrorCode.UNKNOWN_JOB.value and msg.job in self.jobs:
                job = self.jobs[msg.job]
                job.state, job.message, job.error_code = JobState.FAILED, msg.message, msg.code
            return True
        job = self.jobs.get(msg.job) if msg.job else None
        if job is None:
            return not msg.job  # events of jobs this client does not know are not ours to apply
        if job.state.finished and not isinstance(msg, (m.Done, m.Failed, m.Cancelled)):
            return False  # e.g. results still in flight after the add-on failed the job
        if isinstance(msg, m.Accepted):
            if job.state == JobState.SUBMITTED:
                job.state = JobState.QUEUED
                job.stage = "queued" if msg.position else job.stage
            return False
        if isinstance(msg, m.Progress):
            job.state, job.stage, job.fraction, job.message = JobState.RUNNING, msg.stage, msg.fraction, msg.message
            if msg.warning and msg.warning not in job.warnings:
                job.warnings.append(msg.warning)
            if "preview" in msg.arrays:
                job.preview, job.previews = msg.arrays["preview"], job.previews + 1
            return False
        if isinstance(msg, m.Result):
            return self._on_result(job, msg)
        if isinstance(msg, (m.Done, m.Failed, m.Cancelled)):
            return self._on_end(job, msg)
        return True

    def _on_plugins(self, msg: m.Plugins) -> None:
        self.server, self.device = msg.server, msg.device
        self.plugins = {}
        for wire in msg.plugins:
            spec = PluginSpec.from_wire(wire)
            self.plugins[spec.name] = spec
        resumed = self.state != ConnectionState.CONNECTING or any(self.unfinished_jobs())
        self.state = ConnectionState.CONNECTED
        self.state_message = f"Connected to backend {self.server or '?'} on {self.device or 'an unknown device'}."
        if resumed:
            for job in self.unfinished_jobs():
                self._send(m.Fetch(job=job.id, start=job.applied))
        self._send(m.Jobs())  # what the backend keeps, from this and earlier sessions

    def _on_result(self, job: JobRecord, msg: m.Result) -> bool:
        if job.state in (JobState.SUBMITTED, JobState.QUEUED):
            job.state = JobState.RUNNING
        if msg.index < job.received:
            return False  # already applied (a fetch overlapping the live stream)
        if msg.index > job.received:
            # A gap: ask again from the first missing one rather than apply out of order.
            self._send(m.Fetch(job=job.id, start=job.received))
            return False
        job.received += 1
        return True

    def _on_end(self, job: JobRecord, msg: m.Message) -> bool:
        total = getattr(msg, "results", 0)
        if job.state.finished:  # e.g. failed here: the backend's own end still changes its list of jobs
            self._send(m.Jobs())
            return False
        if total > job.received:
            # The end overtook results we never got (e.g. across a reconnect): fetch the rest.
            self._send(m.Fetch(job=job.id, start=job.received))
            return False
        job.expected = total
        self._send(m.Jobs())  # keep the list of the backend's jobs current
        if isinstance(msg, m.Done):
            job.state, job.fraction, job.stage = JobState.DONE, 1.0, "done"
            job.message = f"Finished in {msg.seconds:.1f} s ({total} results)."
        elif isinstance(msg, m.Failed):
            job.state, job.message, job.error_code = JobState.FAILED, msg.message, msg.code
        else:
            job.state, job.message = JobState.CANCELLED, "Cancelled."
        return True

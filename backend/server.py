"""The backend's I/O loop: one ROUTER socket, a zmq.Poller, never blocked by a job.

Clients are DEALER sockets. The first message of a connection must be `hello`; its
`session` (stable across reconnects) decides where a job's live events go: to the
connection that most recently said hello with that session. Job events come from the
worker thread through `JobManager.take_events()`; the worker wakes the loop through an
inproc PUSH/PULL pair (one PUSH socket per thread, as ZeroMQ sockets are not thread-safe).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from shared import messages as wire
from shared.codec import DEFAULT_LIMITS, Limits
from shared.errors import ErrorCode, ProtocolError, TesseraError, VersionMismatch
from shared.version import PROTOCOL_VERSION

from .job_store import JobStore
from .jobs import JobManager, end_message
from .plugin_host import Plugin
from .security import check_bind_allowed, load_server_keys

log = logging.getLogger(__name__)


def server_version() -> str:
    try:
        from importlib.metadata import version

        return version("tessera4d")
    except Exception:
        return "unknown"


class _Waker:
    """Wakes the I/O loop from any thread: each thread pushes on its own inproc PUSH socket."""

    def __init__(self, ctx: zmq.Context, address: str) -> None:
        self.ctx, self.address = ctx, address
        self.pull = ctx.socket(zmq.PULL)
        self.pull.bind(address)
        self._local = threading.local()
        self._sockets: list[zmq.Socket] = []
        self._lock = threading.Lock()

    def wake(self) -> None:
        sock = getattr(self._local, "sock", None)
        if sock is None:
            sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, 1)  # one pending wake-up is enough
            sock.connect(self.address)
            self._local.sock = sock
            with self._lock:
                self._sockets.append(sock)
        try:
            sock.send(b"", zmq.NOBLOCK)
        except zmq.Again:
            pass  # a wake-up is already pending

    def drain(self) -> None:
        while True:
            try:
                self.pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def close(self) -> None:
        with self._lock:
            for sock in self._sockets:
                sock.close(linger=0)
        self.pull.close(linger=0)


@dataclass
class _Routes:
    """Who hears what: connection identity <-> session, and each job's session."""

    session_of: dict[bytes, str] = field(default_factory=dict)  # identity -> session
    identity_of: dict[str, bytes] = field(default_factory=dict)  # session -> latest identity
    job_session: dict[str, str] = field(default_factory=dict)
    job_min_index: dict[str, int] = field(default_factory=dict)  # results below were already replayed


class BackendServer:
    """Serve the protocol on `bind` until `stop()`. `plugins` overrides entry-point discovery (tests)."""

    def __init__(
        self,
        bind: str,
        jobs_dir: Path,
        curve_keys: Path | None = None,
        plugins: dict[str, type[Plugin]] | None = None,
        limits: Limits = DEFAULT_LIMITS,
        devices: list[str] | None = None,
    ) -> None:
        check_bind_allowed(bind, curve_keys)
        self.bind, self.limits, self.curve_keys = bind, limits, curve_keys
        self.ctx = zmq.Context()
        self.waker = _Waker(self.ctx, f"inproc://tessera4d-wake-{id(self)}")
        self.manager = JobManager(JobStore(jobs_dir), plugins=plugins, notify=self.waker.wake, devices=devices)
        self.routes = _Routes()
        self.endpoint = ""
        self._stop = threading.Event()
        self._auth: ThreadAuthenticator | None = None
        self.socket = self.ctx.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, max(limits.max_array_bytes, limits.max_envelope_bytes))
        self.socket.setsockopt(zmq.SNDHWM, 10000)
        self.socket.setsockopt(zmq.RCVHWM, 10000)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> str:
        """Bind, start auth and the worker; returns the bound endpoint."""
        if self.curve_keys is not None:
            public, secret, authorized = load_server_keys(self.curve_keys)
            self._auth = ThreadAuthenticator(self.ctx)
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(authorized))
            self.socket.curve_secretkey = secret
            self.socket.curve_publickey = public
            self.socket.curve_server = True
        try:
            self.socket.bind(self.bind)
        except zmq.ZMQError as exc:
            raise TesseraError(f"Cannot listen on {self.bind}: {exc}. Is another backend using that port?") from exc
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.manager.start()
        self.manager.device_ready.wait(120)
        return self.endpoint

    def stop(self) -> None:
        self._stop.set()
        self.waker.wake()

    def close(self) -> None:
        self.manager.stop()
        if self._auth is not None:
            self._auth.stop()
        self.socket.close(linger=0)
        self.waker.close()
        self.ctx.destroy(linger=0)  # also closes a socket a still-stopping worker may have made

    def serve_forever(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self.waker.pull, zmq.POLLIN)
        while not self._stop.is_set():
            ready = dict(poller.poll(1000))
            if self.waker.pull in ready:
                self.waker.drain()
            self._deliver(self.manager.take_events())
            if self.socket in ready:
                for _ in range(100):  # bounded, so job events interleave with a flood of requests
                    try:
                        frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._handle_frames(frames)

    # -- sending ----------------------------------------------------------------------------------
    def _send(self, identity: bytes, msg: wire.Message) -> None:
        try:
            frames = wire.to_frames(msg)
        except ProtocolError as exc:  # our own message cannot be encoded: say so rather than go silent
            log.error("Cannot encode %s for job %r: %s", msg.KIND, msg.job, exc)
            frames = wire.to_frames(wire.Error(job=msg.job, code=exc.code.value, message=exc.message))
        try:
            self.socket.send_multipart([identity, *frames], copy=False)
        except zmq.ZMQError as exc:
            log.warning("Could not send %s to a client: %s", msg.KIND, exc)

    def _error(self, identity: bytes, code: ErrorCode | str, message: str, reply_to: str = "", job: str = "") -> None:
        code = code.value if isinstance(code, ErrorCode) else code
        self._send(identity, wire.Error(job=job, code=code, message=message, reply_to=reply_to))

    def _deliver(self, events: list[wire.Message]) -> None:
        """Send job events to the connection of the session that owns the job (dropped if none: they are on disk)."""
        for msg in events:
            if isinstance(msg, wire.Result) and msg.index < self.routes.job_min_index.get(msg.job, 0):
                continue  # already replayed by a fetch
            session = self.routes.job_session.get(msg.job)
            identity = self.routes.identity_of.get(session) if session is not None else None
            if identity is not None:
                self._send(identity, msg)

    # -- receiving --------------------------------------------------------------------------------
    def _handle_frames(self, frames: list[Any]) -> None:
        if len(frames) < 2:
            return  # ROUTER always prefixes the identity; nothing to answer
        identity = bytes(frames[0].bytes)
        body = frames[1:]
        try:
            msg = wire.from_frames(body, self.limits)
        except VersionMismatch as exc:
            self._error(identity, ErrorCode.VERSION_MISMATCH, exc.message, _peek_id(body))
            return
        except ProtocolError as exc:
            self._error(identity, exc.code, exc.message, _peek_id(body))
            return
        except Exception as exc:  # the codec promises ProtocolError; be safe anyway
            log.exception("Unexpected error decoding a message")
            self._error(identity, ErrorCode.MALFORMED, f"Message could not be read: {exc}", _peek_id(body))
            return
        try:
            self._dispatch(identity, msg)
        except TesseraError as exc:
            self._error(identity, exc.code, exc.message, msg.id, msg.job)
        except Exception as exc:
            log.exception("Handler for %r failed", msg.KIND)
            self._error(identity, ErrorCode.MALFORMED, f"The backend could not handle '{msg.KIND}': {exc}", msg.id)

    def _dispatch(self, identity: bytes, msg: wire.Message) -> None:
        if isinstance(msg, wire.Hello):
            self._hello(identity, msg)
            return
        session = self.routes.session_of.get(identity)
        if session is None:
            self._error(identity, ErrorCode.NOT_AUTHENTICATED, "Say hello first: send a 'hello' message.", msg.id)
            return
        if isinstance(msg, wire.Submit):
            self._submit(identity, session, msg)
        elif isinstance(msg, wire.Cancel):
            self.manager.cancel(msg.job)
        elif isinstance(msg, wire.Fetch):
            self._fetch(identity, session, msg)
        elif isinstance(msg, wire.Jobs):
            self._send(identity, wire.Jobs(id=msg.id, jobs=self.manager.job_list()))
        elif isinstance(msg, wire.Release):
            self._send(identity, wire.Released(id=msg.id, message=self.manager.release()))
        elif isinstance(msg, wire.Ping):
            running, queued = self.manager.counts()
            self._send(identity, wire.Pong(id=msg.id, time=msg.time, running=running, queued=queued))
        else:
            self._error(identity, ErrorCode.UNKNOWN_KIND, f"A client cannot send '{msg.KIND}' messages.", msg.id)

    def _hello(self, identity: bytes, msg: wire.Hello) -> None:
        if msg.protocol != PROTOCOL_VERSION:
            self._error(
                identity,
                ErrorCode.VERSION_MISMATCH,
                f"Protocol version mismatch: the backend speaks version {PROTOCOL_VERSION}, the client "
                f"speaks version {msg.protocol}. Install the add-on and the backend from the same release.",
                msg.id,
            )
            return
        session = msg.session or f"connection-{identity.hex()}"
        old = self.routes.session_of.get(identity)
        if old is not None and old != session and self.routes.identity_of.get(old) == identity:
            del self.routes.identity_of[old]
        self.routes.session_of[identity] = session
        self.routes.identity_of[session] = identity
        log.info("Hello from %r (session %s)", msg.client, session)
        specs = [spec.to_wire() for spec in self.manager.specs()]
        self._send(
            identity,
            wire.Plugins(id=msg.id, server=server_version(), device=self.manager.device, plugins=specs),
        )

    def _submit(self, identity: bytes, session: str, msg: wire.Submit) -> None:
        try:
            position = self.manager.submit(msg.job, msg.plugin, msg.params, msg.arrays, msg.client)
        except TesseraError as exc:
            self._send(identity, wire.Failed(id=msg.id, job=msg.job, code=exc.code.value, message=exc.message))
            return
        self.routes.job_session[msg.job] = session
        self._send(identity, wire.Accepted(id=msg.id, job=msg.job, plugin=msg.plugin, position=position))

    def _fetch(self, identity: bytes, session: str, msg: wire.Fetch) -> None:
        pending, record = self.manager.snapshot(msg.job)  # raises unknown_job
        self._deliver(pending)
        folder = self.manager.store.folder(msg.job)
        for index, type_, meta, arrays in folder.iter_results(msg.start, record.results):
            self._send(identity, wire.Result(job=msg.job, index=index, type=type_, meta=meta, arrays=arrays))
        if record.ended:
            self._send(identity, end_message(record))
        else:  # keep streaming live to this session
            self.routes.job_session[msg.job] = session
            self.routes.job_min_index[msg.job] = record.results


def _peek_id(frames: list[Any]) -> str:
    """The message id of an unreadable message, if its envelope gives one away."""
    try:
        env = msgpack.unpackb(frames[0].bytes if hasattr(frames[0], "bytes") else frames[0], raw=False)
        msg_id = env.get("id", "") if isinstance(env, dict) else ""
        return msg_id if isinstance(msg_id, str) and len(msg_id) <= 200 else ""
    except Exception:
        return ""


def serve(
    bind: str,
    jobs_dir: Path,
    curve_keys: Path | None = None,
    plugins: dict[str, type[Plugin]] | None = None,
    devices: list[str] | None = None,
) -> None:
    """Run a backend until interrupted; prints the 'listening' line tests and launchers wait for."""
    server = BackendServer(bind, jobs_dir, curve_keys=curve_keys, plugins=plugins, devices=devices)
    try:
        endpoint = server.start()
        print(
            f"tessera4d backend listening on {endpoint} (device {server.manager.device}, protocol {PROTOCOL_VERSION})",
            flush=True,
        )
        started = time.time()
        server.serve_forever()
        log.info("Served for %.0f s", time.time() - started)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()

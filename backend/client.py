"""A small blocking client (one DEALER socket) for the CLI, tests and benchmarks.

The Blender add-on has its own non-blocking client; this one favours plain code:
every call sends one message and waits for its reply, buffering job events it meets
on the way so `iter_events` can hand them out later.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from shared import messages as wire
from shared.errors import ErrorCode, TesseraError
from shared.schemas import PluginSpec

END_KINDS = (wire.Done, wire.Failed, wire.Cancelled)
_JOB_EVENTS = (wire.Progress, wire.Result, *END_KINDS)


def _error(msg: wire.Error) -> TesseraError:
    """A TesseraError carrying the backend's error code (plugin_error if the code is unknown here)."""
    known = msg.code in ErrorCode._value2member_map_
    return TesseraError(msg.message, ErrorCode(msg.code) if known else ErrorCode.PLUGIN_ERROR)


class BackendTimeout(TesseraError):
    """The backend did not answer in time."""


class BackendClient:
    """`curve` is a keys folder holding server.key, client.key and client.key_secret."""

    def __init__(self, address: str, session: str | None = None, curve: Path | None = None) -> None:
        self.address = address
        self.session = session or wire.new_id()
        self.ctx = zmq.Context.instance()
        self.socket = self.ctx.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            from .security import load_client_keys

            server_public, public, secret = load_client_keys(curve)
            self.socket.curve_serverkey = server_public
            self.socket.curve_publickey = public
            self.socket.curve_secretkey = secret
        self.socket.connect(address)
        self.events: dict[str, deque[wire.Message]] = defaultdict(deque)
        self.plugins: list[PluginSpec] = []
        self.server_info: wire.Plugins | None = None

    # -- plumbing ------------------------------------------------------------------------------------
    def send(self, msg: wire.Message) -> None:
        self.socket.send_multipart(wire.to_frames(msg), copy=False)

    def receive(self, timeout: float) -> wire.Message:
        """The next message of any kind; raises BackendTimeout after `timeout` seconds."""
        if not self.socket.poll(int(timeout * 1000)):
            raise BackendTimeout(f"No answer from {self.address} within {timeout:.1f} s.")
        return wire.from_frames(self.socket.recv_multipart(copy=False))

    def request(self, msg: wire.Message, reply: tuple[type[wire.Message], ...], timeout: float = 10.0) -> wire.Message:
        """Send `msg` and return the first reply of a `reply` type; an Error answering it is raised."""
        self.send(msg)
        deadline = time.monotonic() + timeout
        while True:
            got = self.receive(max(deadline - time.monotonic(), 0.0))
            if isinstance(got, wire.Error) and got.reply_to in ("", msg.id):
                raise _error(got)
            if isinstance(got, reply) and (got.id == msg.id or not isinstance(got, _JOB_EVENTS)):
                return got
            if isinstance(got, _JOB_EVENTS):
                self.events[got.job].append(got)

    # -- the protocol --------------------------------------------------------------------------------
    def hello(self, timeout: float = 10.0) -> wire.Plugins:
        reply = self.request(
            wire.Hello(client="tessera4d python client", session=self.session), (wire.Plugins,), timeout
        )
        assert isinstance(reply, wire.Plugins)
        self.server_info = reply
        self.plugins = [PluginSpec.from_wire(p) for p in reply.plugins]
        return reply

    connect = hello

    def submit(
        self,
        plugin: str,
        params: dict[str, Any] | None = None,
        arrays: dict[str, np.ndarray] | None = None,
        job: str | None = None,
        timeout: float = 10.0,
    ) -> str:
        """Submit a job and return its id; raises TesseraError (with the backend's code) if refused."""
        msg = wire.Submit(job=job or wire.new_id(), plugin=plugin, params=params or {}, arrays=arrays or {})
        reply = self.request(msg, (wire.Accepted, wire.Failed), timeout)
        if isinstance(reply, wire.Failed):
            raise TesseraError(reply.message, ErrorCode(reply.code))
        return msg.job

    def iter_events(self, job: str, timeout: float = 30.0) -> Iterator[wire.Message]:
        """Yield the job's Progress/Result messages, then its Done/Failed/Cancelled, then stop.
        `timeout` is the longest wait for any one event."""
        while True:
            queue = self.events[job]
            if queue:
                msg = queue.popleft()
            else:
                msg = self.receive(timeout)
                if isinstance(msg, wire.Error) and msg.job == job:
                    raise _error(msg)
                if not isinstance(msg, _JOB_EVENTS):
                    continue
                if msg.job != job:
                    self.events[msg.job].append(msg)
                    continue
            yield msg
            if isinstance(msg, END_KINDS):
                return

    def fetch(self, job: str, start: int = 0) -> None:
        """Ask for stored results from `start`; read them with `iter_events(job)`."""
        self.events.pop(job, None)
        self.send(wire.Fetch(job=job, start=start))

    def cancel(self, job: str) -> None:
        self.send(wire.Cancel(job=job))

    def jobs(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        reply = self.request(wire.Jobs(), (wire.Jobs,), timeout)
        assert isinstance(reply, wire.Jobs)
        return reply.jobs

    def release(self, timeout: float = 30.0) -> str:
        reply = self.request(wire.Release(), (wire.Released,), timeout)
        assert isinstance(reply, wire.Released)
        return reply.message

    def ping(self, timeout: float = 10.0) -> wire.Pong:
        reply = self.request(wire.Ping(time=time.time()), (wire.Pong,), timeout)
        assert isinstance(reply, wire.Pong)
        return reply

    def close(self) -> None:
        self.socket.close(linger=0)

    def __enter__(self) -> BackendClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

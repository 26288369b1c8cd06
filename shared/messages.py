"""Typed messages. Each dataclass is one `kind` on the wire.

`to_frames(msg)` turns a message into ZeroMQ frames; `from_frames(frames)` checks and
turns frames back into the right dataclass, raising `ProtocolError` for anything else.

Direction: C = client (Blender add-on, CLI), S = server (backend).
"""

from __future__ import annotations

import dataclasses
import types
import typing
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .codec import DEFAULT_LIMITS, Limits, decode, encode
from .errors import ErrorCode, ProtocolError, VersionMismatch
from .version import PROTOCOL_VERSION


def new_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(kw_only=True)
class Message:
    """Fields every message has: a message id and, for job traffic, the job id."""

    KIND: ClassVar[str] = ""
    #: Whether decode refuses NaN/inf in this kind's float arrays (see Result for the one exception).
    FINITE_ON_DECODE: ClassVar[bool] = True
    id: str = field(default_factory=new_id)
    job: str = ""


@dataclass(kw_only=True)
class Hello(Message):
    """C→S. First message of a session; anything else before it is refused."""

    KIND: ClassVar[str] = "hello"
    protocol: int = PROTOCOL_VERSION
    client: str = ""  # e.g. "blender 5.0.1 / tessera4d 0.1.0"
    session: str = ""  # stable across reconnects, so live job events follow the client


@dataclass(kw_only=True)
class Plugins(Message):
    """S→C. Handshake reply: server version, device and every plugin's declaration."""

    KIND: ClassVar[str] = "plugins"
    protocol: int = PROTOCOL_VERSION
    server: str = ""
    device: str = ""
    plugins: list = field(default_factory=list)  # [PluginSpec.to_wire()]


@dataclass(kw_only=True)
class Submit(Message):
    """C→S. Start a job; `job` is chosen by the client (a new id)."""

    KIND: ClassVar[str] = "submit"
    plugin: str = ""
    params: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    # the client's own notes on the job (the add-on: which of its objects the results go to, by name), kept with
    # the job and given back in `jobs`, so a job fetched in a later session is applied as it was asked for
    client: dict = field(default_factory=dict)


@dataclass(kw_only=True)
class Accepted(Message):
    """S→C. The job is queued; `position` is how many jobs run or wait before it."""

    KIND: ClassVar[str] = "accepted"
    plugin: str = ""
    position: int = 0


@dataclass(kw_only=True)
class Progress(Message):
    """S→C. Where a running job is; optional preview arrays."""

    KIND: ClassVar[str] = "progress"
    stage: str = ""
    fraction: float = 0.0  # 0..1 within the whole job
    message: str = ""
    warning: str = ""  # kept beside the job until it is cleared, unlike `message` (which the next progress replaces)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(kw_only=True)
class Result(Message):
    """S→C. One frame or chunk of a job's result stream; `index` counts from 0 per job.

    Result arrays are checked for NaN/inf exactly once on each side, by the validator of their
    result type in shared.results (the backend before sending, the add-on before writing
    anything), which also names the frame and vertex. Checking them again on decode would read
    every payload byte a second time for nothing.
    """

    KIND: ClassVar[str] = "result"
    FINITE_ON_DECODE: ClassVar[bool] = False
    index: int = 0
    type: str = ""  # a result type from shared.results, e.g. "mesh.frames"
    meta: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(kw_only=True)
class Done(Message):
    """S→C. The job finished; `results` is how many Result messages it produced."""

    KIND: ClassVar[str] = "done"
    results: int = 0
    seconds: float = 0.0


@dataclass(kw_only=True)
class Failed(Message):
    """S→C. The job stopped with an error; results already produced stay fetchable."""

    KIND: ClassVar[str] = "failed"
    code: str = ErrorCode.PLUGIN_ERROR.value
    message: str = ""
    results: int = 0


@dataclass(kw_only=True)
class Cancel(Message):
    """C→S. Ask the job to stop at its next step."""

    KIND: ClassVar[str] = "cancel"


@dataclass(kw_only=True)
class Cancelled(Message):
    """S→C. The job stopped because it was cancelled."""

    KIND: ClassVar[str] = "cancelled"
    results: int = 0


@dataclass(kw_only=True)
class Jobs(Message):
    """C→S with no jobs: list them. S→C: one dict per job (id, plugin, state, fraction, stage, results)."""

    KIND: ClassVar[str] = "jobs"
    jobs: list = field(default_factory=list)


@dataclass(kw_only=True)
class Fetch(Message):
    """C→S. Re-send a job's stored results from `start`, then its end state (or keep streaming)."""

    KIND: ClassVar[str] = "fetch"
    start: int = 0


@dataclass(kw_only=True)
class Release(Message):
    """C→S. Drop cached models and free GPU memory."""

    KIND: ClassVar[str] = "release"


@dataclass(kw_only=True)
class Released(Message):
    """S→C. What release freed, in words."""

    KIND: ClassVar[str] = "released"
    message: str = ""


@dataclass(kw_only=True)
class Ping(Message):
    KIND: ClassVar[str] = "ping"
    time: float = 0.0


@dataclass(kw_only=True)
class Pong(Message):
    """S→C. Heartbeat reply; also says how busy the server is."""

    KIND: ClassVar[str] = "pong"
    time: float = 0.0
    running: int = 0
    queued: int = 0


@dataclass(kw_only=True)
class Error(Message):
    """S→C. A message was refused; `reply_to` is its id when it could be read."""

    KIND: ClassVar[str] = "error"
    code: str = ErrorCode.MALFORMED.value
    message: str = ""
    reply_to: str = ""


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.KIND: cls
    for cls in (
        Hello,
        Plugins,
        Submit,
        Accepted,
        Progress,
        Result,
        Done,
        Failed,
        Cancel,
        Cancelled,
        Jobs,
        Fetch,
        Release,
        Released,
        Ping,
        Pong,
        Error,
    )
}


def to_frames(msg: Message) -> list[Any]:
    """Frames ready for `socket.send_multipart(frames, copy=False)`."""
    body = {}
    arrays: dict[str, np.ndarray] = {}
    for f in dataclasses.fields(msg):
        if f.name in ("id", "job"):
            continue
        value = getattr(msg, f.name)
        if f.name == "arrays":
            arrays = value
        else:
            body[f.name] = value
    return encode(msg.KIND, body, arrays, msg_id=msg.id, job=msg.job)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _check_type(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    base = origin or hint
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, base)


def _finite_on_decode(kind: str) -> bool:
    cls = MESSAGE_TYPES.get(kind)
    return cls is None or cls.FINITE_ON_DECODE


def from_frames(frames: Sequence[Any], limits: Limits = DEFAULT_LIMITS) -> Message:
    """Decode and type-check one message. Raises ProtocolError (or VersionMismatch)."""
    raw = decode(frames, limits, _finite_on_decode)
    if raw.version != PROTOCOL_VERSION:
        raise VersionMismatch(
            f"Protocol version mismatch: this side speaks version {PROTOCOL_VERSION}, "
            f"the other side sent version {raw.version}. Install the add-on and the backend from the same release."
        )
    cls = MESSAGE_TYPES.get(raw.kind)
    if cls is None:
        raise ProtocolError(f"Unknown message kind {raw.kind!r}.", ErrorCode.UNKNOWN_KIND)
    kwargs: dict[str, Any] = {"id": raw.id, "job": raw.job}
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in raw.body.items():
        if key not in names or key in ("id", "job", "arrays"):
            raise ProtocolError(f"Message '{raw.kind}' has an unknown field {key!r}.")
        if not _check_type(value, hints[key]):
            raise ProtocolError(
                f"Message '{raw.kind}' field {key!r} has type {type(value).__name__}, expected {hints[key]}."
            )
        kwargs[key] = value
    if raw.arrays:
        if "arrays" not in names:
            raise ProtocolError(f"Message '{raw.kind}' carries arrays but takes none.", ErrorCode.BAD_ARRAY)
        kwargs["arrays"] = raw.arrays
    if isinstance(kwargs.get("fraction"), int):
        kwargs["fraction"] = float(kwargs["fraction"])
    return cls(**kwargs)

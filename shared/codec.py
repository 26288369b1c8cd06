"""Framing: one msgpack envelope frame, then one raw frame per numpy array.

Wire layout of a message (a ZeroMQ multipart message):

    frame 0      msgpack map {"v": int, "kind": str, "id": str, "job": str,
                              "body": map, "arrays": [[name, dtype, shape], ...]}
    frame 1..N   the bytes of each array, C order, little endian, in the order of "arrays"

Arrays are never pickled. `encode` returns the arrays themselves (not copies) so the
sender can hand them to ZeroMQ zero-copy; `decode` wraps received buffers with
`np.frombuffer` (no copy, read-only) after checking them against `Limits`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from .errors import ErrorCode, ProtocolError
from .version import PROTOCOL_VERSION

#: dtypes allowed on the wire (little endian where it matters).
ALLOWED_DTYPES: frozenset[str] = frozenset(
    ["|b1", "|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f2", "<f4", "<f8"]
)


@dataclass(frozen=True)
class Limits:
    """What a receiver accepts. Defaults suit a workstation; a server may lower them."""

    max_envelope_bytes: int = 1 << 20  # 1 MiB of msgpack metadata
    max_array_bytes: int = 2 << 30  # 2 GiB per array frame
    max_message_bytes: int = 4 << 30  # 4 GiB per message, all frames together
    max_arrays: int = 64
    max_ndim: int = 6


DEFAULT_LIMITS = Limits()


@dataclass
class RawMessage:
    """A decoded envelope before it is turned into a typed message."""

    version: int
    kind: str
    id: str
    job: str
    body: dict[str, Any]
    arrays: dict[str, np.ndarray]


def _wire_array(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise ProtocolError(
            f"Array '{name}' has dtype {arr.dtype}, which cannot travel on the wire "
            f"(allowed: bool, integers, float16/32/64).",
            ErrorCode.BAD_ARRAY,
        )
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    if arr.dtype.str not in ALLOWED_DTYPES:
        raise ProtocolError(f"Array '{name}' has dtype {arr.dtype.str}, not allowed on the wire.", ErrorCode.BAD_ARRAY)
    return arr


def encode(
    kind: str, body: dict[str, Any], arrays: dict[str, Any] | None = None, *, msg_id: str = "", job: str = ""
) -> list[Any]:
    """Build the frames of one message. Array frames are the (contiguous) arrays themselves."""
    wire_arrays = [(name, _wire_array(name, a)) for name, a in (arrays or {}).items()]
    envelope = {
        "v": PROTOCOL_VERSION,
        "kind": kind,
        "id": msg_id,
        "job": job,
        "body": body,
        "arrays": [[name, a.dtype.str, list(a.shape)] for name, a in wire_arrays],
    }
    try:
        head = msgpack.packb(envelope, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"Message '{kind}' has a body msgpack cannot encode: {exc}") from exc
    # 0-d arrays have no buffer zmq accepts; reshape keeps them zero-copy where possible.
    return [head, *(a.reshape(-1) if a.ndim == 0 else a for _, a in wire_arrays)]


def _buffer(frame: Any) -> memoryview:
    if isinstance(frame, np.ndarray):  # frames decoded in-process, straight from encode()
        return memoryview(np.ascontiguousarray(frame).reshape(-1).view(np.uint8))
    buf = getattr(frame, "buffer", frame)  # zmq.Frame exposes .buffer; bytes are buffers
    try:
        return memoryview(buf).cast("B")
    except TypeError as exc:
        raise ProtocolError(f"A frame is not a readable byte buffer: {exc}") from exc


def all_finite(arr: np.ndarray) -> bool:
    """True when no element of a float array is NaN or infinite (one fast pass in the usual case)."""
    if arr.dtype.kind != "f" or arr.size == 0:
        return True
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing or NaN sum is an answer, not a warning
        if arr.dtype.itemsize >= 4 and arr.flags.c_contiguous:
            # Fast path (BLAS, ~5x faster than a float64 sum): squares are >= 0, so an inf can never
            # cancel another and a NaN always propagates; a finite sum of squares means every value is
            # finite. Huge finite values may overflow the sum: then the exact check below decides.
            flat = arr.reshape(-1)
            if np.isfinite(np.dot(flat, flat)):
                return True
        elif arr.dtype.itemsize < 8 and np.isfinite(arr.sum(dtype=np.float64)):
            # A float64 sum of finite float16/32 values cannot overflow, so one pass answers it.
            return True
    return bool(np.isfinite(arr).all())


def decode(
    frames: Sequence[Any], limits: Limits = DEFAULT_LIMITS, finite: Callable[[str], bool] | None = None
) -> RawMessage:
    """Check and unpack the frames of one message. Raises ProtocolError, never anything else.

    `finite(kind)` says whether float arrays of that message kind must be finite (default: all
    kinds). Checking reads every byte once, so kinds whose arrays are checked later by their
    consumer (results, by the shared.results validators) can skip it here.
    """
    if not frames:
        raise ProtocolError("Empty message: expected a msgpack envelope frame.")
    if len(frames) - 1 > limits.max_arrays:
        raise ProtocolError(
            f"Message has {len(frames) - 1} array frames; the limit is {limits.max_arrays}.", ErrorCode.TOO_LARGE
        )
    head = _buffer(frames[0])
    if head.nbytes > limits.max_envelope_bytes:
        raise ProtocolError(
            f"Envelope is {head.nbytes} bytes; the limit is {limits.max_envelope_bytes}.", ErrorCode.TOO_LARGE
        )
    try:
        env = msgpack.unpackb(head, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(f"Envelope is not valid msgpack: {exc}") from exc
    if not isinstance(env, dict):
        raise ProtocolError("Envelope must be a msgpack map.")
    version, kind, msg_id, job = env.get("v"), env.get("kind"), env.get("id", ""), env.get("job", "")
    body, specs = env.get("body", {}), env.get("arrays", [])
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolError("Envelope field 'v' (protocol version) must be an integer.")
    if not isinstance(kind, str) or not kind:
        raise ProtocolError("Envelope field 'kind' must be a non-empty string.")
    if not isinstance(msg_id, str) or not isinstance(job, str):
        raise ProtocolError("Envelope fields 'id' and 'job' must be strings.")
    if not isinstance(body, dict) or not isinstance(specs, list):
        raise ProtocolError("Envelope fields 'body' (map) and 'arrays' (list) have the wrong type.")
    if len(specs) != len(frames) - 1:
        raise ProtocolError(f"Envelope describes {len(specs)} arrays but {len(frames) - 1} array frames arrived.")

    arrays: dict[str, np.ndarray] = {}
    total = head.nbytes
    for i, spec in enumerate(specs):
        arrays_name, arr = _decode_array(spec, frames[i + 1], limits, finite is None or finite(kind))
        if arrays_name in arrays:
            raise ProtocolError(f"Array '{arrays_name}' appears twice.", ErrorCode.BAD_ARRAY)
        total += arr.nbytes
        if total > limits.max_message_bytes:
            raise ProtocolError(f"Message is over {limits.max_message_bytes} bytes in total.", ErrorCode.TOO_LARGE)
        arrays[arrays_name] = arr
    return RawMessage(version, kind, msg_id, job, body, arrays)


def _decode_array(spec: Any, frame: Any, limits: Limits, check_finite: bool) -> tuple[str, np.ndarray]:
    if not (isinstance(spec, list) and len(spec) == 3):
        raise ProtocolError("Array descriptor must be [name, dtype, shape].", ErrorCode.BAD_ARRAY)
    name, dtype, shape = spec
    if not isinstance(name, str) or not name:
        raise ProtocolError("Array name must be a non-empty string.", ErrorCode.BAD_ARRAY)
    if dtype not in ALLOWED_DTYPES:
        raise ProtocolError(
            f"Array '{name}' has dtype {dtype!r}; allowed: {sorted(ALLOWED_DTYPES)}.", ErrorCode.BAD_ARRAY
        )
    if (
        not isinstance(shape, list)
        or len(shape) > limits.max_ndim
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise ProtocolError(
            f"Array '{name}' has shape {shape!r}; expected up to {limits.max_ndim} non-negative integers.",
            ErrorCode.BAD_ARRAY,
        )
    buf = _buffer(frame)
    if buf.nbytes > limits.max_array_bytes:
        raise ProtocolError(
            f"Array '{name}' is {buf.nbytes} bytes; the limit is {limits.max_array_bytes}.", ErrorCode.TOO_LARGE
        )
    dt = np.dtype(dtype)
    expected = math.prod(shape) * dt.itemsize  # exact Python ints: huge shapes must not wrap around
    if expected != buf.nbytes:
        raise ProtocolError(
            f"Array '{name}' declares {dtype}{tuple(shape)} = {expected} bytes but its frame has {buf.nbytes}.",
            ErrorCode.BAD_ARRAY,
        )
    arr = np.frombuffer(buf, dtype=dt).reshape(shape)
    if check_finite and not all_finite(arr):
        raise ProtocolError(f"Array '{name}' contains NaN or infinite values.", ErrorCode.BAD_ARRAY)
    return name, arr

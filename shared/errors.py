"""Typed errors shared by both sides; each maps to a stable error code on the wire."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Error codes carried by `error` and `failed` messages."""

    MALFORMED = "malformed"  # not a message we can read (bad msgpack, missing fields)
    TOO_LARGE = "too_large"  # a frame or the whole message is over the receiver's limits
    BAD_ARRAY = "bad_array"  # dtype not allowed, shape does not match the bytes, non-finite floats
    VERSION_MISMATCH = "version_mismatch"
    NOT_AUTHENTICATED = "not_authenticated"  # anything but hello before the handshake
    UNKNOWN_KIND = "unknown_kind"
    UNKNOWN_PLUGIN = "unknown_plugin"
    UNKNOWN_JOB = "unknown_job"
    BAD_PARAMS = "bad_params"
    BAD_INPUT = "bad_input"  # the plugin refused its input (missing file, wrong shapes...)
    PLUGIN_ERROR = "plugin_error"  # the plugin raised something unexpected
    BACKEND_STOPPED = "backend_stopped"  # the backend died while the job was running


class TesseraError(Exception):
    """Base of every error this project raises on purpose. `code` travels on the wire."""

    code: ErrorCode = ErrorCode.PLUGIN_ERROR

    def __init__(self, message: str, code: ErrorCode | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ProtocolError(TesseraError):
    """A message broke the protocol: unreadable, too large, bad array, unknown kind."""

    code = ErrorCode.MALFORMED


class VersionMismatch(ProtocolError):
    code = ErrorCode.VERSION_MISMATCH


class ParamError(TesseraError):
    """Parameters do not match the plugin's declared schema."""

    code = ErrorCode.BAD_PARAMS


class InputError(TesseraError):
    """The input data cannot be used (missing file, wrong shape, non-finite values...)."""

    code = ErrorCode.BAD_INPUT


class JobCancelled(TesseraError):
    """Raised inside a plugin's run when the user cancelled the job."""

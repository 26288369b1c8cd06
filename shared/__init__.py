"""The wire protocol both the backend and the Blender add-on import.

Pure Python + msgpack + numpy: no bpy, no torch, no socket code. The add-on carries a
copy of this package, so everything in it uses relative imports only.
"""

from .codec import ALLOWED_DTYPES, DEFAULT_LIMITS, Limits
from .errors import ErrorCode, InputError, JobCancelled, ParamError, ProtocolError, TesseraError, VersionMismatch
from .messages import MESSAGE_TYPES, Message, from_frames, new_id, to_frames
from .version import PROTOCOL_VERSION

__all__ = [
    "ALLOWED_DTYPES",
    "DEFAULT_LIMITS",
    "Limits",
    "ErrorCode",
    "InputError",
    "JobCancelled",
    "ParamError",
    "ProtocolError",
    "TesseraError",
    "VersionMismatch",
    "MESSAGE_TYPES",
    "Message",
    "from_frames",
    "new_id",
    "to_frames",
    "PROTOCOL_VERSION",
]

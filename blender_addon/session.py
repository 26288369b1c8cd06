"""The add-on's runtime objects for this Blender process: the client, a local backend, and
the sequences being streamed. Python objects (sockets, processes) cannot live in Blender
data, so they live here; everything the user sees is drawn from this one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .client import BackendClient, ConnectionState
from .file_writer import WRITER
from .local_backend import LocalBackend


@dataclass
class Session:
    client: BackendClient | None = None
    local: LocalBackend | None = None
    targets: dict[str, Any] = field(default_factory=dict)  # job id → MeshSequence / GaussianSequence
    pending: Any = None  # a result being written step by step (pump.PendingFrames / PendingSteps)
    pump_running: bool = False  # the modal pump operator is alive
    last_error: str = ""  # the latest refused request, shown in the panel
    last_notice: str = ""  # e.g. what Release GPU freed

    @property
    def state(self) -> ConnectionState:
        return self.client.state if self.client else ConnectionState.DISCONNECTED

    def shut_down(self) -> None:
        """Close the socket and stop a local backend (disconnect, unregister)."""
        WRITER.flush()  # writes in flight finish before anything else changes
        self.pending = None
        if self.client is not None:
            self.client.close()
        if self.local is not None:
            self.local.stop()
            self.local = None


SESSION = Session()

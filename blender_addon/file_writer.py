"""Disk writes off Blender's main thread.

A write can block for tens of milliseconds when the OS throttles dirty pages (seen here:
30 ms for 256 KiB), and the pump must return within 10 ms. So cache appends run on one
worker thread that does plain file I/O and nothing else: it never touches bpy, and the
pump (main thread) only asks whether a write has finished before it tags the object for
re-evaluation. One worker keeps writes in submission order. `flush()` runs before a save
moves cache files and when the connection closes, so no write is ever in flight then.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class FileWriter:
    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._futures: list[Future] = []

    def submit(self, write: Callable[..., Any], *args: Any) -> Future:
        """Run `write(*args)` (file I/O only, no bpy) on the writer thread."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tessera-file-writer")
        future = self._executor.submit(write, *args)
        self._futures = [f for f in self._futures if not f.done()] + [future]
        return future

    def flush(self) -> None:
        """Wait for every submitted write (errors stay with their futures, for the pump to report)."""
        for future in self._futures:
            future.exception()  # waits; does not raise
        self._futures.clear()

    def shut_down(self) -> None:
        """Finish pending writes and end the thread (disconnect, disable)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._futures.clear()


WRITER = FileWriter()

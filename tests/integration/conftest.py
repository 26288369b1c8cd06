"""Fixtures for the integration tests: a real backend process per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_process import BackendProcess, launch


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[BackendProcess]:
    process = launch(tmp_path / "jobs")
    yield process
    process.kill()

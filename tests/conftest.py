"""Shared fixtures: real servers on loopback ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.worker.app import create_app
from orpheus_tts.worker.config import WorkerConfig
from tests.servers import run_server


@pytest.fixture
def tone_worker() -> Iterator[str]:
    """A worker with the deterministic test engine, fault knobs on."""
    with run_server(create_app(ToneEngine(capacity=2, faults=True), WorkerConfig(max_queue=2))) as url:
        yield url


@pytest.fixture(scope="session")
def embedded_worker() -> Iterator[str]:
    """A worker with the embedded neural voice (loaded once per test session)."""
    from orpheus_tts.engines.embedded import create_embedded_engine

    with run_server(create_app(create_embedded_engine(), WorkerConfig())) as url:
        yield url

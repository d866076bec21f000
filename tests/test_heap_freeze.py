"""gc.freeze() once a server has started, for a server that owns its process only."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import httpx
import pytest

from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.serving.local import free_port, wait_ready
from orpheus_tts.serving.server import uvicorn_config
from orpheus_tts.serving.settings import HttpSettings
from orpheus_tts.serving.shutdown import DrainingServer
from orpheus_tts.worker.app import create_app
from orpheus_tts.worker.config import WorkerConfig
from tests.servers import run_server


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # give the test process its heap back


def test_a_server_embedded_in_a_program_leaves_its_heap_alone(unfrozen: None) -> None:
    with run_server(create_app(ToneEngine(), WorkerConfig())) as url:
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        assert gc.get_freeze_count() == 0


def test_a_server_that_owns_its_process_freezes_the_heap_once_started(unfrozen: None) -> None:
    port = free_port()
    config = uvicorn_config(
        create_app(ToneEngine(), WorkerConfig()), "127.0.0.1", port, HttpSettings(), log_level="warning"
    )
    server = DrainingServer(config, freeze_heap=True)  # as the CLI builds it
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        assert gc.get_freeze_count() > 0
    finally:
        server.should_exit = True
        thread.join(timeout=30)

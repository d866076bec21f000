"""Connection floods: slow connections past the cap never lock a quick client out."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.serving.local import LOOPBACK, ThreadedServer
from orpheus_tts.serving.settings import HttpSettings
from orpheus_tts.worker.app import create_app
from orpheus_tts.worker.config import WorkerConfig
from tests.eventually import eventually_sync
from tests.security.attacks import cli_server, flood, still_open

CAP = 8
ATTACKERS = 40
"""Five times the cap."""
NORMAL_REQUESTS = 20
NOFILE = 256
LOW_NOFILE_ATTACKERS = 300
"""More connections than the server may open files."""


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    # Read timeouts far longer than the test: only the cap can keep the quick client served.
    http = HttpSettings(max_connections=CAP, header_timeout_s=120, body_idle_timeout_s=120, body_timeout_s=120)
    engine = ToneEngine(capacity=CAP, faults=True)
    with ThreadedServer(create_app(engine, WorkerConfig(http=http))) as running:
        yield running


def normal_client(url: str, requests: int) -> list[int]:
    """A client with no keep-alive, as a fresh visitor: each request needs a new connection."""
    statuses = []
    for _ in range(requests):
        with httpx.Client(timeout=10) as client:
            statuses.append(client.post(f"{url}/v1/tts/stream", json={"text": "Hi."}).status_code)
    return statuses


def test_slow_connections_past_the_cap_while_a_normal_client_is_served(server: ThreadedServer) -> None:
    with flood(server.port, ATTACKERS) as attackers:
        assert len(attackers) == ATTACKERS
        assert eventually_sync(lambda: still_open(attackers) <= CAP)
        statuses = normal_client(server.url, NORMAL_REQUESTS)
        held = still_open(attackers)
    assert statuses == [200] * NORMAL_REQUESTS
    assert held <= CAP


def test_when_every_connection_is_busy_a_newcomer_gets_a_clean_503(server: ThreadedServer) -> None:
    release = threading.Event()
    started = threading.Barrier(CAP + 1)
    results: list[int] = []

    def stream() -> None:
        # Still streaming when the newcomer arrives: a finished response leaves an idle connection.
        body = {"text": "A sentence that takes a while to say, " * 4, "fault_piece_delay_ms": 100}
        with httpx.stream("POST", f"{server.url}/v1/tts/stream", json=body, timeout=30) as response:
            started.wait(timeout=10)
            release.wait(timeout=10)
            response.read()
            results.append(response.status_code)

    threads = [threading.Thread(target=stream) for _ in range(CAP)]
    for thread in threads:
        thread.start()
    try:
        started.wait(timeout=10)
        with httpx.Client(timeout=10) as client:
            refused = client.get(f"{server.url}/healthz")
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=30)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "overloaded"
    assert refused.headers["retry-after"]
    assert results == [200] * CAP, "the streams at the cap are not disturbed"


def test_under_a_low_open_file_limit_a_flood_does_not_lock_clients_out() -> None:
    # The default cap (1024) is brought down to half the server's 256 descriptors.
    with cli_server("worker", "--engine", "test", nofile=NOFILE) as (url, port, proc):
        with flood(port, LOW_NOFILE_ATTACKERS) as attackers:
            statuses = normal_client(url, NORMAL_REQUESTS // 2)
            held = still_open(attackers)
        assert proc.poll() is None
    assert statuses == [200] * (NORMAL_REQUESTS // 2)
    assert held <= NOFILE // 2
    assert LOOPBACK in url

"""The gateway's views of its workers: /v1/voices from memory, /v1/system complete even for a dead worker."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from orpheus_tts.gateway.app import create_app
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.gateway.probes import WORKER_FIELDS
from tests.eventually import eventually_sync
from tests.servers import ThreadedServer, run_server

PROBE_INTERVAL_S = 0.2


class CountingWorker:
    """A worker that only answers probes and listings, and counts what it is asked."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.app = Starlette(
            routes=[
                Route("/readyz", self._ready),
                Route("/v1/voices", self._voices),
                Route("/v1/system", self._system),
            ]
        )

    async def _ready(self, request: Request) -> JSONResponse:
        self.hits[request.url.path] += 1
        return JSONResponse({"status": "ready"})

    async def _voices(self, request: Request) -> JSONResponse:
        self.hits[request.url.path] += 1
        voice = {"id": "v1", "language": "en-US", "description": "", "aliases": [], "default": True}
        return JSONResponse({"engine": "fake", "default": "v1", "voices": [voice], "parameters": []})

    async def _system(self, request: Request) -> JSONResponse:
        self.hits[request.url.path] += 1
        return JSONResponse({"engine": "fake", "capacity": 3, "queue_depth": 0, "max_queue": 4, "worker": "w"})


@pytest.fixture
def counting_worker() -> Iterator[tuple[str, CountingWorker]]:
    worker = CountingWorker()
    with run_server(worker.app) as url:
        yield url, worker


def test_voices_are_answered_from_the_listings_the_probes_refresh(counting_worker: tuple[str, CountingWorker]) -> None:
    url, worker = counting_worker
    config = GatewayConfig(workers=(url,), probe_interval_s=PROBE_INTERVAL_S)
    with run_server(create_app(config)) as gw:
        listings = [httpx.get(f"{gw}/v1/voices", timeout=5).json() for _ in range(50)]
    assert all(listing["voices"][0]["id"] == "v1" for listing in listings)
    assert listings[0]["engine"] == "fake"
    # One listing per probe round at most, however many clients ask.
    assert worker.hits["/v1/voices"] <= worker.hits["/readyz"] + 1
    assert worker.hits["/v1/voices"] < 50, f"{worker.hits['/v1/voices']} listings fetched for 50 requests"


def test_system_keeps_an_unreachable_worker_with_null_fields_and_shows_the_limits(
    counting_worker: tuple[str, CountingWorker],
) -> None:
    live, _ = counting_worker
    doomed = ThreadedServer(CountingWorker().app).start()
    config = GatewayConfig(workers=(live, doomed.url), probe_interval_s=PROBE_INTERVAL_S, max_json_depth=8)
    with run_server(create_app(config)) as gw:
        system = httpx.get(f"{gw}/v1/system", timeout=5).json()
        assert {w["url"]: w["capacity"] for w in system["workers"]} == {live: 3, doomed.url: 3}
        doomed.stop()
        assert eventually_sync(lambda: httpx.get(f"{gw}/v1/system", timeout=5).json()["totals"]["healthy"] == 1)
        system = httpx.get(f"{gw}/v1/system", timeout=5).json()
        voices = httpx.get(f"{gw}/v1/voices", timeout=5).json()
    by_url = {w["url"]: w for w in system["workers"]}
    assert by_url[doomed.url]["healthy"] is False
    for name in WORKER_FIELDS:
        assert name in by_url[doomed.url], f"{name} dropped for the unreachable worker"
        assert by_url[doomed.url][name] is None
    assert by_url[live]["capacity"] == 3
    assert system["limits"]["max_json_depth"] == 8
    assert set(system["limits"]) >= {"default_timeout_s", "max_timeout_s", "max_text_chars", "max_body_bytes"}
    assert voices["engine"] == "fake", "the listing of the healthy worker is still served"

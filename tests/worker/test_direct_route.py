"""The worker's stream route, past FastAPI's middleware stack (``serving/direct.py``), with the same checks.

A real worker on loopback: its stream is whole, its request checks still
refuse, and the route is really taken (a counting middleware never sees the stream's requests unless
``direct_routes`` is off).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import pytest

from orpheus_tts.engines.testing import ToneEngine, render
from orpheus_tts.protocol import EosFrame
from orpheus_tts.serving.settings import HttpSettings
from orpheus_tts.worker.app import create_app
from orpheus_tts.worker.config import WorkerConfig
from tests.gateway.test_direct_route import STREAM, PathCounter
from tests.servers import run_server
from tests.streams import stream_tts

TEXT = "The worker answers past the middleware. Every frame is there!"


@contextlib.contextmanager
def serve_worker(http: HttpSettings | None = None) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    app = create_app(ToneEngine(), WorkerConfig(http=http or HttpSettings()))
    seen: list[tuple[str, str]] = []
    app.add_middleware(PathCounter, seen=seen)
    with run_server(app) as url:
        yield url, seen


@pytest.mark.parametrize("direct_routes", [True, False])
async def test_the_workers_stream_skips_the_middleware_stack_only_when_direct(direct_routes: bool) -> None:
    with serve_worker(HttpSettings(direct_routes=direct_routes)) as (url, seen):
        result = await stream_tts(url, {"text": TEXT}, headers={"X-Request-Id": "worker-direct"})
        async with httpx.AsyncClient(timeout=30.0) as client:
            assert (await client.get(f"{url}/readyz")).status_code == 200
    assert result.status == 200
    assert result.headers["x-request-id"] == "worker-direct"
    assert result.headers["cache-control"] == "no-store"
    assert result.pcm == render(TEXT)
    assert isinstance(result.frames[-1], EosFrame)
    assert ("GET", "/readyz") in seen
    assert seen.count(STREAM) == (0 if direct_routes else 1), seen


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        ({"Content-Type": "application/json", "Host": "evil.example"}, 403, "forbidden"),
    ],
    ids=["text-plain", "foreign-host"],
)
async def test_the_workers_direct_route_makes_the_request_checks(
    headers: dict[str, str], status: int, code: str
) -> None:
    with serve_worker() as (url, seen):
        async with httpx.AsyncClient(timeout=30.0) as client:
            response = await client.post(f"{url}/v1/tts/stream", content=b'{"text": "hi"}', headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert STREAM not in seen

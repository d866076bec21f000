"""The gateway's direct stream route: past FastAPI's middleware stack, with the same request checks.

Under uvicorn (``serving/server.py``) the connection layer hands ``POST
/v1/tts/stream`` to ``direct_route(app, tts_stream)`` instead of the app's
middleware stack. A real worker and a real gateway on loopback show that the
stream is the worker's, the front door's checks and the key check still
refuse, a client that goes away stops the worker, and the route is really
taken: a counting middleware added to the app never sees the stream's
requests unless ``direct_routes`` is off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import h11
import httpx
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from orpheus_tts.engines.testing import render
from orpheus_tts.gateway.app import create_app
from orpheus_tts.gateway.auth import Authenticator
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.protocol import ChunkFrame, EosFrame, ErrorFrame, FrameDecoder
from orpheus_tts.serving.settings import HttpSettings
from orpheus_tts.worker.app import create_app as create_worker_app
from orpheus_tts.worker.config import WorkerConfig
from tests.eventually import eventually
from tests.routing.engines import CountingToneEngine
from tests.servers import run_server
from tests.streams import StreamResult, stream_tts

TEXT = "The gateway relays every frame. It buffers nothing! Does it fail over? It does."
STREAM = ("POST", "/v1/tts/stream")
KEY = "sk-direct-0123456789"


class PathCounter:
    """A pure ASGI middleware noting each HTTP request that enters the app's middleware stack."""

    def __init__(self, app: ASGIApp, seen: list[tuple[str, str]]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


@dataclass
class Gateway:
    url: str
    app: FastAPI
    seen: list[tuple[str, str]]
    """(method, path) of the requests that went through the middleware stack."""


@contextlib.contextmanager
def serve_gateway(
    worker: str, http: HttpSettings | None = None, authenticator: Authenticator | None = None
) -> Iterator[Gateway]:
    app = create_app(GatewayConfig(workers=(worker,), http=http or HttpSettings()), authenticator)
    seen: list[tuple[str, str]] = []
    app.add_middleware(PathCounter, seen=seen)  # before the server starts: the stack is built on the first call
    with run_server(app) as url:
        yield Gateway(url, app, seen)


@pytest.fixture(scope="module")
def worker() -> Iterator[str]:
    with run_server(create_worker_app(CountingToneEngine(faults=True), WorkerConfig())) as url:
        yield url


@pytest.fixture(scope="module")
def gateway(worker: str) -> Iterator[Gateway]:
    """An open gateway on loopback (no keys: the Host header is checked), direct routes on."""
    with serve_gateway(worker) as gw:
        yield gw


def chunks(result: StreamResult) -> list[tuple[int, bytes]]:
    return [(f.seq, f.pcm) for f in result.frames if isinstance(f, ChunkFrame)]


def worker_inflight(worker: str) -> int:
    return int(httpx.get(f"{worker}/v1/system", timeout=5.0).json()["inflight"])


async def test_the_stream_on_the_direct_route_is_the_workers_stream(worker: str, gateway: Gateway) -> None:
    body = {"text": TEXT, "speed": 1.25}
    direct = await stream_tts(worker, body)
    relayed = await stream_tts(gateway.url, body, headers={"X-Request-Id": "direct-1"})
    assert relayed.status == direct.status == 200
    assert relayed.headers["x-request-id"] == "direct-1"
    assert relayed.headers["cache-control"] == "no-store"
    assert relayed.pcm == direct.pcm == render(TEXT, speed=1.25)
    assert chunks(relayed) == chunks(direct)
    assert isinstance(relayed.frames[-1], EosFrame)
    assert relayed.frames[-1] == direct.frames[-1]
    assert STREAM not in gateway.seen, "the stream went through the middleware stack, not the direct route"


@pytest.mark.parametrize("direct_routes", [True, False])
async def test_the_stream_route_skips_the_middleware_stack_only_when_direct(worker: str, direct_routes: bool) -> None:
    with serve_gateway(worker, HttpSettings(direct_routes=direct_routes)) as gw:
        async with httpx.AsyncClient(timeout=30.0) as client:
            assert (await client.get(f"{gw.url}/readyz")).status_code == 200
        plain = await stream_tts(gw.url, {"text": "Plain path."})
        async with httpx.AsyncClient(timeout=30.0) as client:
            queried = await client.post(f"{gw.url}/v1/tts/stream?trace=1", json={"text": "Queried."})
    assert plain.pcm == render("Plain path.")
    assert queried.status_code == 200
    assert queried.content.splitlines()[-1].startswith(b'{"type":"eos"')
    assert ("GET", "/readyz") in gw.seen
    streams = gw.seen.count(STREAM)
    assert streams == (0 if direct_routes else 2), gw.seen


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        ({"Content-Type": "application/json", "Host": "evil.example"}, 403, "forbidden"),
        ({"Content-Type": "application/json", "Origin": "http://evil.example"}, 403, "forbidden"),
    ],
    ids=["text-plain", "foreign-host", "foreign-origin"],
)
async def test_the_direct_route_makes_the_request_checks(
    gateway: Gateway, headers: dict[str, str], status: int, code: str
) -> None:
    async with httpx.AsyncClient(timeout=30.0) as client:
        response = await client.post(f"{gateway.url}/v1/tts/stream", content=b'{"text": "hi"}', headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code
    assert STREAM not in gateway.seen, "refused by the middleware, not by the direct route"


async def test_the_direct_route_admits_the_gateways_own_origin(gateway: Gateway) -> None:
    origin = gateway.url  # http://127.0.0.1:PORT: the same host and port as the Host header
    result = await stream_tts(gateway.url, {"text": "Same origin."}, headers={"Origin": origin})
    assert result.status == 200
    assert result.pcm == render("Same origin.")


async def test_a_client_gone_mid_stream_stops_the_worker() -> None:
    engine = CountingToneEngine(faults=True)
    with run_server(create_worker_app(engine, WorkerConfig())) as worker, serve_gateway(worker) as gw:
        # The worker goes silent after its first piece: nothing but the disconnect can end the stream.
        body = {"text": TEXT * 4, "fault_stall_after": 1}
        async with httpx.AsyncClient(timeout=30.0) as client:
            async with client.stream("POST", f"{gw.url}/v1/tts/stream", json=body) as response:
                assert response.status_code == 200
                decoder = FrameDecoder()
                async for data in response.aiter_raw():
                    if any(isinstance(frame, ChunkFrame) for frame in decoder.feed(data)):
                        break  # leaving the block unread closes the connection
        assert engine.started == 1
        assert await eventually(lambda: engine.cancelled == 1), "the worker never saw the client go"
        assert await eventually(lambda: worker_inflight(worker) == 0)
        assert await eventually(lambda: gw.app.state.router.snapshots()[0].inflight == 0)
        assert engine.completed == 0
        assert STREAM not in gw.seen


async def test_a_missing_or_wrong_key_on_the_direct_route_is_401_bearer(worker: str) -> None:
    with serve_gateway(worker, authenticator=Authenticator.from_keys([KEY])) as gw:
        async with httpx.AsyncClient(timeout=30.0) as client:
            refused = [
                await client.post(f"{gw.url}/v1/tts/stream", json={"text": "hi"}, headers=headers)
                for headers in ({}, {"Authorization": "Bearer sk-wrong-0000000000"}, {"X-API-Key": "nope"})
            ]
        admitted = await stream_tts(gw.url, {"text": "With a key."}, headers={"Authorization": f"Bearer {KEY}"})
    for response in refused:
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["code"] == "unauthorized"
        assert "x-request-id" in response.headers
    assert admitted.status == 200
    assert admitted.pcm == render("With a key.")
    assert STREAM not in gw.seen


# --------------------------------------------------------------------------- the pushed relay
# After the first audio, the direct route relays from the worker connection's read callbacks
# (``Relay.write_direct``): these are the ends a stream can meet there.


def serve_gateway_config(worker: str, **config: float) -> contextlib.AbstractContextManager[Gateway]:
    @contextlib.contextmanager
    def serve() -> Iterator[Gateway]:
        app = create_app(GatewayConfig(workers=(worker,), **config))  # type: ignore[arg-type]
        with run_server(app) as url:
            yield Gateway(url, app, [])

    return serve()


def last_error(result: StreamResult) -> ErrorFrame:
    frame = result.frames[-1]
    assert isinstance(frame, ErrorFrame), f"the stream ended with {frame!r}, not an error frame"
    return frame


async def test_a_worker_that_goes_silent_mid_stream_ends_as_worker_lost(worker: str) -> None:
    with serve_gateway_config(worker, stall_timeout_s=0.5) as gw:
        result = await stream_tts(gw.url, {"text": TEXT, "fault_stall_after": 2})
        assert await eventually(lambda: gw.app.state.router.snapshots()[0].inflight == 0)
    error = last_error(result)
    assert (error.code, error.retryable) == ("worker_lost", True)
    assert "stall timeout" in error.message
    assert len(chunks(result)) >= 1, "the audio before the silence was relayed"


async def test_the_deadline_passing_mid_stream_ends_the_pushed_stream(worker: str) -> None:
    with serve_gateway_config(worker) as gw:
        result = await stream_tts(gw.url, {"text": TEXT * 3, "timeout_s": 1.0, "fault_piece_delay_ms": 300})
    error = last_error(result)
    assert error.code == "deadline_exceeded"
    assert chunks(result), "the audio before the deadline was relayed"


async def test_an_engine_error_mid_stream_is_relayed_as_the_workers_error_frame(worker: str) -> None:
    with serve_gateway_config(worker) as gw:
        result = await stream_tts(gw.url, {"text": TEXT, "fault_error_after": 2})
    assert last_error(result).code == "engine_error"
    assert len(chunks(result)) == 2


async def test_the_direct_route_over_httpx_iterates_the_relay_and_streams_whole(worker: str) -> None:
    """An upstream that cannot be pushed (httpx's) leaves the relay to the connection's write loop."""
    with serve_gateway_config(worker, upstream_client="httpx") as gw:  # type: ignore[arg-type]
        relayed = await stream_tts(gw.url, {"text": TEXT})
    assert relayed.pcm == render(TEXT)
    assert isinstance(relayed.frames[-1], EosFrame)


async def test_streams_on_one_kept_alive_connection_are_each_whole_http(gateway: Gateway) -> None:
    """Read strictly with h11: the head that leaves with the first chunk, the last batch that leaves with
    the terminating chunk, and nothing after it (a second request on the same connection parses whole)."""
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    conn = h11.Connection(h11.CLIENT)
    try:
        for i in range(2):
            body = json.dumps({"text": f"{TEXT} Number {i}."}).encode()
            headers = [
                ("host", f"{host}:{port}"),
                ("content-type", "application/json"),
                ("content-length", str(len(body))),
            ]
            writer.write(conn.send(h11.Request(method="POST", target="/v1/tts/stream", headers=headers)) or b"")
            writer.write(conn.send(h11.Data(data=body)) or b"")
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            status, data = 0, b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await asyncio.wait_for(reader.read(65536), 10))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    data += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            assert status == 200
            frames = FrameDecoder().feed(data)
            assert isinstance(frames[-1], EosFrame)
            assert b"".join(f.pcm for f in frames if isinstance(f, ChunkFrame)) == render(f"{TEXT} Number {i}.")
            conn.start_next_cycle()  # raises unless both sides are done and the connection stays open
    finally:
        writer.close()

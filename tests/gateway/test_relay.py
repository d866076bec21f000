"""The v1 relay passes the worker's chunk lines on as bytes, and the OpenAI encoders run off the event loop.

The upstream here is a tiny ASGI app, not a worker: only a test server can
send a chunk whose base64 has non-zero padding bits (valid, and decoded to
the same audio, but never what an encoder writes), which tells a relayed
line from a decoded and re-encoded one.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from orpheus_tts.gateway.app import create_app
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.protocol import EosFrame, MetricsFrame, encode_frame
from tests.servers import run_server

# b"\x01\x00" is "AQA=" in base64; "AQB=" decodes to the same two bytes (the last
# character's low bits are dropped), so only a relay that never re-encodes keeps it.
ODD_CHUNK = b'{"type":"chunk","seq":0,"samples":1,"audio":"AQB="}\n'


def upstream_app() -> Starlette:
    async def stream(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield encode_frame(MetricsFrame({"worker": "odd"}))
            yield ODD_CHUNK
            yield encode_frame(EosFrame(samples_total=1, chunks_total=1))

        return StreamingResponse(body(), media_type="application/x-ndjson")

    async def ready(request: Request) -> Response:
        return JSONResponse({"status": "ready"})

    return Starlette(routes=[Route("/v1/tts/stream", stream, methods=["POST"]), Route("/readyz", ready)])


async def test_chunk_lines_are_relayed_byte_for_byte() -> None:
    with run_server(upstream_app()) as worker, run_server(create_app(GatewayConfig(workers=(worker,)))) as gw:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(f"{gw}/v1/tts/stream", json={"text": "hi"})
    assert response.status_code == 200
    lines = response.content.splitlines(keepends=True)
    assert ODD_CHUNK in lines, lines
    assert lines[-1].startswith(b'{"type":"eos"')


async def test_openai_audio_is_encoded_on_the_encoder_pool() -> None:
    app = create_app(GatewayConfig(workers=()))
    state = app.state.gateway
    seen: list[str] = []
    submit = state.encoders.submit

    def spy(fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        def run():  # type: ignore[no-untyped-def]
            seen.append(threading.current_thread().name)
            return fn(*args, **kwargs)

        return submit(run)

    state.encoders.submit = spy
    upstream = upstream_app()
    with run_server(upstream) as worker:
        state.router.add_endpoint(worker)
        with run_server(app) as gw:
            async with httpx.AsyncClient(timeout=30) as client:
                response = await client.post(
                    f"{gw}/v1/audio/speech", json={"model": "tts-1", "input": "hi", "response_format": "wav"}
                )
    assert response.status_code == 200
    assert response.content.startswith(b"RIFF")
    assert seen, "no encoder call ran on the pool"
    assert all(name.startswith("orpheus-encoder") for name in seen)

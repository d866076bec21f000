"""Tiny real ASGI servers for SDK tests: an auth wrapper and an upstream that reports a queue."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from orpheus_tts.engines.testing import render
from orpheus_tts.protocol import ChunkFrame, EosFrame, MetricsFrame, encode_frame, error_body


def require_bearer(app: ASGIApp, key: str) -> ASGIApp:
    """``app`` behind a Bearer-key check that answers a v1 401 like the gateway does."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            if headers.get(b"authorization") != f"Bearer {key}".encode():
                response = JSONResponse(
                    error_body("unauthorized", "missing or invalid API key"),
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await app(scope, receive, send)

    return guarded


class QueueReportingUpstream:
    """A v1 upstream that speaks the tone engine's audio and reports a fixed queue depth."""

    def __init__(self, queue_depth: int) -> None:
        self.queue_depth = queue_depth
        self.hits = 0
        self.app = Starlette(routes=[Route("/v1/tts/stream", self.stream, methods=["POST"])])

    async def stream(self, request: Request) -> Response:
        self.hits += 1
        body: dict[str, Any] = json.loads(await request.body())
        pcm = render(body["text"])
        hints = {"queue_depth": self.queue_depth, "inflight": 1}

        async def frames() -> AsyncIterator[bytes]:
            yield encode_frame(MetricsFrame(hints))
            yield encode_frame(ChunkFrame(seq=0, pcm=pcm))
            yield encode_frame(EosFrame(samples_total=len(pcm) // 2, chunks_total=1))

        return StreamingResponse(
            frames(),
            media_type="application/x-ndjson",
            headers={"X-Queue-Depth": str(self.queue_depth), "X-Inflight": "1"},
        )

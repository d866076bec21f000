"""The worker's ASGI app: ``create_app(engine, config)``; state lives on the app.

Routes: v1 ``POST /v1/tts/stream``, the realtime WebSocket ``/v1/tts/realtime``
(``worker/realtime.py``), ``/v1/voices``, ``/v1/system``, and the shared
``/metrics``, ``/healthz``, ``/readyz`` (``serving/app.py``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response

from orpheus_tts import __version__
from orpheus_tts.aio import Stopped, run_before
from orpheus_tts.engines.base import Engine, supports_timestamps
from orpheus_tts.protocol import (
    HEADER_REQUEST_ID,
    ErrorCode,
    ErrorFrame,
    ServiceError,
    TTSRequest,
    encode_frame,
    parse_request,
)
from orpheus_tts.realtime.websocket import mount_realtime
from orpheus_tts.serving.app import create_server_app
from orpheus_tts.serving.direct import direct_route
from orpheus_tts.serving.errors import error_response
from orpheus_tts.serving.metrics import EngineCounters, ServiceMetrics
from orpheus_tts.serving.prestream import read_parsed, refuse
from orpheus_tts.serving.routes import TTS_STREAM_PATH, TTS_STREAM_ROUTE, request_id_of
from orpheus_tts.serving.shutdown import GraceCut, cut_short
from orpheus_tts.serving.streaming import FinalPiece, PreparedStream, PreparedStreamResponse
from orpheus_tts.worker.config import WorkerConfig
from orpheus_tts.worker.realtime import worker_backend
from orpheus_tts.worker.service import SynthesisService

__all__ = ["create_app"]

_SHUT_DOWN_FRAME = FinalPiece(
    encode_frame(ErrorFrame(ErrorCode.CANCELLED.value, "the worker shut down during the stream", retryable=True))
)


async def _until_cut(preparing: Awaitable[PreparedStream], grace: GraceCut) -> PreparedStream:
    """``preparing``, unless the drain grace runs out first (503, retryable); the stream it
    becomes ends with a ``cancelled`` frame (retryable) if the grace runs out while it plays."""
    if grace.closing:
        raise ServiceError(ErrorCode.OVERLOADED, "the worker is shutting down", retry_after_s=1)
    try:
        prepared = await run_before(preparing, math.inf, grace.future())
    except Stopped:
        raise ServiceError(
            ErrorCode.OVERLOADED, "the worker shut down before the first audio", retry_after_s=1
        ) from None
    return dataclasses.replace(prepared, body=cut_short(prepared.body, grace.future(), _SHUT_DOWN_FRAME))


def create_app(engine: Engine, config: WorkerConfig | None = None) -> FastAPI:
    """A worker serving protocol v1 in front of ``engine``."""
    config = config or WorkerConfig()
    metrics = ServiceMetrics("worker")
    metrics.registry.register(EngineCounters(engine))
    service = SynthesisService(engine, config, metrics)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            await engine.close()

    app = create_server_app(
        title="Orpheus TTS worker",
        lifespan=lifespan,
        readiness=_readiness,
        render_metrics=lambda app: metrics.render(),
        http=config.http,
    )
    app.state.ready = False
    app.state.service = service
    app.state.metrics = metrics
    grace = GraceCut()
    app.state.begin_shutdown = lambda: grace.begin(config.drain_grace_s)

    def parse(body: bytes) -> TTSRequest:
        tts_request = parse_request(body, max_text_chars=config.max_text_chars, max_json_depth=config.max_json_depth)
        service.validate(tts_request)
        return tts_request

    @app.post(TTS_STREAM_PATH, **TTS_STREAM_ROUTE)
    async def tts_stream(request: Request) -> Response:
        """Synthesize speech; the body streams NDJSON frames (protocol v1)."""
        request_id = request_id_of(request)
        id_header = {HEADER_REQUEST_ID: request_id}
        try:
            tts_request = await read_parsed(request, config.max_body_bytes, parse)
        except ServiceError as exc:
            return refuse(metrics, exc, id_header)
        if not app.state.ready:
            return error_response(ServiceError(ErrorCode.OVERLOADED, "engine is not loaded yet", retry_after_s=1))

        async def prepare() -> PreparedStream:
            return await _until_cut(service.prepare(tts_request), grace)

        return PreparedStreamResponse(prepare, headers=id_header)

    # Its hottest route, past FastAPI's middleware stack under our own server (``serving/direct.py``).
    app.state.direct_routes[TTS_STREAM_PATH.encode("ascii")] = direct_route(app, tts_stream)

    ready = lambda: bool(app.state.ready)  # noqa: E731
    mount_realtime(app, worker_backend(service, config.realtime, ready, config.http.allow_origins))

    @app.get("/v1/voices")
    async def voices() -> JSONResponse:
        """The voices this worker's engine offers."""
        return JSONResponse(
            {
                "engine": engine.name,
                "default": engine.catalog.default,
                "voices": engine.catalog.listing(),
                "parameters": [spec.to_json() for spec in engine.param_specs()],
                "capabilities": {"timestamps": supports_timestamps(engine)},
            }
        )

    @app.get("/v1/system")
    async def system() -> JSONResponse:
        """A snapshot of this worker: engine, capacity, load, uptime."""
        scheduler = service.scheduler
        return JSONResponse(
            {
                "version": __version__,
                "role": "worker",
                "worker": config.worker_id,
                "engine": engine.name,
                "ready": bool(app.state.ready),
                "capacity": scheduler.capacity,
                "scheduler": scheduler.name,
                "stream_capacity": scheduler.stream_capacity,
                "inflight": scheduler.running,
                "queue_depth": scheduler.waiting,
                "max_queue": scheduler.max_queue,
                "uptime_s": round(time.time() - started, 3),
                "limits": {
                    "default_timeout_s": config.default_timeout_s,
                    "max_timeout_s": config.max_timeout_s,
                    "max_text_chars": config.max_text_chars,
                    "max_body_bytes": config.max_body_bytes,
                    "max_json_depth": config.max_json_depth,
                },
            }
        )

    return app


def _readiness(app: FastAPI) -> tuple[bool, dict[str, Any]]:
    """Ready once the engine is loaded."""
    if app.state.ready:
        return True, {"status": "ready"}
    return False, {"status": "loading"}

"""The worker's ASGI app: ``create_app(engine, config)``; state lives on the app."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response

from orpheus_tts import __version__
from orpheus_tts.engines.base import Engine
from orpheus_tts.protocol import HEADER_REQUEST_ID, ErrorCode, ServiceError, parse_request
from orpheus_tts.serving.body import read_body_capped
from orpheus_tts.serving.errors import error_response, install_error_handlers
from orpheus_tts.serving.metrics import CONTENT_TYPE_LATEST, EngineCounters, ServiceMetrics
from orpheus_tts.serving.routes import TTS_STREAM_ROUTE, request_id_of
from orpheus_tts.serving.streaming import PreparedStream, PreparedStreamResponse
from orpheus_tts.worker.config import WorkerConfig
from orpheus_tts.worker.service import SynthesisService

__all__ = ["create_app"]


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

    app = FastAPI(title="Orpheus TTS worker", version=__version__, lifespan=lifespan)
    app.state.ready = False
    app.state.service = service
    app.state.metrics = metrics
    install_error_handlers(app)

    @app.post("/v1/tts/stream", **TTS_STREAM_ROUTE)
    async def tts_stream(request: Request) -> Response:
        """Synthesize speech; the body streams NDJSON frames (protocol v1)."""
        request_id = request_id_of(request)
        id_header = {HEADER_REQUEST_ID: request_id}
        try:
            body = await read_body_capped(request, config.max_body_bytes)
            tts_request = parse_request(body, max_text_chars=config.max_text_chars)
            service.validate(tts_request)
        except ServiceError as exc:
            metrics.outcome(exc.code.value)
            return error_response(exc, id_header)
        if not app.state.ready:
            return error_response(ServiceError(ErrorCode.OVERLOADED, "engine is not loaded yet", retry_after_s=1))

        async def prepare() -> PreparedStream:
            return await service.prepare(tts_request)

        return PreparedStreamResponse(prepare, headers=id_header)

    @app.get("/v1/voices")
    async def voices() -> JSONResponse:
        """The voices this worker's engine offers."""
        return JSONResponse(
            {
                "engine": engine.name,
                "default": engine.catalog.default,
                "voices": engine.catalog.listing(),
                "parameters": [spec.to_json() for spec in engine.param_specs()],
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
                },
            }
        )

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """200 while the process lives."""
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """200 once the engine is loaded, else 503."""
        if app.state.ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "loading"}, status_code=503)

    return app

"""The gateway's ASGI app: ``create_app(config, authenticator)``; state lives on the app.

Routes: v1 ``POST /v1/tts/stream`` (frames relayed as they arrive), OpenAI's
``POST /v1/audio/speech``, ``/v1/voices``, ``/v1/system``, ``/metrics``,
``/healthz``, ``/readyz``, and the web playground at ``/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import httpx
from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response

from orpheus_tts import __version__
from orpheus_tts.gateway.auth import Authenticator, Identity, Lease
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.gateway.metrics import GatewayMetrics
from orpheus_tts.gateway.openai_speech import (
    SpeechRequest,
    openai_error_body,
    openai_error_response,
    parse_speech_request,
    pcm_from_frames,
    speech_stream,
    to_tts_request,
)
from orpheus_tts.gateway.playground import add_playground_routes
from orpheus_tts.gateway.service import GatewayService, UpstreamStream
from orpheus_tts.protocol import (
    AUDIO_FORMAT,
    HEADER_AUDIO_FORMAT,
    HEADER_REQUEST_ID,
    NDJSON_MEDIA_TYPE,
    ChunkFrame,
    ErrorCode,
    Frame,
    ServiceError,
    TTSRequest,
    encode_frame,
    parse_request,
)
from orpheus_tts.routing import Endpoint, EndpointSnapshot, Router, RoutingSettings
from orpheus_tts.serving.body import read_body_capped
from orpheus_tts.serving.errors import error_response, install_error_handlers
from orpheus_tts.serving.metrics import CONTENT_TYPE_LATEST
from orpheus_tts.serving.routes import TTS_STREAM_ROUTE, json_body_route, request_id_of
from orpheus_tts.serving.streaming import PreparedStream, PreparedStreamResponse

__all__ = ["create_app"]


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` substituted for their ``$ref``s: embedded in an OpenAPI
    request body, a ``#/$defs/…`` reference would not resolve from the document's root."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result


SPEECH_SCHEMA: dict[str, Any] = _inline_refs(SpeechRequest.model_json_schema())


class _Draining:
    """Counts running streams so shutdown can wait for them."""

    def __init__(self) -> None:
        self.active = 0
        self.closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.active += 1
        self._idle.clear()

    def leave(self) -> None:
        self.active -= 1
        if not self.active:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=timeout_s)


def create_app(
    config: GatewayConfig,
    authenticator: Authenticator | None = None,
    routing: RoutingSettings | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """A gateway in front of ``config.workers``; no keys in ``authenticator`` means open access."""
    metrics = GatewayMetrics()
    auth = authenticator if authenticator is not None else Authenticator.from_keys([])
    auth.on_failure = lambda reason: metrics.auth_failures.labels(reason).inc()
    settings = routing or RoutingSettings(
        hedge_ttfb_ms=config.hedge_ttfb_ms,
        max_attempts=config.max_attempts,
        max_connections=config.upstream_connections,
        max_keepalive_connections=config.upstream_connections,
    )
    router = Router(_upstreams(config, settings, transport), settings, on_event=metrics.on_event)
    service = GatewayService(router, config, metrics)
    draining = _Draining()
    started = time.time()
    worker_info: dict[str, dict[str, Any]] = {}
    """Each worker's own report (engine, capacity, queue) from its last ``/v1/system`` probe."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await _refresh(router, worker_info)
        probes = asyncio.ensure_future(_probe_forever(router, worker_info, config.probe_interval_s))
        try:
            yield
        finally:
            draining.closing = True
            await draining.wait_idle(config.drain_grace_s)
            probes.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probes
            await router.aclose()

    app = FastAPI(title="Orpheus TTS gateway", version=__version__, lifespan=lifespan)
    app.state.router = router
    app.state.metrics = metrics
    app.state.service = service
    install_error_handlers(app)

    async def admit(request: Request) -> Identity:
        """Authenticate and check the gateway is taking work; raises ServiceError."""
        if draining.closing:
            raise ServiceError(ErrorCode.OVERLOADED, "the gateway is shutting down", retry_after_s=1)
        return auth.authenticate(request.headers)

    @app.post("/v1/tts/stream", **TTS_STREAM_ROUTE)
    async def tts_stream(request: Request) -> Response:
        """Synthesize speech through the workers; NDJSON frames (protocol v1)."""
        request_id = request_id_of(request)
        id_header = {HEADER_REQUEST_ID: request_id}
        try:
            identity = await admit(request)
            body = await read_body_capped(request, config.max_body_bytes)
            tts_request = parse_request(body, max_text_chars=config.max_text_chars)
        except ServiceError as exc:
            metrics.outcome(exc.code.value)
            extra = {"WWW-Authenticate": "Bearer"} if exc.code is ErrorCode.UNAUTHORIZED else {}
            return error_response(exc, {**id_header, **extra})

        async def prepare() -> PreparedStream:
            upstream, lease = await _open(identity, tts_request, request_id)
            return PreparedStream(
                body=_relay(upstream, lease, encode_frame),
                media_type=NDJSON_MEDIA_TYPE,
                headers={HEADER_AUDIO_FORMAT: AUDIO_FORMAT, **upstream.hints},
            )

        return PreparedStreamResponse(prepare, headers=id_header)

    async def _open(identity: Identity, tts_request: TTSRequest, request_id: str) -> tuple[UpstreamStream, Lease]:
        """Take a slot of the key's quota (429, counted, when spent), then the upstream's first audio."""
        try:
            lease = auth.acquire(identity)
        except ServiceError as exc:
            metrics.outcome(exc.code.value)
            raise
        try:
            return await service.open(tts_request, request_id), lease
        except BaseException:
            lease.release()
            raise

    def _relay(upstream: UpstreamStream, lease: Lease, render: Callable[[Frame], T]) -> _Relay[T]:
        return _Relay(upstream, lease, render, service, draining)

    @app.post(
        "/v1/audio/speech",
        **json_body_route(
            SPEECH_SCHEMA, {"audio/mpeg": {}, "text/event-stream": {}}, "Encoded audio, or SSE events, as it streams"
        ),
    )
    async def audio_speech(request: Request) -> Response:
        """OpenAI-compatible speech: encoded audio (or SSE events) streamed as it is synthesized."""
        request_id = request_id_of(request)
        try:
            identity = await admit(request)
            body = await read_body_capped(request, config.max_body_bytes)
            speech = parse_speech_request(body, max_text_chars=config.max_text_chars)
            tts_request = to_tts_request(speech)
        except ServiceError as exc:
            metrics.outcome(exc.code.value)
            return openai_error_response(exc, {HEADER_REQUEST_ID: request_id})

        async def prepare() -> PreparedStream:
            upstream, lease = await _open(identity, tts_request, request_id)
            return speech_stream(speech, pcm_from_frames(_relay(upstream, lease, _same)))

        return PreparedStreamResponse(prepare, headers={HEADER_REQUEST_ID: request_id}, error_body=openai_error_body)

    @app.get("/v1/voices")
    async def voices() -> JSONResponse:
        """The union of the voices the healthy workers offer."""
        merged: dict[str, dict[str, Any]] = {}
        engines: set[str] = set()
        parameters: dict[str, Any] = {}
        default = None
        for listing in (await _fetch_json(router, "/v1/voices")).values():
            engines.add(str(listing.get("engine")))
            default = default or listing.get("default")
            for voice in listing.get("voices", []):
                merged.setdefault(voice["id"], voice)
            for param in listing.get("parameters", []):
                parameters.setdefault(param["name"], param)
        return JSONResponse(
            {
                "engine": ",".join(sorted(engines)),
                "default": default,
                "voices": list(merged.values()),
                "parameters": list(parameters.values()),
            }
        )

    @app.get("/v1/system")
    async def system() -> JSONResponse:
        """The gateway and every worker: health, circuit, latency, load, capacity."""
        workers = [{**_snapshot_json(s), **worker_info.get(s.url, {})} for s in router.snapshots()]
        return JSONResponse(
            {
                "version": __version__,
                "role": "gateway",
                "uptime_s": round(time.time() - started, 3),
                "auth": "keys" if auth.enabled else "open",
                "hedge_ttfb_ms": settings.hedge_ttfb_ms,
                "active_streams": draining.active,
                "workers": workers,
                "totals": {
                    "workers": len(workers),
                    "healthy": sum(1 for w in workers if w.get("healthy")),
                    "capacity": sum(int(w.get("capacity") or 0) for w in workers if w.get("healthy")),
                    "inflight": sum(int(w.get("inflight") or 0) for w in workers),
                    "queue_depth": sum(int(w.get("queue_depth") or 0) for w in workers),
                },
                **config.extra,
            }
        )

    add_playground_routes(app)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition."""
        metrics.refresh(router)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """200 while the process lives."""
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """200 when at least one worker is healthy and the gateway is not draining."""
        healthy = sum(1 for s in router.snapshots() if s.healthy)
        if healthy and not draining.closing:
            return JSONResponse({"status": "ready", "healthy_workers": healthy})
        return JSONResponse({"status": "unavailable", "healthy_workers": healthy}, status_code=503)

    return app


WORKER_FIELDS = ("engine", "capacity", "queue_depth", "max_queue", "worker")
"""What the gateway keeps from each worker's ``/v1/system``."""


async def _refresh(router: Router, worker_info: dict[str, dict[str, Any]]) -> None:
    """Health-probe every worker and keep what each reports of itself."""
    await router.probe_all()
    reports = await _fetch_json(router, "/v1/system")
    worker_info.clear()
    for url, report in reports.items():
        worker_info[url] = {k: report[k] for k in WORKER_FIELDS if k in report}


async def _probe_forever(router: Router, worker_info: dict[str, dict[str, Any]], interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        with contextlib.suppress(Exception):
            await _refresh(router, worker_info)


T = TypeVar("T")


def _same(frame: Frame) -> Frame:
    return frame


class _Relay(Generic[T]):
    """One upstream stream's frames (rendered by ``render``), its bookkeeping done exactly once.

    A class rather than an async generator: a generator that is closed before it
    starts skips its ``finally``, and the lease, the draining count and the
    upstream connection must be released however the response ends.
    """

    def __init__(
        self,
        upstream: UpstreamStream,
        lease: Lease,
        render: Callable[[Frame], T],
        service: GatewayService,
        draining: _Draining,
    ) -> None:
        self._upstream = upstream
        self._frames = upstream.frames()
        self._lease = lease
        self._render = render
        self._service = service
        self._draining = draining
        self._samples = 0
        self._closed = False
        draining.enter()

    def __aiter__(self) -> _Relay[T]:
        return self

    async def __anext__(self) -> T:
        try:
            frame = await self._frames.__anext__()
        except BaseException:
            await self.aclose()
            raise
        if isinstance(frame, ChunkFrame):
            self._samples += frame.samples
        return self._render(frame)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            aclose = getattr(self._frames, "aclose", None)
            if aclose is not None:
                await aclose()
            await self._upstream.close()
        finally:
            self._service.note_finished(self._upstream, self._samples)
            self._lease.release()
            self._draining.leave()


def _upstreams(
    config: GatewayConfig, settings: RoutingSettings, transport: httpx.AsyncBaseTransport | None
) -> list[Endpoint]:
    """One endpoint per worker. By default their connections go through aiohttp's pool:
    httpx's own pool scans every pooled connection on each request, which costs the
    gateway about 5x more CPU per stream at 128 concurrent streams (bench/gateway.py)."""
    if transport is not None:
        return [Endpoint(url, settings, transport=transport) for url in config.workers]
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(
        max_connections=settings.max_connections,
        max_keepalive_connections=settings.max_keepalive_connections,
        keepalive_expiry=settings.keepalive_expiry_s,
    )
    return [Endpoint(url, settings, transport=AiohttpTransport(limits=limits)) for url in config.workers]


def _snapshot_json(snapshot: EndpointSnapshot) -> dict[str, Any]:
    data = dataclasses.asdict(snapshot)
    data["breaker"] = snapshot.breaker.value
    return data


async def _fetch_json(router: Router, path: str) -> dict[str, dict[str, Any]]:
    """``GET path`` from every healthy worker at once, by worker URL; failures are skipped."""

    async def one(endpoint: Endpoint) -> dict[str, Any] | None:
        try:
            response = await endpoint.client.get(endpoint.url + path, timeout=router.settings.probe_timeout_s)
            data = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    endpoints = [e for e in router.endpoints if e.healthy]
    results = await asyncio.gather(*(one(e) for e in endpoints))
    return {e.url: r for e, r in zip(endpoints, results, strict=True) if r is not None}

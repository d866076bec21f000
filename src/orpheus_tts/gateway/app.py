"""The gateway's ASGI app: ``create_app(config, authenticator)``; state lives on the app.

Routes: v1 ``POST /v1/tts/stream`` (frames relayed as they arrive), OpenAI's
``POST /v1/audio/speech``, ``/v1/voices``, ``/v1/system`` (``gateway/routes.py``),
OpenAI's ``/v1/models`` (``gateway/openai_models.py``),
``/metrics``, ``/healthz``, ``/readyz`` (the shared skeleton,
``serving/app.py``), the realtime WebSocket ``/v1/tts/realtime``
(``gateway/realtime.py``), and the web playground at ``/``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request

from orpheus_tts.gateway.auth import Authenticator
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.gateway.openai_models import add_model_routes
from orpheus_tts.gateway.openai_speech import openai_error_body
from orpheus_tts.gateway.playground import add_playground_routes
from orpheus_tts.gateway.realtime import gateway_backend
from orpheus_tts.gateway.routes import OPENAI_SPEECH_PATH, TTS_STREAM_PATH, add_gateway_routes, tts_stream
from orpheus_tts.gateway.state import GatewayState, build_state
from orpheus_tts.protocol import ServiceError
from orpheus_tts.realtime.websocket import mount_realtime
from orpheus_tts.routing import RoutingSettings
from orpheus_tts.serving.app import create_server_app
from orpheus_tts.serving.direct import direct_route

__all__ = ["create_app"]


def create_app(
    config: GatewayConfig,
    authenticator: Authenticator | None = None,
    routing: RoutingSettings | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """A gateway in front of ``config.workers``; no keys in ``authenticator`` means open access."""
    state = build_state(config, authenticator, routing, transport)
    app = create_server_app(
        title="Orpheus TTS gateway",
        lifespan=_lifespan,
        readiness=_readiness,
        render_metrics=_render_metrics,
        http=config.http,
        is_open=lambda: not state.auth.enabled,
        protect=lambda request: _require_key(state, request),
        error_body=_error_body,
    )
    app.state.gateway = state
    app.state.router = state.router
    app.state.metrics = state.metrics
    app.state.service = state.service
    app.state.begin_shutdown = lambda: state.draining.begin_shutdown(config.drain_grace_s)
    add_gateway_routes(app)
    app.state.direct_routes[TTS_STREAM_PATH.encode("ascii")] = direct_route(app, tts_stream)
    add_model_routes(app)
    mount_realtime(app, gateway_backend(state))
    add_playground_routes(app)
    return app


def _gateway(app: FastAPI) -> GatewayState:
    state: GatewayState = app.state.gateway
    return state


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = _gateway(app)
    tasks = []
    if state.discovery is not None:
        await state.discovery.refresh()
        tasks.append(asyncio.ensure_future(state.discovery.run_forever()))
    await state.reports.refresh()
    tasks.append(asyncio.ensure_future(state.reports.refresh_forever(state.config.probe_interval_s)))
    try:
        yield
    finally:
        state.draining.closing = True
        await state.draining.wait_idle(state.config.drain_grace_s)
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await state.router.aclose()
        await state.quotas.aclose()
        if state.discovery is not None:
            await state.discovery.aclose()
        state.encoders.shutdown(wait=False, cancel_futures=True)


def _readiness(app: FastAPI) -> tuple[bool, dict[str, Any]]:
    """Ready when at least one worker is healthy and the gateway is not draining."""
    state = _gateway(app)
    healthy = sum(1 for s in state.router.snapshots() if s.healthy)
    if healthy and not state.draining.closing:
        return True, {"status": "ready", "healthy_workers": healthy}
    return False, {"status": "unavailable", "healthy_workers": healthy}


def _require_key(state: GatewayState, request: Request) -> None:
    """With keys configured, ``/metrics`` on the main port needs one (it names the workers)."""
    state.auth.authenticate(request.headers)


def _error_body(path: str, error: ServiceError) -> dict[str, Any]:
    """Refusals in the shape the route speaks: OpenAI's on its speech route, ours elsewhere."""
    return openai_error_body(error) if path == OPENAI_SPEECH_PATH else error.body()


def _render_metrics(app: FastAPI) -> bytes:
    state = _gateway(app)
    state.metrics.refresh(state.router)
    return state.metrics.render()

"""The skeleton both servers are built on: one FastAPI app with the shared routes and checks.

:func:`create_server_app` gives the worker and the gateway the same error
handlers (every failure is JSON with a code and a message), the same request
checks (:class:`~orpheus_tts.serving.frontdoor.FrontDoor`: metrics listener,
``Host``, ``Origin``, content type) and the same operational routes:
``/healthz`` (the process lives), ``/readyz`` (the server's own readiness
test) and ``/metrics`` (Prometheus text; ``protect`` may demand a key for it
on the main port). API docs (``/docs``, ``/redoc``) exist only when
``HttpSettings.api_docs`` is on. Each server adds its own routes and keeps its
state on ``app.state``; the settings are on ``app.state.http``, where the
HTTP server (``serving/server.py``) reads them too.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response

from orpheus_tts import __version__
from orpheus_tts.protocol import ServiceError
from orpheus_tts.serving.errors import install_error_handlers
from orpheus_tts.serving.frontdoor import FrontDoor
from orpheus_tts.serving.metrics import CONTENT_TYPE_LATEST
from orpheus_tts.serving.settings import HttpSettings

__all__ = ["Readiness", "create_server_app"]

Readiness = Callable[[FastAPI], tuple[bool, dict[str, Any]]]
"""``(ready, body)`` for ``/readyz``: 200 with ``body`` when ready, else 503."""


def _protocol_error_body(path: str, error: ServiceError) -> dict[str, Any]:
    return error.body()


def create_server_app(
    *,
    title: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    readiness: Readiness,
    render_metrics: Callable[[FastAPI], bytes],
    http: HttpSettings,
    is_open: Callable[[], bool] = lambda: True,
    protect: Callable[[Request], None] | None = None,
    error_body: Callable[[str, ServiceError], dict[str, Any]] = _protocol_error_body,
) -> FastAPI:
    """A FastAPI app with the shared error handlers, request checks and operational routes.

    ``is_open()``: the server has no keys. ``protect(request)`` raises a
    ServiceError to refuse ``/metrics`` on the main port. ``error_body`` renders
    the request checks' refusals.
    """
    docs = http.api_docs
    app = FastAPI(
        title=title,
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    app.state.http = http
    install_error_handlers(app)
    app.add_middleware(FrontDoor, settings=http, is_open=is_open, error_body=error_body)
    # The same checks, for the direct routes that bypass the middleware stack (``serving/direct.py``).
    app.state.front_door = FrontDoor(app.router, settings=http, is_open=is_open, error_body=error_body)
    app.state.direct_routes = {}

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """200 while the process lives."""
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """200 when the server takes work, else 503."""
        ready, body = readiness(app)
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus text exposition."""
        if protect is not None and http.metrics_port is None:
            protect(request)
        return Response(render_metrics(app), media_type=CONTENT_TYPE_LATEST)

    return app

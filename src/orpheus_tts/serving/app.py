"""The skeleton both servers are built on: one FastAPI app with the shared routes.

:func:`create_server_app` gives the worker and the gateway the same error
handlers (every failure is JSON with a code and a message) and the same
operational routes: ``/healthz`` (the process lives), ``/readyz`` (the
server's own readiness test) and ``/metrics`` (Prometheus text). Each server
adds its own routes and keeps its state on ``app.state``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI
from starlette.responses import JSONResponse, Response

from orpheus_tts import __version__
from orpheus_tts.serving.errors import install_error_handlers
from orpheus_tts.serving.metrics import CONTENT_TYPE_LATEST

__all__ = ["Readiness", "create_server_app"]

Readiness = Callable[[FastAPI], tuple[bool, dict[str, Any]]]
"""``(ready, body)`` for ``/readyz``: 200 with ``body`` when ready, else 503."""


def create_server_app(
    *,
    title: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    readiness: Readiness,
    render_metrics: Callable[[FastAPI], bytes],
) -> FastAPI:
    """A FastAPI app with the shared error handlers and operational routes."""
    app = FastAPI(title=title, version=__version__, lifespan=lifespan)
    install_error_handlers(app)

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
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition."""
        return Response(render_metrics(app), media_type=CONTENT_TYPE_LATEST)

    return app

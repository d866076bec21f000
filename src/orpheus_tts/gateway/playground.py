"""The web playground: ``/`` serves a page that speaks through ``POST /v1/tts/stream``.

Plain HTML, CSS and JavaScript shipped as package data in ``gateway/static/``:
no build step, nothing fetched from another origin. The page reads the voice
list from ``GET /v1/voices``, plays the audio while it streams and keeps the
API key in the browser's ``localStorage`` only.
"""

from __future__ import annotations

import os
from os import PathLike
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = ["PLAYGROUND_CSP", "STATIC_DIR", "add_playground_routes"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""Where the page's files are installed (package data)."""

PLAYGROUND_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; media-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The page runs only its own script and talks only to its own origin: a key kept in
``localStorage`` cannot be sent elsewhere by injected markup."""

_PAGE_HEADERS = {
    "Content-Security-Policy": PLAYGROUND_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def add_playground_routes(app: Starlette) -> None:
    """Serve the playground: ``GET /`` is the page, ``/static/*`` its script and style sheet."""
    index = STATIC_DIR / "index.html"

    async def playground(request: Request) -> Response:
        return FileResponse(index, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    app.add_route("/", playground, methods=["GET", "HEAD"], name="playground", include_in_schema=False)
    app.mount("/static", _NoCacheStatic(directory=STATIC_DIR), name="playground-static")


class _NoCacheStatic(StaticFiles):
    """Static files revalidated on every load, so an upgraded server never runs an old script."""

    def file_response(
        self, full_path: PathLike[str] | str, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

"""Direct routes: one route's requests answered past the framework's middleware stack and router.

A server's hottest route (a stream) pays, per request, for every layer of
FastAPI and Starlette it passes: the error middleware (which wraps every
``send``), the request checks, the exception middleware, the router's
matching, FastAPI's endpoint machinery. :func:`direct_route` builds an ASGI
app that makes the same request checks
(:class:`~orpheus_tts.serving.frontdoor.FrontDoor`'s) and calls the route's
endpoint itself; the connection layer (``serving/connections.py``) hands it
that path's POSTs. The route stays registered with FastAPI too, so the API
docs describe it and any other ASGI server reaches it the usual way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from orpheus_tts.serving.frontdoor import FrontDoor

__all__ = ["direct_route"]

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Awaitable[Response]]


def direct_route(app: FastAPI, endpoint: Endpoint) -> ASGIApp:
    """An ASGI app answering requests with ``endpoint``, after the app's request checks.

    ``app.state.front_door`` holds the checks (``create_server_app`` puts them there).
    """
    front_door: FrontDoor = app.state.front_door

    async def direct(scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = app  # what Starlette's own entry point sets, and ``Request.app`` reads
        refused = front_door.check(scope)
        if refused is not None:
            await front_door.refuse(scope, send, refused)
            return
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except Exception as exc:  # answered as the app's own exception handlers answer it
            response = await _handler_for(app, exc)(request, exc)
        await response(scope, receive, send)

    return direct


def _handler_for(app: FastAPI, exc: Exception) -> Handler:
    """The app's handler for ``exc``'s nearest class (``install_error_handlers`` covers ``Exception``)."""
    for cls in type(exc).__mro__:
        handler = app.exception_handlers.get(cls)
        if handler is not None:
            return cast(Handler, handler)
    raise exc

"""Request checks before any route runs: who may drive the server from a browser, and how.

A pure ASGI middleware (one pass over the request headers, nothing on the
response path). In order:

1. **The metrics listener.** With ``metrics_port`` set, that port answers only
   ``/metrics`` (and ``/healthz``), and the main port does not answer ``/metrics``.
2. **Host** (when the server is open, i.e. has no keys, and listens on
   loopback): the ``Host`` header must name the address the connection reached
   (``127.0.0.1``, ``[::1]``), ``localhost``, or one of ``allow_hosts``. A
   page on another site whose name was rebound to 127.0.0.1 sends its own
   name, and is refused: 403 ``forbidden``.
3. **Origin**: a browser's ``Origin`` must be the server's own (the same host
   and port as ``Host``) or one of ``allow_origins``; a request without one (a
   program, not a page) passes. Otherwise 403 ``forbidden``.
4. **Content type**: ``POST`` bodies must be ``application/json``; anything
   else (a form a foreign page may submit without asking) is 415
   ``unsupported_media_type``.

Refusals are JSON error bodies; ``error_body`` picks the shape per path (the
OpenAI route answers in OpenAI's).
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from orpheus_tts.protocol import ErrorCode, ServiceError
from orpheus_tts.serving.settings import HttpSettings

__all__ = ["METRICS_PORT_PATHS", "FrontDoor", "is_loopback_address"]

METRICS_PORT_PATHS = frozenset({"/metrics", "/healthz"})
"""What the metrics listener answers."""

_JSON = b"application/json"


@functools.lru_cache(maxsize=256)
def is_loopback_address(address: str) -> bool:
    """Whether ``address`` (an IP literal) is a loopback address (remembered: every request asks)."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """The name of a ``Host`` header, without its port (``[::1]:8000`` -> ``::1``)."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, _, port = host.rpartition(":")
    return name if name and port.isdigit() else host


class FrontDoor:
    """The checks of the module docstring around ``app``.

    ``is_open()`` says whether the server has no keys (then ``Host`` is checked);
    ``error_body(path, error)`` renders a refusal.
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: HttpSettings,
        is_open: Callable[[], bool],
        error_body: Callable[[str, ServiceError], dict[str, Any]],
    ) -> None:
        self.app = app
        self.settings = settings
        self.is_open = is_open
        self.error_body = error_body
        self._any_origin = "*" in settings.allow_origins
        self._origins = frozenset(o.lower().rstrip("/") for o in settings.allow_origins)
        self._hosts = frozenset(h.lower() for h in settings.allow_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            error = self.check(scope)
            if error is not None:
                await self.refuse(scope, send, error)
                return
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> ServiceError | None:
        """The refusal an HTTP request's scope earns, or ``None`` when it may go on."""
        server = scope.get("server")
        path: str = scope["path"]
        metrics_port = self.settings.metrics_port
        if metrics_port is not None and server is not None:
            on_metrics_port = server[1] == metrics_port
            if on_metrics_port != (path == "/metrics") and not (on_metrics_port and path in METRICS_PORT_PATHS):
                return ServiceError(ErrorCode.NOT_FOUND, "Not Found")
        host = origin = content_type = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
            elif name == b"content-type":
                content_type = value
        if server is not None and self.is_open() and is_loopback_address(server[0]):
            refused = self._check_host(host, server[0])
            if refused is not None:
                return refused
        if origin is not None and not self._any_origin:
            refused = self._check_origin(origin, host)
            if refused is not None:
                return refused
        if scope["method"] == "POST" and (
            content_type is None or content_type.partition(b";")[0].strip().lower() != _JSON
        ):
            return ServiceError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "the request body must be application/json")
        return None

    def _check_host(self, host: bytes | None, address: str) -> ServiceError | None:
        if host is None:
            return ServiceError(ErrorCode.INVALID_REQUEST, "the request has no Host header")
        name = _host_name(host.decode("latin-1")).lower()
        if name in ("localhost", address) or name in self._hosts or is_loopback_address(name):
            return None
        return ServiceError(
            ErrorCode.FORBIDDEN, f"Host {name!r} is not this server's address (allow it with --allow-host)"
        )

    def _check_origin(self, origin: bytes, host: bytes | None) -> ServiceError | None:
        text = origin.decode("latin-1").lower().rstrip("/")
        if text in self._origins:
            return None
        _, sep, netloc = text.partition("://")
        if sep and host is not None and netloc == host.decode("latin-1").lower():
            return None
        return ServiceError(
            ErrorCode.FORBIDDEN, f"requests from origin {text!r} are not allowed (allow it with --allow-origin)"
        )

    async def refuse(self, scope: Scope, send: Send, error: ServiceError) -> None:
        body = json.dumps(self.error_body(scope["path"], error)).encode("utf-8")
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("ascii"))]
        await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

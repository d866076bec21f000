"""HTTP settings both servers share: the front door's limits, timeouts and policies.

One frozen value built at the edge (CLI flags, ``ORPHEUS_*`` variables) and
given to the app (``WorkerConfig.http``, ``GatewayConfig.http``) and to the
HTTP server (:func:`orpheus_tts.serving.server.uvicorn_config`), so the app's
checks and the connection limits come from the same place.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_BODY_IDLE_TIMEOUT_S",
    "DEFAULT_BODY_TIMEOUT_S",
    "DEFAULT_HEADER_TIMEOUT_S",
    "DEFAULT_KEEPALIVE_TIMEOUT_S",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_HEADER_LINE_BYTES",
    "HttpSettings",
]

DEFAULT_MAX_HEADER_LINE_BYTES = 8 * 1024
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_IDLE_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_KEEPALIVE_TIMEOUT_S = 5.0
DEFAULT_MAX_CONNECTIONS = 1024


@dataclass(frozen=True)
class HttpSettings:
    """How a server treats the connections and requests that reach it."""

    max_header_line_bytes: int = DEFAULT_MAX_HEADER_LINE_BYTES
    """Longest request line or header line (name and value), in bytes; longer is 431 and a close."""
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    """Largest request head (request line and every header), in bytes; larger is 431 and a close."""
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    """Seconds from a new connection (or a request's first byte) to its complete headers; then 408 and a close."""
    body_idle_timeout_s: float = DEFAULT_BODY_IDLE_TIMEOUT_S
    """Longest pause between two pieces of a request body, in seconds; then 408 and a close."""
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    """Seconds a whole request body may take to arrive; then 408 and a close. Responses are not timed."""
    keepalive_timeout_s: float = DEFAULT_KEEPALIVE_TIMEOUT_S
    """How long an idle keep-alive connection is kept open between requests, in seconds."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Open client connections; at the cap the oldest one still sending its request is closed for a
    new one, and with none to close the newcomer gets 503 ``overloaded``. Capped at half the
    process's open-file limit."""
    allow_origins: tuple[str, ...] = ()
    """Browser origins (``https://app.example``) allowed besides the server's own; ``*`` allows any."""
    allow_hosts: tuple[str, ...] = ()
    """``Host`` names accepted besides the server's own address (checked on open loopback servers)."""
    metrics_port: int | None = None
    """Serve ``/metrics`` only on this port (a second listener on the same host); ``None``: on the main port."""
    api_docs: bool = False
    """Serve ``/docs`` and ``/redoc``. Their pages load Swagger UI and ReDoc from a public CDN onto
    this origin, where the playground keeps its key: off by default; ``/openapi.json`` is always served."""
    direct_routes: bool = True
    """Answer the server's streaming route past the framework's middleware stack, its body written
    straight to the connection (``serving/direct.py``); off: through FastAPI like every other route."""

    def __post_init__(self) -> None:
        for name in ("max_header_line_bytes", "max_header_bytes", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("header_timeout_s", "body_idle_timeout_s", "body_timeout_s", "keepalive_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")

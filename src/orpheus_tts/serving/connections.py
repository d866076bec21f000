"""The HTTP connection layer: uvicorn's httptools protocol with the front door's limits.

uvicorn's ``httptools`` protocol is the fast HTTP/1.1 parser (llhttp, in C),
but it bounds nothing: a header of any size is buffered, a connection that
never finishes its request is held forever, and ``limit_concurrency`` only
answers 503 once a request's headers are complete, so connections that never
get there still pile up until the process runs out of descriptors.
:class:`GuardedHttpToolsProtocol` adds, per connection:

- **Head limits.** Bytes are counted while a request's head is incomplete; past
  ``max_header_bytes``, or with one line longer than ``max_header_line_bytes``,
  the answer is 431 ``headers_too_large`` and the connection is closed, so at
  most one read buffer beyond the limit is ever held.
- **Read timeouts.** ``header_timeout_s`` from the connection (or a request's
  first byte) to its complete head; ``body_idle_timeout_s`` between two pieces
  of the body and ``body_timeout_s`` for all of it. Then 408
  ``request_timeout`` and a close. Only reading the request is timed: a
  response may stream for as long as the app sends it, and a body the app has
  not read yet (reading paused) does not count as idle.
- **A connection cap.** ``max_connections`` open at once. At the cap, the
  connection that has been reading its request the longest (idle keep-alive,
  headers or body still arriving) is closed to make room, so slow clients
  cannot crowd out quick ones; when every connection is busy with a request
  the app is answering, the newcomer gets 503 ``overloaded`` and is closed
  after a short linger.

**Direct routes.** A server may name POST paths (``direct_routes``) whose
requests go straight to an ASGI app of their own instead of through the
framework's middleware stack and router: its hottest route, a stream, then
costs no per-request framework work (``serving/direct.py`` builds such apps,
with the request checks the middleware would have made). The app's task is
cancelled when its client disconnects, if it asked for that (its response
sets :data:`CANCEL_ON_DISCONNECT` on the cycle).

The fast path (a request whose head arrives in one read) arms no timer and does
a few integer comparisons; a timer exists only while a connection waits for
bytes. ``bench/security.py`` compares the CPU cost with the plain protocol and
with uvicorn's ``h11`` implementation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from asyncio import TimerHandle
from collections.abc import Mapping
from typing import Any, ClassVar, cast

import httptools
from starlette.types import ASGIApp
from uvicorn.logging import TRACE_LOG_LEVEL
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from orpheus_tts.protocol import ErrorCode, error_body
from orpheus_tts.serving.settings import HttpSettings

__all__ = [
    "CANCEL_ON_DISCONNECT",
    "OVERFLOW_LINGER_S",
    "GuardedHttpToolsProtocol",
    "effective_max_connections",
    "guarded_protocol",
]

logger = logging.getLogger(__name__)

OVERFLOW_LINGER_S = 1.0
"""How long a connection refused at the cap is read from (and discarded) before it is closed."""

_HEADER_OVERHEAD_BYTES = 4
"""``": "`` and CRLF around each header, which the parser does not hand over."""

_IDLE, _HEAD, _BODY, _BUSY, _DONE = range(5)
"""Connection phases: waiting for a request, reading its head, reading its body, answering it, closed."""


CANCEL_ON_DISCONNECT = "orpheus_cancel_on_disconnect"
"""Attribute of uvicorn's request cycle: a task set there is cancelled when the client disconnects."""


class _Refused(Exception):
    """Raised from a parser callback to stop parsing and answer ``code``."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def effective_max_connections(settings: HttpSettings) -> int:
    """``settings.max_connections``, capped at half the soft open-file limit (the rest is for
    upstream connections, files and the listener)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return settings.max_connections
    return max(1, min(settings.max_connections, soft // 2))


def guarded_protocol(
    settings: HttpSettings, direct_routes: Mapping[bytes, ASGIApp] | None = None
) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for one server (``uvicorn.Config(http=...)``): its settings, its own
    table of connections still reading a request, and its direct routes (POST path -> ASGI app)."""
    cap = effective_max_connections(settings)
    if cap < settings.max_connections:
        logger.warning(
            "max_connections %d capped at %d: half of this process's open-file limit", settings.max_connections, cap
        )
    namespace = {
        "settings": settings,
        "max_connections": cap,
        "reading": {},
        "direct_routes": dict(direct_routes or {}),
    }
    return cast(
        "type[GuardedHttpToolsProtocol]", type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), namespace)
    )


def _address(info: Any) -> tuple[str, int | None] | None:
    """A socket address as uvicorn's scope holds it: ``(host, port)``, ``(path, None)`` for a Unix socket."""
    if isinstance(info, (list, tuple)) and len(info) >= 2:  # IPv6 adds flow info and scope id
        return (str(info[0]), int(info[1]))
    if isinstance(info, str) and info:
        return (info, None)
    return None


def _raw_response(code: ErrorCode, message: str, extra: bytes = b"") -> bytes:
    body = json.dumps(error_body(code, message)).encode("utf-8")
    return b"".join(
        [
            STATUS_LINE[code.http_status],
            b"content-type: application/json\r\ncontent-length: ",
            str(len(body)).encode("ascii"),
            b"\r\nconnection: close\r\n",
            extra,
            b"\r\n",
            body,
        ]
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """See the module docstring; build one per server with :func:`guarded_protocol`."""

    settings: ClassVar[HttpSettings] = HttpSettings()
    max_connections: ClassVar[int] = HttpSettings().max_connections
    reading: ClassVar[dict[GuardedHttpToolsProtocol, None]] = {}
    """Connections still reading a request, oldest first: the ones closed to make room at the cap."""
    direct_routes: ClassVar[dict[bytes, ASGIApp]] = {}
    """POST paths answered by their own ASGI app, past the middleware stack (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = _IDLE
        self._head_bytes = 0
        self._header_bytes = 0
        self._timer: TimerHandle | None = None
        self._started = 0.0
        """When the current phase began (``loop.time()``)."""
        self._last_body = 0.0
        self._overflow = False

    # ------------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # uvicorn's own, but both addresses come from the transport's record of them (uvloop and
        # asyncio keep them from the accept): uvicorn asks a socket object for each, which costs
        # a connection five system calls and two short-lived socket objects.
        self.connections.add(self)
        self.transport = transport
        self.flow = FlowControl(transport)
        self.server = _address(transport.get_extra_info("sockname"))
        client = _address(transport.get_extra_info("peername"))
        self.client = (client[0], client[1]) if client is not None and client[1] is not None else None
        self.scheme = "https" if transport.get_extra_info("sslcontext") else "http"
        if self.logger.level <= TRACE_LOG_LEVEL:
            prefix = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
            self.logger.log(TRACE_LOG_LEVEL, "%sHTTP connection made", prefix)
        if len(self.connections) > self.max_connections and not self._evict_oldest():
            self._refuse_overflow()
            return
        self.reading[self] = None
        self._started = self.loop.time()
        self._arm(self.settings.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = _DONE
        self._disarm()
        self.reading.pop(self, None)
        cycle = self.cycle
        super().connection_lost(exc)
        task = getattr(cycle, CANCEL_ON_DISCONNECT, None)
        if task is not None and cycle is not None and not cycle.response_complete:
            task.cancel()

    def _evict_oldest(self) -> bool:
        """Close the connection that has been reading its request the longest; False if none is."""
        for victim in self.reading:
            victim._close_for(ErrorCode.OVERLOADED, "the server is at its connection limit")
            return True
        return False

    def _refuse_overflow(self) -> None:
        """At the cap with nothing to close: answer 503 now, read and discard briefly, then close."""
        self._overflow = True
        self._phase = _DONE
        self.transport.write(_raw_response(ErrorCode.OVERLOADED, "too many connections", b"retry-after: 1\r\n"))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._timer = self.loop.call_later(OVERFLOW_LINGER_S, self.transport.close)

    # ------------------------------------------------------------------ reading

    def data_received(self, data: bytes) -> None:
        if self._overflow:
            return
        phase = self._phase
        if phase == _IDLE:
            self._head_bytes = 0
            self._phase = phase = _HEAD
            if self.cycle is not None:  # a kept-alive connection's next request: timed from now
                self._started = self.loop.time()
        if phase == _HEAD:
            self._head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            refused = exc.__context__ if isinstance(exc.__context__, _Refused) else None
            if refused is not None:
                self._close_for(refused.code, refused.message)
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        phase = self._phase
        if phase == _HEAD:
            if self._head_bytes > self.settings.max_header_bytes:
                self._close_for(ErrorCode.HEADERS_TOO_LARGE, self._head_message())
            elif self._timer is None:
                self._arm(self._started + self.settings.header_timeout_s - self.loop.time())
        elif phase == _BODY and self._timer is None:
            self._arm(self.settings.body_idle_timeout_s)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.settings.max_header_line_bytes:
            raise _Refused(ErrorCode.HEADERS_TOO_LARGE, self._line_message("the request line"))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + _HEADER_OVERHEAD_BYTES
        if size > self.settings.max_header_line_bytes:
            raise _Refused(ErrorCode.HEADERS_TOO_LARGE, self._line_message("a header line"))
        self._header_bytes += size
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._header_bytes + len(self.url) > self.settings.max_header_bytes:
            raise _Refused(ErrorCode.HEADERS_TOO_LARGE, self._head_message())
        self._disarm()
        self._phase = _BODY
        self._started = self._last_body = self.loop.time()
        direct = self.direct_routes.get(self.url.partition(b"?")[0]) if self.direct_routes else None
        if direct is None or self.parser.get_method() != b"POST":
            super().on_headers_complete()
            return
        app, self.app = self.app, direct  # uvicorn starts the request's task with ``self.app``
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_body(self, body: bytes) -> None:
        self._last_body = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self.reading.pop(self, None)
        cycle = self.cycle
        if cycle is not None and cycle.response_complete:  # answered before the body was read (413)
            self._phase = _IDLE
            self.reading[self] = None
        else:
            self._phase = _BUSY

    def on_response_complete(self) -> None:
        if self._phase == _BUSY and not self.pipeline:
            self._phase = _IDLE
            self.reading[self] = None
        super().on_response_complete()

    # ------------------------------------------------------------------ timeouts

    def _arm(self, delay_s: float) -> None:
        self._timer = self.loop.call_later(max(delay_s, 0.0), self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        now = self.loop.time()
        settings = self.settings
        if self._phase in (_IDLE, _HEAD):
            due = self._started + settings.header_timeout_s
            if now < due:
                self._arm(due - now)
            elif self._phase == _IDLE and self.cycle is None:
                self.transport.close()  # connected and sent nothing
            else:
                message = f"the request headers took over {settings.header_timeout_s:g} s"
                self._close_for(ErrorCode.REQUEST_TIMEOUT, message)
        elif self._phase == _BODY:
            if self.flow.read_paused:  # the app has not read what came: not the client's pause
                self._last_body = now
            total_due = self._started + settings.body_timeout_s
            idle_due = self._last_body + settings.body_idle_timeout_s
            if now >= total_due:
                self._close_for(ErrorCode.REQUEST_TIMEOUT, f"the request body took over {settings.body_timeout_s:g} s")
            elif now >= idle_due:
                self._close_for(ErrorCode.REQUEST_TIMEOUT, f"no request body for {settings.body_idle_timeout_s:g} s")
            else:
                self._arm(min(total_due, idle_due) - now)

    # ------------------------------------------------------------------ closing

    def _close_for(self, code: ErrorCode, message: str) -> None:
        """End this connection: tell a running app the client is gone, answer ``code`` if no
        response has started, close."""
        self._disarm()
        self.reading.pop(self, None)
        if self.transport.is_closing():
            return
        cycle = self.cycle
        started = cycle is not None and cycle.response_started and not cycle.response_complete
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown client"
        logger.info("closing the connection from %s: %s", client, message)
        if not started and (self._phase != _IDLE or code is not ErrorCode.OVERLOADED):
            self.transport.write(_raw_response(code, message))
        self._phase = _DONE
        self.transport.close()

    def _head_message(self) -> str:
        return f"the request head is larger than the {self.settings.max_header_bytes}-byte limit"

    def _line_message(self, what: str) -> str:
        return f"{what} is longer than the {self.settings.max_header_line_bytes}-byte limit"

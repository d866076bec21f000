"""``/v1/tts/realtime``: the WebSocket transport of a :class:`~orpheus_tts.realtime.session.RealtimeSession`.

Starlette's :class:`~starlette.websockets.WebSocket` (on uvicorn's websockets
implementation) does the framing; this module does the protocol around it:
auth (a header on the upgrade, or an ``auth`` first message; a bad key gets an
``error`` and close code 4401), ``ready``, one reader applying client messages
and one writer draining the session's outbox, the message-size limit, binary
frames refused, and the idle timeout (close code 4408). When the socket goes,
every context's engine work is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from orpheus_tts.protocol import ErrorCode, ServiceError
from orpheus_tts.realtime.context import Context, Openings, SynthesizeSegment
from orpheus_tts.realtime.limits import IDLE_CLOSE_CODE, UNAUTHORIZED_CLOSE_CODE, RealtimeLimits
from orpheus_tts.realtime.messages import Auth, MessageError, error_message, parse_client_message
from orpheus_tts.realtime.outbox import Outbox
from orpheus_tts.realtime.session import RealtimeSession, ValidateStart

if TYPE_CHECKING:
    from orpheus_tts.serving.metrics import ServiceMetrics

__all__ = ["REALTIME_PATH", "RealtimeBackend", "mount_realtime", "origin_allowed", "serve_realtime"]

REALTIME_PATH = "/v1/tts/realtime"


@dataclass(frozen=True)
class RealtimeBackend:
    """What a server plugs into the realtime transport."""

    synthesize: Callable[[Any], SynthesizeSegment]
    """The segment synthesizer for an authenticated identity (whatever ``authenticate`` returned).

    It may raise a ``ServiceError`` (the socket is refused: ``error``, then close code 1013), and
    may have a ``close()``, called when the socket ends."""
    limits: RealtimeLimits
    authenticate: Callable[[Mapping[str, str]], Any] | None = None
    """Checks the upgrade's headers (or ``{"authorization": "Bearer KEY"}`` from an ``auth`` message);
    raises a ``ServiceError``. ``None``: no auth."""
    needs_key: Callable[[], bool] = lambda: False
    """Whether a key is required at all (if not, no ``auth`` message is awaited)."""
    validate: ValidateStart | None = None
    allow_origins: tuple[str, ...] = ()
    """Browser origins allowed besides the server's own (``*``: any), as ``HttpSettings.allow_origins``."""
    metrics: ServiceMetrics | None = None
    """Where open sockets, contexts by outcome and each context's time to first audio are counted."""
    openings: Openings = field(default_factory=Openings)
    """The server's contexts that are starting, across its sockets (see :class:`Openings`)."""


async def serve_realtime(websocket: WebSocket, backend: RealtimeBackend) -> None:
    """Run one realtime socket to its end; see the module docstring."""
    if not origin_allowed(websocket.headers, backend.allow_origins):
        # Closing before accepting refuses the upgrade (HTTP 403): a page on another site
        # must not drive the server through its visitor's browser.
        await websocket.close(FORBIDDEN_CLOSE_CODE)
        return
    await websocket.accept()
    limits = backend.limits
    identity = await _authenticate(websocket, backend)
    if identity is _REFUSED:
        return
    try:
        synthesize = backend.synthesize(identity)
    except ServiceError as exc:
        with contextlib.suppress(Exception):
            await websocket.send_text(json.dumps(error_message(exc.code, exc.message)))
            await websocket.close(TRY_AGAIN_CLOSE_CODE)
        return
    outbox = Outbox(limits.outbox_messages)
    metrics = backend.metrics
    session = RealtimeSession(
        synthesize,
        limits,
        outbox,
        backend.validate,
        None if metrics is None else _observer(metrics),
        backend.openings,
    )
    outbox.put(session.ready_message())
    writer = asyncio.get_running_loop().create_task(_write(websocket, outbox))
    if metrics is not None:
        metrics.realtime_sockets.labels(metrics.role).inc()
    try:
        await _read(websocket, session, writer)
    finally:
        if metrics is not None:
            metrics.realtime_sockets.labels(metrics.role).dec()
        session.close()
        writer.cancel()
        with contextlib.suppress(BaseException):
            await writer
        close = getattr(synthesize, "close", None)
        if close is not None:
            close()


def _observer(metrics: ServiceMetrics) -> Callable[[Context], None]:
    def observe(context: Context) -> None:
        metrics.realtime_contexts.labels(metrics.role, context.outcome or "closed").inc()
        if context.first_audio_after_s is not None:
            metrics.realtime_first_audio.labels(metrics.role).observe(context.first_audio_after_s)

    return observe


_REFUSED = object()
FORBIDDEN_CLOSE_CODE = 4403
TRY_AGAIN_CLOSE_CODE = 1013
"""RFC 6455's "try again later": the key's quota has no room for another socket."""


def origin_allowed(headers: Mapping[str, str], allow_origins: tuple[str, ...]) -> bool:
    """The front door's Origin rule for upgrades: none (not a browser), the server's own, or an allowed one."""
    origin = headers.get("origin")
    if origin is None or "*" in allow_origins:
        return True
    text = origin.lower().rstrip("/")
    if text in {o.lower().rstrip("/") for o in allow_origins}:
        return True
    _, sep, netloc = text.partition("://")
    return bool(sep) and netloc == headers.get("host", "").lower()


async def _authenticate(websocket: WebSocket, backend: RealtimeBackend) -> Any:
    if backend.authenticate is None:
        return None
    headers = dict(websocket.headers)
    presented = any(k.lower() in ("authorization", "x-api-key") for k in headers)
    try:
        if presented or not backend.needs_key():
            return backend.authenticate(headers)
        first = await _first_message(websocket, backend.limits)
        if not isinstance(first, Auth):
            raise ServiceError(ErrorCode.UNAUTHORIZED, "missing API key: send it in a header or an 'auth' message")
        return backend.authenticate({"authorization": f"Bearer {first.api_key}"})
    except (ServiceError, MessageError) as exc:
        code = exc.code if isinstance(exc.code, ErrorCode) else ErrorCode.UNAUTHORIZED
        if code is not ErrorCode.UNAUTHORIZED:
            code = ErrorCode.UNAUTHORIZED
        with contextlib.suppress(Exception):
            await websocket.send_text(json.dumps(error_message(code, exc.message)))
            await websocket.close(UNAUTHORIZED_CLOSE_CODE)
        return _REFUSED
    except (WebSocketDisconnect, asyncio.TimeoutError):
        with contextlib.suppress(Exception):
            await websocket.close(UNAUTHORIZED_CLOSE_CODE)
        return _REFUSED


async def _first_message(websocket: WebSocket, limits: RealtimeLimits) -> Any:
    message = await asyncio.wait_for(websocket.receive(), timeout=limits.idle_timeout_s)
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None or len(text.encode("utf-8")) > limits.max_message_bytes:
        raise ServiceError(ErrorCode.UNAUTHORIZED, "the first message must be {'type': 'auth', 'api_key': KEY}")
    return parse_client_message(text)


async def _read(websocket: WebSocket, session: RealtimeSession, writer: asyncio.Task[None]) -> None:
    limits = session.limits
    receive: asyncio.Future[Any] | None = None
    try:
        while True:
            if receive is None:
                receive = asyncio.ensure_future(websocket.receive())
            done, _ = await asyncio.wait(
                {receive, writer}, timeout=limits.idle_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            if writer in done:  # a send failed: the client is gone
                return
            if receive not in done:
                if session.busy:  # audio still being produced or sent: not idle
                    continue
                await _close_idle(websocket, writer, limits)
                return
            message, receive = receive.result(), None
            if message["type"] == "websocket.disconnect":
                return
            _apply(session, message)
    finally:
        if receive is not None:
            receive.cancel()


def _apply(session: RealtimeSession, message: dict[str, Any]) -> None:
    limits = session.limits
    text = message.get("text")
    if text is None:
        session.reject(MessageError(ErrorCode.INVALID_REQUEST, "binary frames are not accepted; send JSON text"))
        return
    size = len(text.encode("utf-8"))
    if size > limits.max_message_bytes:
        session.reject(
            MessageError(ErrorCode.BODY_TOO_LARGE, f"message of {size} bytes; the limit is {limits.max_message_bytes}")
        )
        return
    try:
        parsed = parse_client_message(text)
    except MessageError as exc:
        session.reject(exc)
        return
    session.handle(parsed)


async def _close_idle(websocket: WebSocket, writer: asyncio.Task[None], limits: RealtimeLimits) -> None:
    writer.cancel()
    with contextlib.suppress(BaseException):
        await writer
    with contextlib.suppress(Exception):
        message = f"no message for {limits.idle_timeout_s:g} s and nothing to send; closing"
        await websocket.send_text(json.dumps(error_message(ErrorCode.DEADLINE_EXCEEDED, message)))
        await websocket.close(IDLE_CLOSE_CODE)


async def _write(websocket: WebSocket, outbox: Outbox) -> None:
    while True:
        message = await outbox.get()
        if message is None:
            return
        await websocket.send_text(json.dumps(message, separators=(",", ":")))


def mount_realtime(app: Any, backend: RealtimeBackend) -> None:
    """Add ``/v1/tts/realtime`` to a Starlette (or FastAPI) ``app``."""

    async def realtime(websocket: WebSocket) -> None:
        await serve_realtime(websocket, backend)

    app.router.routes.append(WebSocketRoute(REALTIME_PATH, realtime))

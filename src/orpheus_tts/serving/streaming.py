"""A streaming response that decides its status only once the stream is ready.

``prepare()`` does the work that can still fail cleanly (queueing, the first
audio); a :class:`~orpheus_tts.protocol.ServiceError` raised there becomes a
plain JSON error with the right status. After that the body is sent piece by
piece, unbuffered. A client disconnect cancels the work at any point,
preparation included, and the body iterator is always closed, so the engine
stops and its slot is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, STATUS_LINE, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from orpheus_tts.protocol import ServiceError
from orpheus_tts.serving.connections import CANCEL_ON_DISCONNECT

__all__ = ["FinalPiece", "PreparedStream", "PreparedStreamResponse"]


class FinalPiece(bytes):
    """A body's last piece, marked by the body itself (e.g. the piece with ``eos``): it goes out in
    one write with the end of the body, and the body is not asked for another.

    Without it the end of a chunked body is a write of its own, after the body
    iterator has said it has nothing more: a proxy reading the stream waits for
    that second packet before its connection is free for the next request.
    """

    __slots__ = ()


@dataclass
class PreparedStream:
    """A stream that is ready to send: its headers and its body."""

    body: AsyncIterator[bytes]
    media_type: str
    headers: dict[str, str] = field(default_factory=dict)


class PreparedStreamResponse(Response):
    """ASGI response around a ``prepare()`` coroutine; see the module docstring."""

    def __init__(
        self,
        prepare: Callable[[], Awaitable[PreparedStream]],
        headers: dict[str, str] | None = None,
        error_body: Callable[[ServiceError], dict[str, object]] | None = None,
    ) -> None:
        # Not Response.__init__: there is no body to render up front.
        self.status_code = 200
        self.background = None
        self.raw_headers = []
        self._prepare = prepare
        self._extra_headers = headers or {}
        self._error_body = error_body or (lambda e: e.body())
        self.disconnected = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cycle = getattr(send, "__self__", None)
        if isinstance(cycle, RequestResponseCycle):
            await self._run_direct(cycle, send)
            return
        work = asyncio.ensure_future(self._run(send))
        watch = asyncio.ensure_future(self._wait_disconnect(receive))
        try:
            await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not work.done():
                self.disconnected = True
                work.cancel()
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await work

    async def _run_direct(self, cycle: RequestResponseCycle, send: Send) -> None:
        task = asyncio.current_task()
        if not _UNCANCEL or task is None:
            await self._run_direct_in_task(cycle, send)
            return
        # The stream runs in the server's own task, which the connection layer cancels on a
        # disconnect; ``uncancel`` tells that cancellation from one of the server's (it is stopping).
        setattr(cycle, CANCEL_ON_DISCONNECT, task)
        try:
            await self._run(send, cycle)
        except asyncio.CancelledError:
            if not cycle.disconnected or task.uncancel() != 0:  # type: ignore[attr-defined]  # 3.11+, checked
                raise
            self.disconnected = True
        except OSError:
            pass  # the connection went while a write drained
        finally:
            setattr(cycle, CANCEL_ON_DISCONNECT, None)

    async def _run_direct_in_task(self, cycle: RequestResponseCycle, send: Send) -> None:
        work = asyncio.ensure_future(self._run(send, cycle))
        setattr(cycle, CANCEL_ON_DISCONNECT, work)  # the connection layer cancels it on a disconnect
        try:
            await asyncio.wait({work})
        finally:
            setattr(cycle, CANCEL_ON_DISCONNECT, None)
            if not work.done():  # this task was cancelled: the server is stopping
                work.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await work
            if work.cancelled():
                self.disconnected = True

    async def _wait_disconnect(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                return

    async def _run(self, send: Send, cycle: RequestResponseCycle | None = None) -> None:
        try:
            prepared = await self._prepare()
        except ServiceError as error:
            await self._send_error(send, error)
            return
        headers = {**self._extra_headers, **prepared.headers, "content-type": prepared.media_type}
        start: Message = {
            "type": "http.response.start",
            "status": 200,
            "headers": _raw_headers({**headers, "cache-control": "no-store", "x-accel-buffering": "no"}),
        }
        try:
            if cycle is not None:
                sink = _ConnectionSink(cycle, _chunked_head(cycle, start["headers"]))
                if not await _write_direct(sink, prepared.body):
                    return
                await sink.end(send)
                return
            await send(start)
            async for data in prepared.body:
                if isinstance(data, FinalPiece):
                    await send({"type": "http.response.body", "body": data, "more_body": False})
                    return
                if data:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                if self.disconnected:
                    # Normally the work is cancelled on disconnect; this catches a cancellation that
                    # landed inside a third-party await and was lost: sends to a gone client are no-ops.
                    return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            aclose = getattr(prepared.body, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _send_error(self, send: Send, error: ServiceError) -> None:
        body = json.dumps(self._error_body(error)).encode("utf-8")
        headers = {**self._extra_headers, **error.headers(), "content-type": "application/json"}
        if error.http_status == 401:
            headers.setdefault("www-authenticate", "Bearer")
        await send({"type": "http.response.start", "status": error.http_status, "headers": _raw_headers(headers)})
        await send({"type": "http.response.body", "body": body, "more_body": False})


_UNCANCEL = sys.version_info >= (3, 11)
"""Whether ``asyncio.Task.uncancel`` exists (Python 3.11+): a disconnect can then cancel the server's own task."""


class _ConnectionSink:
    """A response body written straight to uvicorn's connection, as HTTP chunks, under its flow control.

    The response head goes out with the first piece, in one write; a
    :class:`FinalPiece` goes out with the terminating chunk (and with the head,
    when no piece took it: a whole stream that came in one read goes out in
    one write) as soon as it is written, and :meth:`end` then only completes
    uvicorn's request cycle. Each write to a loopback peer costs a system call
    and wakes the reader, so the ones a stream saves this way are felt; and the
    body's end reaches the client before the stream's bookkeeping, not after it.
    """

    def __init__(self, cycle: RequestResponseCycle, head: bytes) -> None:
        self._cycle = cycle
        self._transport = cycle.transport
        self._flow = cycle.flow
        self._head = head
        self._ended = False
        """The terminating chunk was written."""

    @property
    def gone(self) -> bool:
        return self._cycle.disconnected

    @property
    def paused(self) -> bool:
        return self._flow.write_paused

    def write(self, data: bytes) -> None:
        if self._ended:
            raise RuntimeError("a piece written after the body's last one")
        final = isinstance(data, FinalPiece)
        if self._cycle.disconnected or not (data or final):
            return
        end = _LAST_CHUNK if final else b""
        self._transport.write(b"%b%x\r\n%b\r\n%b" % (self._head, len(data), data, end) if data else self._head + end)
        self._head = b""
        self._ended = final

    async def end(self, send: Send) -> None:
        """End the body: the terminating chunk (with the head, if no piece took it) unless a
        :class:`FinalPiece` took it already, and the request cycle completed as uvicorn completes it."""
        if not self._ended:
            self.write(FinalPiece())
        if self._cycle.disconnected:
            return
        _complete(self._cycle)

    async def drain(self) -> None:
        await self._flow.drain()


_LAST_CHUNK = b"0\r\n\r\n"
"""The chunk that ends a chunked body (no trailers)."""


def _chunked_head(cycle: RequestResponseCycle, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The head uvicorn's ``send`` writes for a 200 response of unknown length (chunked), built here
    with the same bookkeeping on ``cycle``, so that it leaves with the first piece of the body.

    The same head: uvicorn's default headers (``date``, ``server``) first,
    ``connection: close`` where the request asked for it, and every name and
    value checked as uvicorn checks them (no separators in a name, no control
    characters in a value). ``headers`` are
    lowercase names (``_raw_headers``) with neither a length nor a framing of
    their own.
    """
    for name, value in headers:
        if HEADER_RE.search(name):
            raise RuntimeError("Invalid HTTP header name.")
        if HEADER_VALUE_RE.search(value):
            raise RuntimeError("Invalid HTTP header value.")
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.chunked_encoding = True
    cycle.expected_content_length = 0
    if cycle.access_log:
        scope = cycle.scope
        cycle.access_logger.info(
            '%s - "%s %s HTTP/%s" %d',
            get_client_addr(scope),
            scope["method"],
            get_path_with_query_string(scope),
            scope["http_version"],
            200,
        )
    parts = [STATUS_LINE[200]]
    for name, value in (*cycle.default_headers, *headers):
        parts += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"transfer-encoding: chunked\r\n\r\n")
    return b"".join(parts)


def _complete(cycle: RequestResponseCycle) -> None:
    """What uvicorn's ``send`` does once a body's end is written: the cycle is complete, the
    connection closed unless kept alive, and the protocol told (it reads the next request)."""
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()


async def _write_direct(sink: _ConnectionSink, body: AsyncIterator[bytes]) -> bool:
    """The body as HTTP chunks on uvicorn's connection; False if the client went away.

    A body with ``write_direct(sink)`` (the gateway's relay) writes itself,
    unless it answers ``None`` (it cannot); any other is iterated.
    """
    write_direct = getattr(body, "write_direct", None)
    if write_direct is not None and (written := await write_direct(sink)) is not None:
        return bool(written)
    async for data in body:
        if sink.gone:
            return False
        if sink.paused:
            await sink.drain()
        sink.write(data)
        if isinstance(data, FinalPiece):
            break
    return not sink.gone


def _raw_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items()]

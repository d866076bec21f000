"""A lean HTTP/1.1 client for the gateway's streams to its workers: asyncio protocols, httptools' parser.

httpx builds a request object, runs auth, cookie and redirect handling and
passes every body piece through its transport's and its own Python layers;
for a proxy that opens one upstream stream per client stream, that costs more
CPU per stream than all of nginx (``docs/operations.md``). This client does
what a stream needs and nothing more:

- **Pooled keep-alive connections**, most recently used first, each dropped
  after ``keepalive_expiry_s`` idle (before the worker's own keep-alive
  timeout closes it under us); at most ``max_connections`` per endpoint, a
  request waiting the pool timeout for one to free up. A request whose
  reused connection turns out closed before any byte of the answer is sent
  once more on a new connection (the worker never saw it).
- **One write per request** (head and body), the response parsed by
  httptools (llhttp, in C): the head as one callback, the body de-chunked.
  **The body comes in as few pieces as it arrived in**: a pushed body gets
  what one socket read brought as one piece, however many HTTP chunks it
  held (the worker writes a frame per chunk), and a read takes everything
  buffered; a relay then writes it on in one write, as nginx does, instead
  of a write (and a wakeup of its client) per chunk. A body not read to its
  end closes the connection, which tells the worker to stop; one read to its
  end puts the connection back in the pool.
- **Backpressure**: past ``HIGH_WATER_BYTES`` unread, the socket stops being
  read until the reader takes what is buffered.
- **Timeouts**: ``connect`` for the TCP connection, ``read`` for the longest
  silence (the head, then between two pieces of the body). The request is
  small and written to the socket buffer in one call, so ``write`` does not
  apply.

Plain ``http://`` only; an endpoint on ``https://`` uses httpx.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import cast
from urllib.parse import urlsplit

import httptools
import httpx

from orpheus_tts.routing.transport import ResponseHeaders, ResponseTimeout, StreamResponse, TransportFailure

__all__ = ["HIGH_WATER_BYTES", "LeanStreamClient"]

HIGH_WATER_BYTES = 256 * 1024
"""Unread body bytes past which the socket is no longer read."""

_HEAD, _BODY, _DONE, _LOST = range(4)

_NOTHING_CAME = "the connection closed before any byte of the response"


def _check_header(name: str, value: str) -> bytes:
    text = f"{name}: {value}\r\n"
    try:
        line = text.encode("latin-1")  # what the server decoded it from
    except UnicodeEncodeError:
        line = text.encode("utf-8")
    if b"\r" in line[:-2] or b"\n" in line[:-2] or b"\0" in line:
        raise ValueError(f"header {name!r} holds a line break or NUL")
    return line


class LeanStreamClient:
    """POSTs to one streaming URL over pooled keep-alive connections; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int,
        max_keepalive_connections: int,
        keepalive_expiry_s: float,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the lean client speaks plain http:// only, not {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._request_line = f"POST {target} HTTP/1.1\r\nhost: {parts.netloc}\r\n".encode("ascii")
        self.max_connections = max_connections
        self.max_keepalive_connections = max_keepalive_connections
        self.keepalive_expiry_s = keepalive_expiry_s
        self._idle: list[tuple[float, _Connection]] = []
        """Idle connections with the time each went idle; the last is the most recently used."""
        self.open_connections = 0
        """Connections open or opening, idle ones included."""
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False

    # ------------------------------------------------------------------ requests

    async def post(self, content: bytes, headers: Mapping[str, str], timeout: httpx.Timeout) -> StreamResponse:
        lines = [self._request_line, b"content-length: %d\r\n" % len(content)]
        lines.extend(_check_header(name, value) for name, value in headers.items())
        lines.append(b"\r\n")
        lines.append(content)
        request = b"".join(lines)
        connection = await self._acquire(timeout)
        try:
            return await self._exchange(connection, request, timeout.read)
        except TransportFailure as exc:
            if not (connection.reused and exc.args and exc.args[0] is _NOTHING_CAME):
                raise
        # The worker closed the idle connection as we reused it: it never saw the request.
        return await self._exchange(await self._connect(timeout), request, timeout.read)

    @staticmethod
    async def _exchange(connection: _Connection, request: bytes, read_s: float | None) -> _LeanResponse:
        response = connection.send(request, read_s)
        try:
            await response.head(read_s)
        except BaseException:
            response.close()
            raise
        return response

    # ------------------------------------------------------------------ the pool

    async def _acquire(self, timeout: httpx.Timeout) -> _Connection:
        if self._closed:
            raise TransportFailure("the client is closed")
        now = time.monotonic()
        while self._idle:
            since, connection = self._idle.pop()
            if now - since < self.keepalive_expiry_s and connection.usable:
                connection.reused = True
                return connection
            connection.close()
        if self.open_connections >= self.max_connections:
            await self._wait_for_room(timeout.pool)
            return await self._acquire(timeout)
        return await self._open(timeout.connect)

    async def _connect(self, timeout: httpx.Timeout) -> _Connection:
        """A new connection, within the cap (the caller's last one has just closed)."""
        while self.open_connections >= self.max_connections:
            await self._wait_for_room(timeout.pool)
        return await self._open(timeout.connect)

    async def _open(self, connect_s: float | None) -> _Connection:
        """A new connection; it holds one of ``max_connections`` from now until it is lost."""
        self.open_connections += 1
        connection = _Connection(self)
        loop = asyncio.get_running_loop()
        connecting = loop.create_connection(lambda: connection, self.host, self.port)
        try:
            await asyncio.wait_for(connecting, connect_s)
        except BaseException as exc:
            if connection.transport is not None or connection.gone:
                connection.close()  # made after all: its connection_lost gives the slot back
            else:
                connection.gone = True
                self._forget()
            if isinstance(exc, asyncio.TimeoutError):
                raise TransportFailure(f"connecting to {self.host}:{self.port} took over {connect_s} s") from exc
            if isinstance(exc, OSError):
                raise TransportFailure(f"cannot connect to {self.host}:{self.port}: {exc!r}") from exc
            raise
        return connection

    async def _wait_for_room(self, pool_s: float | None) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), pool_s)
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._wake_one()  # woken as it gave up: the room goes to the next in line
            if isinstance(exc, asyncio.TimeoutError):
                raise TransportFailure(
                    f"all {self.max_connections} connections to {self.host}:{self.port} stayed busy for {pool_s} s"
                ) from exc
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _release(self, connection: _Connection) -> None:
        """A response was read to its end on a kept-alive connection: reuse it."""
        if self._closed or len(self._idle) >= self.max_keepalive_connections:
            connection.close()
            return
        self._idle.append((time.monotonic(), connection))
        self._wake_one()

    def _forget(self, connection: _Connection | None = None) -> None:
        """A connection (or an attempt to open one) is gone."""
        self.open_connections -= 1
        if connection is not None:
            self._idle = [(t, c) for t, c in self._idle if c is not connection]
        self._wake_one()

    async def aclose(self) -> None:
        """Close the idle connections; streams still running close theirs when they end."""
        self._closed = True
        idle, self._idle = self._idle, []
        for _, connection in idle:
            connection.close()
        waiters, self._waiters = self._waiters, collections.deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(TransportFailure("the client is closed"))


class _Connection(asyncio.Protocol):
    """One keep-alive connection to the worker; serves one response at a time."""

    def __init__(self, client: LeanStreamClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        """``None`` once the connection is lost: the parser holds this protocol's methods, and the
        pair would otherwise wait for the cycle collector."""
        self.response: _LeanResponse | None = None
        self.reused = False
        self.gone = False

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def send(self, request: bytes, read_s: float | None) -> _LeanResponse:
        response = _LeanResponse(self, read_s)
        self.response = response
        if self.transport is None:
            response.lost(TransportFailure(_NOTHING_CAME))
        else:
            self.transport.write(request)
        return response

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        response, parser = self.response, self.parser
        if response is None or parser is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        response.any_bytes = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response.lost(TransportFailure(f"the worker's response is not valid HTTP/1.1: {exc}"))
            self.close()
            return
        response.deliver()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.parser = None
        response, self.response = self.response, None
        if response is not None:
            response.connection_closed(exc)
        if not self.gone:
            self.gone = True
            self.client._forget(self)

    # ------------------------------------------------------------------ httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.response is not None and self.parser is not None:
            self.response.head_complete(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response.feed(body)

    def on_message_complete(self) -> None:
        response, self.response = self.response, None
        keep_alive = self.parser is not None and self.parser.should_keep_alive()
        self.parser = httptools.HttpResponseParser(self) if self.parser is not None else None
        if response is not None:
            response.complete()
        if keep_alive and self.usable and not self.client._closed:
            self.reused = False
            self.client._release(self)
        else:
            self.close()

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()


class _LeanResponse:
    """The response on one connection; its body is buffered in pieces until read."""

    def __init__(self, connection: _Connection, read_s: float | None) -> None:
        self._connection: _Connection | None = connection
        self._read_s = read_s
        self.status_code = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self._headers: ResponseHeaders | None = None
        self.any_bytes = False
        self._state = _HEAD
        self._pieces: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[bool] | None = None
        """Completed with ``False`` when something happened, ``True`` when the read timeout ran out."""
        self._error: Exception | None = None
        self._framed = True
        """Whether the body's end is marked (length or chunked); if not, it ends when the connection does."""
        self._on_piece: Callable[[bytes], None] | None = None
        self._on_lost: Callable[[Exception], None] | None = None
        self._unsent: list[bytes] = []
        """A pushed body's pieces from the read being parsed, handed over together once it is (:meth:`deliver`)."""

    @property
    def headers(self) -> ResponseHeaders:
        if self._headers is None:
            self._headers = ResponseHeaders(self.raw_headers)
        return self._headers

    # ------------------------------------------------------------------ from the connection

    def head_complete(self, status: int) -> None:
        self.status_code = status
        names = {name.lower() for name, _ in self.raw_headers}
        self._framed = b"content-length" in names or b"transfer-encoding" in names
        self._state = _BODY
        self._wake()

    def feed(self, body: bytes) -> None:
        if self._on_piece is not None:
            self._unsent.append(body)
            return
        self._pieces.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER_BYTES and not self._paused and self._connection is not None:
            self._paused = True
            self._connection.pause_reading()
        self._wake()

    def deliver(self) -> None:
        """Hand a pushed body's pieces from the last read to the consumer, as one piece."""
        unsent = self._unsent
        if unsent and self._on_piece is not None:
            piece = unsent[0] if len(unsent) == 1 else b"".join(unsent)
            unsent.clear()
            self._on_piece(piece)

    def complete(self) -> None:
        self.deliver()  # the body's last bytes, before its end
        self._state = _DONE
        if self._paused and self._connection is not None:
            self._paused = False
            self._connection.resume_reading()  # it goes back to the pool: reading must go on
        self._connection = None  # back in the pool: no longer ours
        self._wake()
        if self._on_piece is not None:
            self._on_piece(b"")

    def connection_closed(self, exc: Exception | None) -> None:
        self._connection = None
        if self._state == _BODY and not self._framed:
            self.complete()
            return
        if not self.any_bytes:
            self.lost(TransportFailure(_NOTHING_CAME))
            return
        detail = f": {exc!r}" if exc is not None else ""
        self.lost(TransportFailure(f"the worker closed the connection mid-response{detail}"))

    def lost(self, error: Exception) -> None:
        if self._state in (_DONE, _LOST):
            return
        self.deliver()  # what came before the break is good
        if self._state in (_DONE, _LOST):  # the consumer closed the response on those bytes
            return
        self._state = _LOST
        self._error = error
        self._wake()
        if self._on_lost is not None:
            self._on_lost(error)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(False)

    # ------------------------------------------------------------------ for the reader

    async def _wait(self, timeout_s: float | None, what: str) -> None:
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = None if timeout_s is None else loop.call_later(timeout_s, _expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if waiter.result():
            raise ResponseTimeout(f"no {what} for {timeout_s:g} s")

    async def head(self, timeout_s: float | None) -> None:
        while self._state == _HEAD:
            await self._wait(timeout_s, "response")
        if self._state == _LOST and self.status_code == 0:
            assert self._error is not None
            raise self._error

    @property
    def finished(self) -> bool:
        return self._state == _DONE and not self._pieces

    async def read(self) -> bytes:
        while not self._pieces:
            if self._state == _DONE:
                return b""
            if self._state == _LOST:
                assert self._error is not None
                raise self._error
            await self._wait(self._read_s, "data")
        piece = self._take_buffered()
        if self._paused and self._connection is not None:
            self._paused = False
            self._connection.resume_reading()
        return piece

    def _take_buffered(self) -> bytes:
        """Every piece buffered so far, as one."""
        pieces = self._pieces
        piece = pieces.popleft() if len(pieces) == 1 else b"".join(pieces)
        pieces.clear()
        self._buffered = 0
        return piece

    def push(self, on_piece: Callable[[bytes], None], on_lost: Callable[[Exception], None]) -> None:
        """From now on hand each piece of the body to ``on_piece`` as it is read (``b""`` at its end),
        and a broken connection to ``on_lost``, instead of buffering them for :meth:`read`.

        Pieces already buffered go first, before this returns. Called from the
        connection's read callback, so they must not block; the consumer applies
        backpressure with :meth:`pause_reading`.
        """
        self._on_piece, self._on_lost = on_piece, on_lost
        if self._pieces:
            on_piece(self._take_buffered())
        if self._on_piece is None:  # closed by a callback
            return
        if self._paused and self._connection is not None:
            self._paused = False
            self._connection.resume_reading()
        if self._state == _DONE:
            on_piece(b"")
        elif self._state == _LOST:
            assert self._error is not None
            on_lost(self._error)

    def pause_reading(self) -> None:
        """Stop reading the socket (the consumer of a pushed body is behind)."""
        if self._connection is not None and not self._paused:
            self._paused = True  # the end of the body, in the same read, resumes it for the pool
            self._connection.pause_reading()

    def resume_reading(self) -> None:
        if self._connection is not None and self._paused:
            self._paused = False
            self._connection.resume_reading()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        self._on_piece = self._on_lost = None
        connection, self._connection = self._connection, None
        if self._state not in (_DONE, _LOST):
            self._state = _LOST
            self._error = TransportFailure("the response was closed before its end")
        if connection is not None:
            connection.response = None
            connection.close()  # not read to its end: the worker sees the close and stops


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(True)

"""The cheapest Python relays: floors for what a Python gateway can cost.

``bench.proxy`` runs each as a path beside nginx and the gateway. Neither does
anything a gateway must do (no keys, quotas, routing, deadlines or frame
checks), so each one's CPU per stream is a lower bound on any gateway built
the same way, not a design for one.

- ``aiohttp`` (path ``floor_aiohttp``): aiohttp's web server in front of one
  aiohttp client session, on uvloop. Each request is forwarded with its
  method, path, body and ``Content-Type``; the upstream's body is streamed
  back piece by piece as it arrives. Both sides parse HTTP in C (llhttp), but
  each request and each piece passes through the libraries' Python layers.
- ``raw`` (path ``floor_raw``): asyncio protocols on uvloop with httptools'
  request and response parsers (the C parser uvicorn uses). The request's
  bytes go to a pooled keep-alive upstream connection as they arrived, and
  the upstream's bytes (head and chunked body) go back to the client as they
  arrive; the parsers only find where each message ends. One parser feed and
  one write per read.
- ``raw_checked`` (path ``floor_raw_checked``): the raw relay, except that a
  v1 stream's body is checked the way the gateway checks it before it goes
  on: the de-chunked body is cut into NDJSON lines by the protocol's own
  :class:`~orpheus_tts.protocol.FrameDecoder` (chunks checked on their bytes,
  not decoded), every frame passes the v1 rules
  (:class:`~orpheus_tts.protocol.StreamTracker`: ``seq``, the terminal frame,
  the totals) and what one read brought goes out in one write (the head with
  the first lines, the body's end with the last), as the gateway writes it.
  What a data plane does per stream, without the control plane's once-per-
  stream work (keys, quotas, routing).

    python -m bench.relay_floor --kind raw|raw_checked|aiohttp --upstream http://127.0.0.1:PORT --port PORT
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import deque
from typing import cast
from urllib.parse import urlsplit

import aiohttp
import httptools  # type: ignore[import-untyped]
import uvloop
from aiohttp import web

from orpheus_tts.protocol import FrameDecoder, StreamTracker, encode_frame

STREAM_PATH = b"/v1/tts/stream"


def aiohttp_app(upstream: str, keepalive_s: float) -> web.Application:
    """The aiohttp relay as an application."""
    session: aiohttp.ClientSession | None = None

    async def open_session(_: web.Application) -> None:
        nonlocal session
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=keepalive_s)
        session = aiohttp.ClientSession(upstream, connector=connector, auto_decompress=False)

    async def close_session(_: web.Application) -> None:
        if session is not None:
            await session.close()

    async def relay(request: web.Request) -> web.StreamResponse:
        assert session is not None
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/octet-stream")}
        async with session.request(request.method, request.rel_url, data=body, headers=headers) as upstream_response:
            response = web.StreamResponse(status=upstream_response.status)
            response.content_type = upstream_response.content_type
            await response.prepare(request)
            async for piece in upstream_response.content.iter_any():
                await response.write(piece)
            await response.write_eof()
            return response

    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", relay)
    application.on_startup.append(open_session)
    application.on_cleanup.append(close_session)
    return application


class _Pool:
    """Idle keep-alive connections to the upstream, each dropped after ``keepalive_s`` unused."""

    def __init__(self, host: str, port: int, keepalive_s: float, checked: bool = False) -> None:
        self.host, self.port, self.keepalive_s = host, port, keepalive_s
        self.checked = checked
        """Whether v1 streams are checked frame by frame (``raw_checked``) rather than passed through."""
        self.idle: deque[tuple[float, _Upstream]] = deque()

    def take(self) -> _Upstream | None:
        now = time.monotonic()
        while self.idle:
            since, upstream = self.idle.pop()  # the most recently used: the least likely to be closing
            if now - since < self.keepalive_s and upstream.transport is not None:
                return upstream
            upstream.close()
        return None

    def put(self, upstream: _Upstream) -> None:
        self.idle.append((time.monotonic(), upstream))


class _Upstream(asyncio.Protocol):
    """One connection to the upstream; relays its bytes to the client it serves."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.client: _Client | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.check: tuple[FrameDecoder, StreamTracker] | None = None
        """The decoder and the v1 rules of the stream being checked (``None``: bytes pass through)."""
        self.out: list[bytes] = []
        """What the read being parsed gives a checked stream's client, written once it is parsed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def serve(self, client: _Client, request: bytes, stream: bool) -> None:
        """Send ``client``'s request and relay the answer to it."""
        self.client = client
        self.check = (FrameDecoder(keep_lines=True), StreamTracker()) if stream and self.pool.checked else None
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if self.check is None and client is not None and client.transport is not None:
            client.transport.write(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:  # also a stream that broke the v1 rules (raised in on_body)
            self.out.clear()
            self.close()  # connection_lost then cuts the client's response
            return
        self._flush(client)

    def _flush(self, client: _Client | None) -> None:
        if self.out:
            if client is not None and client.transport is not None:
                client.transport.write(b"".join(self.out))
            self.out.clear()

    def on_headers_complete(self) -> None:
        if self.check is not None and self.client is not None and self.client.transport is not None:
            status = self.parser.get_status_code()
            self.out.append(
                b"HTTP/1.1 %d \r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n" % status
            )

    def on_body(self, body: bytes) -> None:
        if self.check is None or self.client is None or self.client.transport is None:
            return
        decoder, rules = self.check
        frames = decoder.feed(body)
        for frame in frames:
            rules.observe(frame)  # raises ProtocolError for a stream that breaks the v1 rules
        if frames:
            lines = b"".join([encode_frame(frame) for frame in frames])
            self.out.append(b"%x\r\n%b\r\n" % (len(lines), lines))

    def on_message_complete(self) -> None:
        if self.check is not None:
            self.out.append(b"0\r\n\r\n")
        self.check = None
        client, self.client = self.client, None
        self._flush(client)  # before the client may send its next request
        self.parser = httptools.HttpResponseParser(self)
        self.pool.put(self)
        if client is not None:
            client.answered()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.client is not None and self.client.transport is not None:
            self.client.transport.close()  # cut mid-response: the client sees the cut


class _Client(asyncio.Protocol):
    """One client connection; its requests go upstream one at a time, in order."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.pieces: list[bytes] = []
        self.requests: deque[tuple[bytes, bool]] = deque()
        """Requests waiting, each with whether it is a v1 stream."""
        self.stream = False
        self.busy = False
        self.connecting: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        self.pieces.append(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.stream = url == STREAM_PATH

    def on_message_complete(self) -> None:
        self.requests.append((b"".join(self.pieces), self.stream))
        self.pieces = []
        self._next()

    def _next(self) -> None:
        if self.busy or not self.requests:
            return
        self.busy = True
        request, stream = self.requests.popleft()
        upstream = self.pool.take()
        if upstream is not None and upstream.transport is not None:
            upstream.serve(self, request, stream)
        else:
            self.connecting = asyncio.ensure_future(self._connect(request, stream))

    async def _connect(self, request: bytes, stream: bool) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(lambda: _Upstream(self.pool), self.pool.host, self.pool.port)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        upstream.serve(self, request, stream)

    def answered(self) -> None:
        self.busy = False
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve_raw(upstream: str, host: str, port: int, keepalive_s: float, checked: bool = False) -> None:
    """The raw relay (checking v1 streams if ``checked``), until cancelled."""
    parts = urlsplit(upstream)
    pool = _Pool(parts.hostname or "127.0.0.1", parts.port or 80, keepalive_s, checked)
    server = await asyncio.get_running_loop().create_server(lambda: _Client(pool), host, port)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=["raw", "raw_checked", "aiohttp"], default="raw")
    parser.add_argument("--upstream", required=True, help="base URL of the worker")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keepalive-s", type=float, default=4.0, help="idle upstream connections are closed after")
    args = parser.parse_args(argv)
    if args.kind in ("raw", "raw_checked"):
        uvloop.run(serve_raw(args.upstream, args.host, args.port, args.keepalive_s, args.kind == "raw_checked"))
        return
    web.run_app(
        aiohttp_app(args.upstream, args.keepalive_s),
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()

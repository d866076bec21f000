"""The proxy benchmark's clients: the same requests to every path, each stream checked whole.

httpx dropping each stream at its ``eos`` (a new connection per stream), or
aiohttp reading each body to its end (kept-alive connections, reused); see
``bench/proxy.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import httpx

from orpheus_tts.protocol import ChunkFrame, FrameDecoder, StreamTracker
from orpheus_tts.routing.settings import DEFAULT_KEEPALIVE_EXPIRY_S

__all__ = [
    "CLIENT_KEEP_ALIVE",
    "CLIENT_NEW_CONNECTIONS",
    "TEXT",
    "UPSTREAM_KEEPALIVE_S",
    "Client",
    "StreamCheck",
    "batch",
    "open_client",
]

TEXT = "Benchmark sentence for the gateway."
CLIENT_NEW_CONNECTIONS = "httpx, dropping each stream at eos, before the end of the body: a new connection per stream"
CLIENT_KEEP_ALIVE = "aiohttp, reading each body to its end: kept-alive connections, reused"
UPSTREAM_KEEPALIVE_S = int(DEFAULT_KEEPALIVE_EXPIRY_S)
"""nginx and the floors drop an idle upstream connection after this long, as the gateway does: shorter than
the worker's own keep-alive, so none reuses a connection the worker is closing (nginx would answer 502)."""


class Client:
    """The benchmark's client for one path: a connection pool, and how it ends each stream.

    ``connections`` counts the TCP connections it opened (as its library reports them); every
    request asks for ``text``, with ``params`` (the engine's) when given.
    """

    def __init__(self, text: str, params: Mapping[str, Any] | None = None) -> None:
        self.connections = 0
        self.body: dict[str, Any] = {"text": text, **(params or {})}  # v1: engine parameters sit beside the text
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def one(self, url: str) -> float:
        """One stream; its time to the first audio chunk. Raises unless the stream is whole."""
        raise NotImplementedError


class StreamCheck:
    """One v1 body, checked as it arrives: seq gaps, eos totals and frames after the end raise.

    The time to the first chunk is counted to the arrival of the piece of the
    body that completed it, not to the end of decoding that piece: a proxy that
    delivers more of the stream in one piece is not charged for the client's
    decoding of the rest.
    """

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.ttfb: float | None = None
        """Seconds to the first chunk, once it came."""
        self._decoder = FrameDecoder()
        self._tracker = StreamTracker()

    @property
    def complete(self) -> bool:
        """The ``eos`` came, with its totals right."""
        return self._tracker.complete

    def feed(self, data: bytes, arrived: float) -> None:
        """A piece of the body, which arrived at ``arrived`` (``time.perf_counter()``)."""
        for frame in self._decoder.feed(data):
            self._tracker.observe(frame)
            if self.ttfb is None and isinstance(frame, ChunkFrame):
                self.ttfb = arrived - self.started

    def result(self, url: str) -> float:
        if self.ttfb is None or not self.complete:
            raise RuntimeError(f"a stream from {url} ended without eos")
        return self.ttfb


class _DroppingClient(Client):
    """httpx, dropping each stream at its ``eos``: the end of the chunked body is not read, so
    httpx closes the connection and every stream is a new connection."""

    def __init__(self, limit: int, text: str, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(text, params)
        self._limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Client:
        self._http = await self._stack.enter_async_context(httpx.AsyncClient(limits=self._limits, timeout=60))
        return self

    async def _trace(self, event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.started":
            self.connections += 1

    async def one(self, url: str) -> float:
        assert self._http is not None
        check = StreamCheck()
        trace = {"trace": self._trace}
        async with self._http.stream("POST", f"{url}/v1/tts/stream", json=self.body, extensions=trace) as r:
            r.raise_for_status()
            async for data in r.aiter_raw():
                check.feed(data, time.perf_counter())
                if check.complete:
                    break
        return check.result(url)


class _KeepAliveClient(Client):
    """aiohttp, reading each body to its end (as the SDK's routing core and any client that reads
    whole bodies do), so its connections are reused.

    Not httpx: its pool checks every idle connection with system calls each
    time it hands one out, so with 16 or 64 kept-alive connections the client
    itself was the bottleneck (the worker saw one stream in flight at a time).
    """

    def __init__(self, limit: int, text: str, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(text, params)
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        trace = aiohttp.TraceConfig()
        trace.on_connection_create_end.append(self._connected)
        connector = aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=UPSTREAM_KEEPALIVE_S)
        session = aiohttp.ClientSession(connector=connector, trace_configs=[trace], auto_decompress=False)
        self._session = await self._stack.enter_async_context(session)
        return self

    async def _connected(self, *_: object) -> None:
        self.connections += 1

    async def one(self, url: str) -> float:
        assert self._session is not None
        check = StreamCheck()
        async with self._session.post(f"{url}/v1/tts/stream", json=self.body) as r:
            r.raise_for_status()
            async for data in r.content.iter_any():
                check.feed(data, time.perf_counter())  # on to the body's end: a frame after eos would raise
        return check.result(url)


def open_client(limit: int, *, keep_alive: bool, text: str = TEXT, params: Mapping[str, Any] | None = None) -> Client:
    return _KeepAliveClient(limit, text, params) if keep_alive else _DroppingClient(limit, text, params)


async def batch(client: Client, url: str, requests: int, concurrency: int) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)

    async def run() -> float:
        async with gate:
            return await client.one(url)

    started = time.perf_counter()
    opened = client.connections
    ttfbs = await asyncio.gather(*(run() for _ in range(requests)))
    wall_s = time.perf_counter() - started
    return {"ttfb_s": list(ttfbs), "wall_s": wall_s, "connections": client.connections - opened}

"""Shutdown that lets the app end its own streams: a uvicorn server that says when it begins.

uvicorn cancels whatever still runs once its ``timeout_graceful_shutdown``
passes, and a request cancelled that way gets a plain-text 500 (or, mid-stream,
a body cut without a word), before the app's lifespan shutdown even starts.
:class:`DrainingServer` calls ``app.state.begin_shutdown()`` (when the app
sets it) as shutdown begins, so the app can end each stream properly at its
own grace deadline; uvicorn's timeout is then set :data:`SHUTDOWN_MARGIN_S`
later, as a last resort.
"""

from __future__ import annotations

import asyncio
import gc
import math
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn

from orpheus_tts.aio import Stopped, run_before

__all__ = ["SHUTDOWN_MARGIN_S", "DrainingServer", "GraceCut", "cut_short", "uvicorn_grace_s"]

SHUTDOWN_MARGIN_S = 5.0
"""How long after the app's own drain grace uvicorn cancels what is left."""


def uvicorn_grace_s(drain_grace_s: float) -> int:
    """uvicorn's ``timeout_graceful_shutdown`` (whole seconds) for an app draining for ``drain_grace_s``."""
    return math.ceil(drain_grace_s + SHUTDOWN_MARGIN_S)


class DrainingServer(uvicorn.Server):
    """A ``uvicorn.Server`` that calls ``app.state.begin_shutdown()`` when shutdown begins.

    With ``freeze_heap`` (a server that owns its process: the CLI's), once it
    has started (the app's lifespan has run, everything is imported) it moves
    every object that exists to the collector's permanent generation
    (``gc.freeze()``): the modules, classes and settings of a long-lived server
    are never garbage, and a full collection would otherwise walk them all
    again and again under load. A server embedded in another program (a thread
    of a test, say) leaves that program's heap alone.
    """

    def __init__(self, config: uvicorn.Config, *, freeze_heap: bool = False) -> None:
        super().__init__(config)
        self.freeze_heap = freeze_heap

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.freeze_heap and self.started:
            gc.collect()
            gc.freeze()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        begin: Callable[[], None] | None = getattr(getattr(self.config.app, "state", None), "begin_shutdown", None)
        if callable(begin):
            begin()
        await super().shutdown(sockets)


class GraceCut:
    """Shutdown in two steps: :meth:`begin` refuses new work at once, and the drain grace later
    completes :meth:`future`, when a server ends what still runs itself."""

    def __init__(self) -> None:
        self.closing = False
        """True once shutdown began: new work is refused."""
        self._cut: asyncio.Future[None] | None = None

    def future(self) -> asyncio.Future[None]:
        """Completed once the drain grace has run out (created on first use, on the running loop)."""
        if self._cut is None:
            self._cut = asyncio.get_running_loop().create_future()
        return self._cut

    def begin(self, grace_s: float) -> None:
        """Take no new work; complete :meth:`future` ``grace_s`` seconds from now."""
        self.closing = True
        asyncio.get_running_loop().call_later(grace_s, self._cut_now)

    def _cut_now(self) -> None:
        cut = self.future()
        if not cut.done():
            cut.set_result(None)


def cut_short(body: AsyncIterator[bytes], stop: asyncio.Future[None], last: bytes) -> AsyncIterator[bytes]:
    """``body``, ended when ``stop`` completes: the pending step is cancelled, ``body`` closed,
    and ``last`` (the stream's final word, e.g. an ``error`` frame) sent instead."""
    return _CutShort(body, stop, last)


class _CutShort:
    def __init__(self, body: AsyncIterator[bytes], stop: asyncio.Future[None], last: bytes) -> None:
        self._body = body
        self._stop = stop
        self._last = last
        self._ended = False

    def __aiter__(self) -> _CutShort:
        return self

    async def __anext__(self) -> bytes:
        if self._ended:
            raise StopAsyncIteration
        try:
            return await run_before(self._body.__anext__(), math.inf, self._stop)
        except Stopped:
            self._ended = True
            await self.aclose()
            return self._last

    async def aclose(self) -> None:
        aclose: Any = getattr(self._body, "aclose", None)
        if aclose is not None:
            await aclose()

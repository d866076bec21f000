"""Relaying one upstream stream to a client, with the bookkeeping done exactly once.

:class:`Draining` counts the streams that are running, so shutdown can wait for
them; :class:`Relay` yields an upstream stream's frames and, however the
response ends, closes the upstream, counts the outcome, releases the key's
lease and leaves the draining count.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Generic, TypeVar

from orpheus_tts.gateway.quotas import Lease
from orpheus_tts.gateway.service import GatewayService, UpstreamStream
from orpheus_tts.protocol import ChunkFrame, Frame
from orpheus_tts.serving.shutdown import GraceCut

__all__ = ["Draining", "Relay", "same_frame"]

T = TypeVar("T")


def same_frame(frame: Frame) -> Frame:
    """The identity rendering: frames relayed as frames."""
    return frame


class Draining:
    """Counts running streams so shutdown can wait for them, and ends them itself when the grace runs out.

    :meth:`begin_shutdown` (called as the server starts shutting down) refuses
    new work and, ``grace_s`` later, completes :meth:`cut`: requests still
    waiting for audio then answer 503 ``overloaded`` (retryable) and running
    streams end with a ``cancelled`` error frame (retryable), so no client
    sees a bare 500 or a stream cut without a word.
    """

    def __init__(self) -> None:
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._grace = GraceCut()

    @property
    def closing(self) -> bool:
        """True once shutdown began: new work is refused."""
        return self._grace.closing

    @closing.setter
    def closing(self, value: bool) -> None:
        self._grace.closing = value

    def cut(self) -> asyncio.Future[None]:
        """Completed once the drain grace has run out (created on first use, on the running loop)."""
        return self._grace.future()

    def begin_shutdown(self, grace_s: float) -> None:
        """Take no new work; end what still runs after ``grace_s`` seconds."""
        self._grace.begin(grace_s)

    def enter(self) -> None:
        self.active += 1
        self._idle.clear()

    def leave(self) -> None:
        self.active -= 1
        if not self.active:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=timeout_s)


class Relay(Generic[T]):
    """One upstream stream's frames (rendered by ``render``), its bookkeeping done exactly once.

    A class rather than an async generator: a generator that is closed before it
    starts skips its ``finally``, and the lease, the draining count and the
    upstream connection must be released however the response ends.
    """

    def __init__(
        self,
        upstream: UpstreamStream,
        lease: Lease,
        render: Callable[[Frame], T],
        service: GatewayService,
        draining: Draining,
    ) -> None:
        self._upstream = upstream
        self._frames = upstream.frames()
        self._lease = lease
        self._render = render
        self._service = service
        self._draining = draining
        self._samples = 0
        self._closed = False
        draining.enter()

    def __aiter__(self) -> Relay[T]:
        return self

    async def __anext__(self) -> T:
        try:
            frame = await self._frames.__anext__()
        except BaseException:
            await self.aclose()
            raise
        if isinstance(frame, ChunkFrame):
            self._samples += frame.samples
        return self._render(frame)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            aclose = getattr(self._frames, "aclose", None)
            if aclose is not None:
                await aclose()
            await self._upstream.close()
        finally:
            self._service.note_finished(self._upstream, self._samples)
            self._lease.release()
            self._draining.leave()

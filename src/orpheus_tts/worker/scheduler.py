"""Admission control in front of the engine: who runs, who waits, who is refused.

Two policies, chosen with ``--scheduler``:

``deadline`` (the default, :mod:`orpheus_tts.worker.deadline`)
    Streams are admitted while the engine can keep every admitted stream
    ahead of playback (estimated from the measured real-time factor); each
    piece of audio of each admitted stream then takes one of the engine's
    ``capacity`` slots, earliest playback deadline first.
``fifo`` (:class:`FifoScheduler`)
    A request holds one of the ``capacity`` slots for its whole text.

Under both, at most ``max_queue`` streams wait for admission, first come first
served; one more is refused with 503 ``overloaded`` and ``Retry-After``, and a
stream still waiting at its deadline gets 504 ``deadline_exceeded``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from orpheus_tts.engines.pacing import Playback
from orpheus_tts.protocol import ErrorCode, ServiceError

__all__ = ["SCHEDULERS", "Admission", "AdmissionQueue", "FifoScheduler", "Scheduler"]

SCHEDULERS = ("deadline", "fifo")
"""The policies ``--scheduler`` accepts."""


class Admission(Protocol):
    """One admitted stream's hold on its scheduler; released exactly once."""

    def slot(self, playback: Playback, deadline: float) -> AbstractAsyncContextManager[None]:
        """Hold a compute slot for the stream's next piece, due when ``playback`` says.

        Raises :class:`~orpheus_tts.aio.DeadlinePassed` if none is free before
        ``deadline`` (a ``time.monotonic()`` value). The block delivers the
        piece to ``playback`` before it ends, so the next piece's deadline is known.
        """
        ...

    def record(self, compute_s: float, audio_s: float) -> None:
        """A piece of ``audio_s`` seconds took ``compute_s`` seconds to make."""
        ...

    def release(self) -> None:
        """The stream is over: its slot (fifo) or its place (deadline) goes to the next."""
        ...


class Scheduler(Protocol):
    """What the synthesis service needs from an admission policy."""

    name: str
    """``deadline`` or ``fifo``."""
    capacity: int
    """Engine slots: pieces (fifo: whole requests) synthesized at once."""
    max_queue: int
    """Streams that may wait for admission."""

    @property
    def running(self) -> int:
        """Streams admitted and not finished."""
        ...

    @property
    def waiting(self) -> int:
        """Streams waiting for admission."""
        ...

    @property
    def stream_capacity(self) -> int:
        """Streams admitted at once, as estimated now."""
        ...

    async def admit(self, deadline: float) -> Admission:
        """Admit a new stream before ``deadline``; raises ``overloaded`` or ``deadline_exceeded``."""
        ...


class AdmissionQueue:
    """At most ``limit()`` admitted, at most ``max_queue`` waiting, first come first served.

    ``limit`` is read whenever a place may have opened; call :meth:`admit_waiters`
    when it grows.
    """

    def __init__(
        self, limit: Callable[[], int], max_queue: int, retry_after_s: float, describe: Callable[[], str]
    ) -> None:
        self.limit = limit
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self._describe = describe
        self._running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    async def acquire(self, deadline: float) -> None:
        """Take a place before ``deadline`` (a ``time.monotonic()`` value)."""
        if self._running < self.limit() and not self.waiting:
            self._running += 1
            return
        if self.waiting >= self.max_queue:
            raise ServiceError(
                ErrorCode.OVERLOADED,
                f"{self._describe()} and {self.max_queue} requests are queued",
                retry_after_s=self.retry_after_s,
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout=max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            if self._take_back(waiter):
                return
            raise ServiceError(
                ErrorCode.DEADLINE_EXCEEDED, "the deadline passed while the request was queued"
            ) from None
        except BaseException:
            if self._take_back(waiter):
                self.release()
            raise

    def _take_back(self, waiter: asyncio.Future[None]) -> bool:
        """Withdraw a waiter; True if it had already been handed a place."""
        if waiter.done() and not waiter.cancelled():
            return True
        waiter.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        return False

    def release(self) -> None:
        """Give a place back: to the oldest waiter if there is one."""
        self._running -= 1
        self.admit_waiters()

    def admit_waiters(self) -> None:
        """Hand free places to the oldest waiters."""
        while self._waiters and self._running < self.limit():
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._running += 1


class _HeldSlot:
    """A fifo admission: the stream holds its slot from admission to release."""

    def __init__(self, queue: AdmissionQueue) -> None:
        self._queue = queue
        self._released = False

    @contextlib.asynccontextmanager
    async def slot(self, playback: Playback, deadline: float) -> AsyncIterator[None]:
        yield

    def record(self, compute_s: float, audio_s: float) -> None:
        return None

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._queue.release()


class FifoScheduler:
    """At most ``capacity`` requests run, each for its whole text; the rest wait in arrival order."""

    name = "fifo"

    def __init__(self, capacity: int, max_queue: int, retry_after_s: float) -> None:
        self.capacity = capacity
        self.max_queue = max_queue
        self._queue = AdmissionQueue(
            lambda: capacity, max_queue, retry_after_s, lambda: f"all {capacity} slots are busy"
        )

    @property
    def running(self) -> int:
        return self._queue.running

    @property
    def waiting(self) -> int:
        return self._queue.waiting

    @property
    def stream_capacity(self) -> int:
        return self.capacity

    async def admit(self, deadline: float) -> Admission:
        await self._queue.acquire(deadline)
        return _HeldSlot(self._queue)

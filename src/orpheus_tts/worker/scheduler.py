"""Admission control: bounded concurrency in front of the engine, a bounded FIFO queue."""

from __future__ import annotations

import asyncio
import time
from collections import deque

from orpheus_tts.protocol import ErrorCode, ServiceError

__all__ = ["Scheduler"]


class Scheduler:
    """At most ``capacity`` requests run; at most ``max_queue`` wait, first come first served."""

    def __init__(self, capacity: int, max_queue: int, retry_after_s: float) -> None:
        self.capacity = capacity
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self._running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    async def acquire(self, deadline: float) -> None:
        """Take a slot before ``deadline`` (a ``time.monotonic()`` value).

        Raises ``overloaded`` when the queue is full and ``deadline_exceeded``
        when the deadline passes in the queue.
        """
        if self._running < self.capacity and not self.waiting:
            self._running += 1
            return
        if self.waiting >= self.max_queue:
            raise ServiceError(
                ErrorCode.OVERLOADED,
                f"all {self.capacity} slots are busy and {self.max_queue} requests are queued",
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
        """Withdraw a waiter; True if it had already been handed a slot."""
        if waiter.done() and not waiter.cancelled():
            return True
        waiter.cancel()
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass
        return False

    def release(self) -> None:
        """Give a slot back: to the oldest waiter if there is one."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._running -= 1

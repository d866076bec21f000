"""Deadline scheduling: each segment when its stream's playback needs it, earliest deadline first.

The unit of work is one piece of a stream: one step of the engine's
generator, which for the embedded engine is one text segment (sentence or
clause). Every admitted stream's next piece has a deadline
(:class:`StreamClock`):

- its first piece: the moment the request arrived, so time spent queued for
  admission counts, and a newcomer goes before anyone who is still ahead;
- the next ones: the moment its listener would run dry, that is the time of
  its first audio plus the audio delivered so far, minus a safety margin;
- never later than the request's own deadline.

The engine's ``capacity`` slots go to the waiting piece with the earliest
deadline (:class:`ComputeSlots`). Slots never idle while a piece waits, so a
stream far ahead of its playback still runs when nobody needs the slot more,
and waits when someone does.

Streams are admitted while the engine can keep all of them ahead of
playback: ``capacity × target_utilization ÷ rtf`` streams, where ``rtf`` is
compute seconds per audio second over the most recent pieces
(:class:`RtfWindow`), never fewer than ``capacity`` (the fifo policy's
count) nor more than ``max_streams``. Before any piece is measured the
estimate is ``capacity``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from orpheus_tts.aio import DeadlinePassed
from orpheus_tts.worker.scheduler import Admission, AdmissionQueue

__all__ = ["ComputeSlots", "DeadlineScheduler", "RtfWindow", "StreamClock"]


@dataclass
class StreamClock:
    """When a stream's next audio is due; the engine sees it as its :class:`~orpheus_tts.engines.pacing.Playback`."""

    arrived: float
    """When the request arrived (``time.monotonic()``)."""
    deadline: float
    """The request's own deadline (``time.monotonic()``)."""
    margin_s: float
    """Pieces after the first are due this long before the listener would run dry."""
    first_audio: float | None = None
    """When the first audio was delivered; ``None`` before."""
    delivered_s: float = 0.0
    """Seconds of audio delivered."""

    def deliver(self, audio_s: float, now: float | None = None) -> None:
        """``audio_s`` seconds of audio have just been handed to the client."""
        if self.first_audio is None:
            self.first_audio = time.monotonic() if now is None else now
        self.delivered_s += audio_s

    def due(self, ahead_s: float = 0.0) -> float:
        """When the audio starting ``ahead_s`` seconds after what was delivered is needed."""
        if self.first_audio is None:
            due = self.arrived + ahead_s
        else:
            due = self.first_audio + self.delivered_s + ahead_s - self.margin_s
        return min(due, self.deadline)

    def lead_s(self, now: float | None = None) -> float:
        """Seconds of delivered audio the listener has not heard yet (0 before the first audio)."""
        if self.first_audio is None:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(0.0, self.first_audio + self.delivered_s - now)


class ComputeSlots:
    """``slots`` engine slots, granted earliest deadline first (ties: first come)."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self._free = slots
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def busy(self) -> int:
        """Slots held now."""
        return self.slots - self._free

    @property
    def waiting(self) -> int:
        """Pieces waiting for a slot."""
        return sum(1 for _, _, f in self._heap if not f.done())

    def next_due(self) -> float | None:
        """The earliest deadline among the waiting pieces."""
        for due, _, future in sorted(self._heap):
            if not future.done():
                return due
        return None

    async def acquire(self, due: float, deadline: float) -> None:
        """Take a slot; the waiting piece with the earliest ``due`` is served first.

        Raises :class:`DeadlinePassed` if no slot came before ``deadline``. A
        cancelled wait leaves nothing behind (and gives back a slot it was
        handed in the meantime).
        """
        if self._free and not self.waiting:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (due, next(self._order), future))
        try:
            await asyncio.wait({future}, timeout=max(0.0, deadline - time.monotonic()))
        except BaseException:
            self._withdraw(future)
            raise
        if future.done() and not future.cancelled():
            return
        self._withdraw(future)
        raise DeadlinePassed

    def _withdraw(self, future: asyncio.Future[None]) -> None:
        if future.done() and not future.cancelled():
            self.release()  # handed a slot nobody will use: pass it on
            return
        future.cancel()  # the heap drops it lazily

    def release(self) -> None:
        """Give a slot back: to the waiting piece with the earliest deadline."""
        while self._heap:
            _, _, future = heapq.heappop(self._heap)
            if not future.done():
                future.set_result(None)
                return
        self._free += 1


class RtfWindow:
    """Compute seconds per audio second over the most recent ``size`` pieces."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self._pieces: deque[tuple[float, float]] = deque(maxlen=size)
        self._compute_s = 0.0
        self._audio_s = 0.0

    def add(self, compute_s: float, audio_s: float) -> None:
        if audio_s <= 0:
            return
        if len(self._pieces) == self._pieces.maxlen:
            old_compute, old_audio = self._pieces[0]
            self._compute_s -= old_compute
            self._audio_s -= old_audio
        self._pieces.append((compute_s, audio_s))
        self._compute_s += compute_s
        self._audio_s += audio_s

    @property
    def pieces(self) -> int:
        return len(self._pieces)

    def value(self) -> float | None:
        """The real-time factor, or ``None`` before the first piece."""
        if not self._pieces or self._audio_s <= 0:
            return None
        return max(0.0, self._compute_s) / self._audio_s


class _Ticket:
    """A stream admitted by a :class:`DeadlineScheduler`."""

    def __init__(self, scheduler: DeadlineScheduler) -> None:
        self._scheduler = scheduler
        self._released = False

    @contextlib.asynccontextmanager
    async def slot(self, due: float, deadline: float) -> AsyncIterator[None]:
        slots = self._scheduler.slots
        await slots.acquire(due, deadline)
        try:
            yield
        finally:
            slots.release()

    def record(self, compute_s: float, audio_s: float) -> None:
        self._scheduler.record(compute_s, audio_s)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._scheduler.queue.release()


class DeadlineScheduler:
    """Admission by estimated real-time stream capacity, then EDF over the engine's slots."""

    name = "deadline"

    def __init__(
        self,
        capacity: int,
        max_queue: int,
        retry_after_s: float,
        *,
        max_streams: int,
        target_utilization: float,
        rtf_window_pieces: int,
    ) -> None:
        if max_streams < 1:
            raise ValueError("max_streams must be at least 1")
        if not 0 < target_utilization <= 1:
            raise ValueError("target_utilization must be in (0, 1]")
        self.capacity = capacity
        self.max_queue = max_queue
        self.max_streams = max_streams
        self.target_utilization = target_utilization
        self.slots = ComputeSlots(capacity)
        self.rtf = RtfWindow(rtf_window_pieces)
        self.queue = AdmissionQueue(
            lambda: self.stream_capacity,
            max_queue,
            retry_after_s,
            lambda: f"{self.running} streams use the estimated capacity of {self.stream_capacity}",
        )

    @property
    def running(self) -> int:
        return self.queue.running

    @property
    def waiting(self) -> int:
        return self.queue.waiting

    @property
    def stream_capacity(self) -> int:
        rtf = self.rtf.value()
        if rtf is None:
            estimate = self.capacity
        elif rtf <= 0:
            estimate = self.max_streams
        else:
            estimate = max(self.capacity, math.floor(self.capacity * self.target_utilization / rtf))
        return max(1, min(self.max_streams, estimate))

    def record(self, compute_s: float, audio_s: float) -> None:
        """Feed the estimate; streams queued for admission get in if it grew."""
        self.rtf.add(compute_s, audio_s)
        self.queue.admit_waiters()

    async def admit(self, deadline: float) -> Admission:
        await self.queue.acquire(deadline)
        return _Ticket(self)

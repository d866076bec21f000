"""Deadline scheduling: each segment when its stream's playback needs it, earliest deadline first.

The unit of work is one piece of a stream: one step of the engine's
generator, which for the embedded engine is one text segment (sentence or
clause). Every admitted stream's next piece has a deadline
(:class:`StreamClock`):

- its first piece: the moment the request arrived, so time spent queued for
  admission counts, and a newcomer goes before anyone who is still ahead;
- the next ones: the moment its listener would run dry, that is the time of
  its first audio plus the audio delivered so far, minus a safety margin and
  minus the time the piece is expected to take (the previous one's);
- a stream whose listener still holds audio (``playback_lead_s``: a realtime
  session's later segment) is timed from when that audio runs out, its
  first piece included;
- never later than the request's own deadline.

The engine's ``capacity`` slots go to the waiting piece with the earliest
deadline (:class:`ComputeSlots`). Slots do not idle while a piece waits, so a
stream far ahead of its playback still runs when nobody needs the slot more,
and waits when someone does; among streams that far ahead, the oldest goes
first, so it finishes and frees its place for a stream waiting to be admitted.

Streams are admitted while the engine can keep all of them ahead of
playback: ``target_utilization ÷ rtf`` streams, where ``rtf`` is the
engine's real-time factor over the most recent pieces (:class:`RtfWindow`):
seconds during which any slot was busy per second of audio made. Counting
busy wall time rather than each piece's own compute time keeps the estimate
right for an engine whose single piece already uses every core (the
embedded voice); an engine whose slots really run in parallel is
underestimated while few run, which only errs on the safe side. The estimate
is never below ``capacity`` (the fifo policy's count) nor above
``max_streams``; before any piece is measured it is ``capacity``. A stream
whose next piece is not due for more than ``free_lead_s`` needs nothing for
that long and does not count against it, so a stream waiting for admission
need not wait for whole texts of audio nobody will hear yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from orpheus_tts.aio import DeadlinePassed
from orpheus_tts.engines.pacing import Playback
from orpheus_tts.worker.scheduler import Admission, AdmissionQueue

__all__ = [
    "DEFAULT_FREE_LEAD_S",
    "DEFAULT_IDLE_GRACE_S",
    "DEFAULT_URGENT_HORIZON_S",
    "ComputeSlots",
    "DeadlineScheduler",
    "RtfWindow",
    "StreamClock",
]

DEFAULT_IDLE_GRACE_S = 0.02
"""How long a slot kept between two pieces of one stream may idle while a less urgent piece waits."""
DEFAULT_URGENT_HORIZON_S = 1.0
"""Pieces due within this many seconds are served earliest deadline first, before any piece due later."""
DEFAULT_FREE_LEAD_S = 5.0
"""An admitted stream whose next piece is due further ahead than this does not count against the capacity."""


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
    next_compute_s: float = 0.0
    """Expected compute time of the next piece (the last one's): it must start that much earlier."""
    held_s: float = 0.0
    """Seconds of audio the listener still had to play when the request arrived (a realtime
    session's later segment): its playback starts no sooner than that."""

    def deliver(self, audio_s: float, now: float | None = None) -> None:
        """``audio_s`` seconds of audio have just been handed to the client."""
        if self.first_audio is None:
            self.first_audio = time.monotonic() if now is None else now
        self.delivered_s += audio_s

    @property
    def plays_from(self) -> float | None:
        """When the listener starts hearing this stream: its first audio, or later if it still held audio."""
        if self.first_audio is None:
            return self.arrived + self.held_s if self.held_s > 0 else None
        return max(self.first_audio, self.arrived + self.held_s)

    def due(self, ahead_s: float = 0.0) -> float:
        """When the audio starting ``ahead_s`` seconds after what was delivered is needed."""
        start = self.plays_from
        if start is None:
            due = self.arrived + ahead_s
        else:
            due = start + self.delivered_s + ahead_s - self.margin_s - self.next_compute_s
        return min(due, self.deadline)

    def lead_s(self, now: float | None = None) -> float:
        """Seconds of audio the listener has and has not heard yet (0 before the first audio)."""
        start = self.plays_from
        if self.first_audio is None or start is None:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(0.0, start + self.delivered_s - now)


@dataclass
class _Waiter:
    due: float
    rank: float
    seq: int
    future: asyncio.Future[None]


class ComputeSlots:
    """``slots`` engine slots, granted earliest deadline first.

    Pieces due within ``horizon_s`` are served earliest deadline first; pieces
    of streams further ahead than that only get slots nobody urgent wants, and
    then by ``rank`` (the stream's admission order), so the oldest stream
    finishes first and frees its place instead of every stream inching ahead
    together. Ties go to the first come.

    A holder that finishes a piece and is still the most urgent keeps its slot
    for its next piece (:meth:`pause`), so a stream about to run dry is not
    overtaken in the instant between two of its pieces; a waiter that is more
    urgent takes such an idle slot at once, and a less urgent one after
    ``idle_grace_s`` (a holder that does not come back soon is stuck on
    something else, such as a slow reader).
    """

    def __init__(
        self,
        slots: int,
        idle_grace_s: float = DEFAULT_IDLE_GRACE_S,
        clock: Callable[[], float] = time.monotonic,
        horizon_s: float = DEFAULT_URGENT_HORIZON_S,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self.idle_grace_s = idle_grace_s
        self.horizon_s = horizon_s
        self._clock = clock
        self._busy_total_s = 0.0
        self._busy_since: float | None = None
        self._computing = 0
        self._free = slots
        self._waiters: list[_Waiter] = []
        self._order = itertools.count()
        self._idle: dict[object, tuple[float, float, asyncio.TimerHandle | None]] = {}
        """Holder -> (due of its next piece, rank, expiry timer) for slots kept between two pieces."""

    @property
    def busy(self) -> int:
        """Slots held now (idle ones kept between pieces included)."""
        return self.slots - self._free

    @property
    def waiting(self) -> int:
        """Pieces waiting for a slot."""
        return sum(1 for w in self._waiters if not w.future.done())

    def busy_seconds(self) -> float:
        """Wall-clock seconds, since creation, during which at least one slot computed (see :meth:`begin`)."""
        if self._busy_since is None:
            return self._busy_total_s
        return self._busy_total_s + self._clock() - self._busy_since

    def begin(self) -> None:
        """A holder starts computing a piece (a slot kept idle between pieces is not busy)."""
        if self._computing == 0:
            self._busy_since = self._clock()
        self._computing += 1

    def end(self) -> None:
        """A holder is done computing its piece."""
        self._computing -= 1
        if self._computing == 0 and self._busy_since is not None:
            self._busy_total_s += self._clock() - self._busy_since
            self._busy_since = None

    def _key(self, due: float, rank: float, seq: int, now: float) -> tuple[int, float, int]:
        return (0, due, seq) if due - now <= self.horizon_s else (1, rank, seq)

    def _best(self) -> _Waiter | None:
        now = self._clock()
        live = [w for w in self._waiters if not w.future.done()]
        self._waiters = live
        return min(live, key=lambda w: self._key(w.due, w.rank, w.seq, now), default=None)

    def next_due(self) -> float | None:
        """The deadline of the piece that would get the next free slot."""
        best = self._best()
        return None if best is None else best.due

    async def acquire(self, due: float, deadline: float, holder: object = None, rank: float | None = None) -> None:
        """Take a slot for a piece due at ``due`` (see the class docstring for who goes first).

        A ``holder`` that kept its slot (:meth:`pause`) gets it straight back.
        Raises :class:`DeadlinePassed` if no slot came before ``deadline``. A
        cancelled wait leaves nothing behind (and gives back a slot it was
        handed in the meantime).
        """
        if holder is not None and holder in self._idle:
            self._unidle(holder)
            return
        rank = due if rank is None else rank
        seq = next(self._order)
        if self._free and not self.waiting:
            self._take_free()
            return
        now = self._clock()
        mine = self._key(due, rank, seq, now)
        later = [h for h, (d, r, _) in self._idle.items() if self._key(d, r, -1, now) > mine]
        if later:  # the least urgent idle holder loses its slot
            self._unidle(max(later, key=lambda h: self._key(self._idle[h][0], self._idle[h][1], -1, now)))
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(_Waiter(due, rank, seq, future))
        self._arm_idle()
        timeout = None if math.isinf(deadline) else max(0.0, deadline - time.monotonic())
        try:
            await asyncio.wait({future}, timeout=timeout)
        except BaseException:
            self._withdraw(future)
            raise
        if future.done() and not future.cancelled():
            return
        self._withdraw(future)
        raise DeadlinePassed

    def pause(self, holder: object, next_due: float, rank: float | None = None) -> None:
        """``holder`` finished a piece; it keeps the slot unless a waiting piece goes before its next one."""
        rank = next_due if rank is None else rank
        best = self._best()
        now = self._clock()
        if best is not None and self._key(best.due, best.rank, best.seq, now) < self._key(next_due, rank, -1, now):
            self.release()
            return
        self._idle[holder] = (next_due, rank, None)
        self._arm_idle()

    def drop(self, holder: object) -> None:
        """``holder`` wants no more pieces: a slot it kept goes to the next."""
        if holder in self._idle:
            self._unidle(holder)
            self.release()

    def release(self) -> None:
        """Give a slot back: to the waiting piece that goes first."""
        best = self._best()
        if best is not None:
            self._waiters.remove(best)
            best.future.set_result(None)
            return
        self._give_free()

    def _take_free(self) -> None:
        self._free -= 1

    def _give_free(self) -> None:
        self._free += 1

    def _unidle(self, holder: object) -> None:
        _, _, timer = self._idle.pop(holder)
        if timer is not None:
            timer.cancel()

    def _arm_idle(self) -> None:
        if not self.waiting:
            return
        loop = asyncio.get_running_loop()
        for holder, (due, rank, timer) in list(self._idle.items()):
            if timer is None:
                self._idle[holder] = (due, rank, loop.call_later(self.idle_grace_s, self.drop, holder))

    def _withdraw(self, future: asyncio.Future[None]) -> None:
        if future.done() and not future.cancelled():
            self.release()  # handed a slot nobody will use: pass it on
            return
        future.cancel()  # dropped from the waiters lazily


class RtfWindow:
    """Busy seconds per audio second over the most recent ``size`` pieces (or compute seconds per
    character of text, over complete streams: any ratio of time to work done)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self._pieces: deque[tuple[float, float]] = deque(maxlen=size)
        self._carry_s = 0.0
        self._compute_s = 0.0
        self._audio_s = 0.0

    def add(self, compute_s: float, audio_s: float) -> None:
        if audio_s <= 0:
            self._carry_s += compute_s  # counted with the next piece that has audio
            return
        compute_s, self._carry_s = compute_s + self._carry_s, 0.0
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

    def __init__(self, scheduler: DeadlineScheduler, rank: float) -> None:
        self._scheduler = scheduler
        self._rank = rank
        """When the stream was admitted: among streams far ahead, the oldest goes first."""
        self._released = False
        self.playback: Playback | None = None
        """The stream's clock, once it asked for its first slot."""

    @contextlib.asynccontextmanager
    async def slot(self, playback: Playback, deadline: float) -> AsyncIterator[None]:
        self.playback = playback
        slots = self._scheduler.slots
        await slots.acquire(playback.due(), deadline, holder=self, rank=self._rank)
        slots.begin()
        try:
            yield
        except BaseException:
            slots.end()
            slots.release()
            raise
        slots.end()
        slots.pause(self, playback.due(), rank=self._rank)

    def record(self, compute_s: float, audio_s: float) -> None:
        self._scheduler.record(compute_s, audio_s)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._scheduler.slots.drop(self)
            self._scheduler.tickets.discard(self)
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
        free_lead_s: float = DEFAULT_FREE_LEAD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_streams < 1:
            raise ValueError("max_streams must be at least 1")
        if not 0 < target_utilization <= 1:
            raise ValueError("target_utilization must be in (0, 1]")
        self.capacity = capacity
        self.max_queue = max_queue
        self.max_streams = max_streams
        self.target_utilization = target_utilization
        self.free_lead_s = free_lead_s
        self.slots = ComputeSlots(capacity, clock=clock)
        self.rtf = RtfWindow(rtf_window_pieces)
        self.tickets: set[_Ticket] = set()
        """Admitted streams."""
        self._clock = clock
        self._busy_mark_s = 0.0
        self.queue = AdmissionQueue(
            lambda: self.stream_capacity + self.far_ahead,
            max_queue,
            retry_after_s,
            lambda: f"{self.running} streams are running (estimated capacity {self.stream_capacity})",
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
            estimate = max(self.capacity, math.floor(self.target_utilization / rtf))
        return max(1, min(self.max_streams, estimate))

    @property
    def far_ahead(self) -> int:
        """Admitted streams whose next piece is due more than ``free_lead_s`` from now."""
        limit = self._clock() + self.free_lead_s
        return sum(1 for t in self.tickets if t.playback is not None and t.playback.due() > limit)

    def record(self, compute_s: float, audio_s: float) -> None:
        """A piece was made: feed the estimate (with the busy time since the last piece); streams
        queued for admission get in if it grew. ``compute_s`` is the piece's own time, not used."""
        busy = self.slots.busy_seconds()
        self.rtf.add(busy - self._busy_mark_s, audio_s)
        self._busy_mark_s = busy
        self.queue.admit_waiters()

    async def admit(self, deadline: float) -> Admission:
        await self.queue.acquire(deadline)
        ticket = _Ticket(self, self._clock())
        self.tickets.add(ticket)
        return ticket

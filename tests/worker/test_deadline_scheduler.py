"""The deadline scheduler's parts, driven directly: EDF slots, stream clocks, the capacity estimate.

The simulation at the end runs the real :class:`ComputeSlots` on a simulated
clock (one slot: each piece advances the clock by its cost), so whole
schedules are exact and repeatable.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from orpheus_tts.aio import DeadlinePassed
from orpheus_tts.protocol import ServiceError
from orpheus_tts.worker.deadline import ComputeSlots, DeadlineScheduler, RtfWindow, StreamClock
from tests.eventually import eventually

FAR = math.inf


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_slots_go_to_the_earliest_deadline_first() -> None:
    slots = ComputeSlots(1)
    await slots.acquire(0.0, FAR)
    order: list[str] = []

    async def want(name: str, due: float) -> None:
        await slots.acquire(due, FAR)
        order.append(name)
        slots.release()

    tasks = [asyncio.ensure_future(want(n, d)) for n, d in (("late", 30.0), ("early", 10.0), ("middle", 20.0))]
    await _settle()
    assert slots.waiting == 3
    assert slots.next_due() == 10.0
    slots.release()
    await asyncio.gather(*tasks)
    assert order == ["early", "middle", "late"]
    assert (slots.busy, slots.waiting) == (0, 0)


async def test_equal_deadlines_are_served_in_arrival_order() -> None:
    slots = ComputeSlots(1)
    await slots.acquire(0.0, FAR)
    order: list[int] = []

    async def want(n: int) -> None:
        await slots.acquire(5.0, FAR)
        order.append(n)
        slots.release()

    tasks = []
    for n in range(4):
        tasks.append(asyncio.ensure_future(want(n)))
        await _settle()
    slots.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]


async def test_a_cancelled_wait_frees_its_place_and_leaks_no_slot() -> None:
    slots = ComputeSlots(1)
    await slots.acquire(0.0, FAR)
    cancelled = asyncio.ensure_future(slots.acquire(1.0, FAR))
    behind = asyncio.ensure_future(slots.acquire(2.0, FAR))
    await _settle()
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert slots.waiting == 1
    slots.release()
    await asyncio.wait_for(behind, 5)
    slots.release()
    assert (slots.busy, slots.waiting) == (0, 0)


async def test_a_wait_cancelled_after_its_grant_passes_the_slot_on() -> None:
    slots = ComputeSlots(1)
    await slots.acquire(0.0, FAR)
    granted = asyncio.ensure_future(slots.acquire(1.0, FAR))
    behind = asyncio.ensure_future(slots.acquire(2.0, FAR))
    await _settle()
    slots.release()  # hands the slot to `granted`'s future...
    granted.cancel()  # ...but its task is cancelled before it resumes
    await asyncio.gather(granted, return_exceptions=True)
    await asyncio.wait_for(behind, 5)
    slots.release()
    assert (slots.busy, slots.waiting) == (0, 0)


async def test_a_holder_still_most_urgent_keeps_its_slot_for_its_next_piece() -> None:
    slots = ComputeSlots(1, idle_grace_s=3600)
    holder, other = object(), object()
    await slots.acquire(1.0, FAR, holder=holder)
    later = asyncio.ensure_future(slots.acquire(5.0, FAR, holder=other))
    await _settle()
    slots.pause(holder, 2.0)  # its next piece (due 2) is more urgent than the waiter's (due 5)
    await _settle()
    assert not later.done()
    await asyncio.wait_for(slots.acquire(2.0, FAR, holder=holder), 1)  # straight back
    slots.pause(holder, 9.0)  # now the waiter is more urgent: it gets the slot
    await asyncio.wait_for(later, 5)
    urgent = asyncio.ensure_future(slots.acquire(0.5, FAR))
    slots.pause(other, 7.0)
    await asyncio.wait_for(urgent, 5)
    slots.release()
    slots.drop(holder)
    assert (slots.busy, slots.waiting) == (0, 0)


async def test_a_kept_slot_goes_to_a_waiter_when_its_holder_does_not_come_back() -> None:
    slots = ComputeSlots(1, idle_grace_s=0.01)
    holder = object()
    await slots.acquire(1.0, FAR, holder=holder)
    slots.pause(holder, 2.0)
    waiter = asyncio.ensure_future(slots.acquire(5.0, FAR))  # less urgent, but the slot idles
    await asyncio.wait_for(waiter, 5)
    slots.release()
    assert (slots.busy, slots.waiting) == (0, 0)


async def test_no_slot_before_the_deadline_raises_and_leaves_nothing() -> None:
    slots = ComputeSlots(1)
    await slots.acquire(0.0, FAR)
    with pytest.raises(DeadlinePassed):
        await slots.acquire(1.0, time.monotonic() - 1)
    assert slots.waiting == 0
    slots.release()
    assert slots.busy == 0


def test_stream_clock_deadlines() -> None:
    clock = StreamClock(arrived=100.0, deadline=160.0, margin_s=0.5)
    assert clock.due() == 100.0, "the first piece is due on arrival: queueing counts against it"
    clock.deliver(2.0, now=101.0)
    assert clock.due() == pytest.approx(102.5), "first audio + delivered - margin"
    assert clock.due(ahead_s=1.0) == pytest.approx(103.5)
    assert clock.lead_s(now=101.5) == pytest.approx(1.5)
    clock.deliver(100.0, now=101.0)
    assert clock.due() == 160.0, "never later than the request's deadline"


def test_stream_clock_of_a_listener_that_still_holds_audio() -> None:
    clock = StreamClock(arrived=100.0, deadline=160.0, margin_s=0.5, held_s=3.0)
    assert clock.due() == pytest.approx(102.5), "heard once the held audio runs out, minus the margin"
    clock.deliver(2.0, now=100.2)
    assert clock.plays_from == pytest.approx(103.0)
    assert clock.due() == pytest.approx(104.5)
    assert clock.lead_s(now=101.0) == pytest.approx(4.0)
    late = StreamClock(arrived=100.0, deadline=160.0, margin_s=0.5, held_s=0.1)
    late.deliver(1.0, now=101.0)  # its first audio came after the held audio ran out: playback starts then
    assert late.plays_from == pytest.approx(101.0)
    assert late.due() == pytest.approx(101.5)


def test_rtf_window_keeps_only_the_recent_pieces() -> None:
    window = RtfWindow(2)
    assert window.value() is None
    window.add(1.0, 1.0)
    window.add(0.1, 1.0)
    window.add(0.3, 1.0)
    assert window.pieces == 2
    assert window.value() == pytest.approx(0.2)
    window.add(0.5, 0.0)  # no audio: its time counts with the next piece
    window.add(0.5, 1.0)
    assert window.value() == pytest.approx((0.3 + 1.0) / 2)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _make_piece(scheduler: DeadlineScheduler, clock: FakeClock, busy_s: float, audio_s: float) -> None:
    """One piece of ``audio_s`` seconds made in ``busy_s`` seconds of slot time."""
    await scheduler.slots.acquire(0.0, FAR)
    scheduler.slots.begin()
    clock.now += busy_s
    scheduler.slots.end()
    scheduler.slots.release()
    scheduler.record(busy_s, audio_s)


def _scheduler(clock: FakeClock, slots: int = 2, max_queue: int = 0, **overrides: object) -> DeadlineScheduler:
    options: dict[str, object] = {"max_streams": 64, "target_utilization": 0.8, "rtf_window_pieces": 8}
    options.update(overrides)
    return DeadlineScheduler(slots, max_queue, 2.0, clock=clock, **options)  # type: ignore[arg-type]


async def test_capacity_estimate_from_the_measured_real_time_factor() -> None:
    clock = FakeClock()
    scheduler = _scheduler(clock)
    assert scheduler.stream_capacity == 2, "before any measurement: one stream per slot, as fifo"
    await _make_piece(scheduler, clock, 0.1, 2.0)
    assert scheduler.stream_capacity == 16, "0.8 / (0.1 busy s per 2 audio s)"
    clock.now += 100.0  # idle time is not busy time: the estimate stands
    assert scheduler.stream_capacity == 16
    for _ in range(8):
        await _make_piece(scheduler, clock, 2.0, 1.0)
    assert scheduler.stream_capacity == 2, "an engine slower than real time still runs one stream per slot"
    fast = _scheduler(clock, max_streams=10)
    await _make_piece(fast, clock, 0.001, 1.0)
    assert fast.stream_capacity == 10, "capped by max_streams"


async def test_busy_time_counts_once_however_many_slots_compute() -> None:
    clock = FakeClock()
    slots = ComputeSlots(2, clock=clock)
    slots.begin()
    clock.now += 1.0
    slots.begin()
    clock.now += 1.0
    slots.end()
    clock.now += 1.0
    slots.end()
    clock.now += 5.0  # idle (or a slot kept between pieces): not busy
    assert slots.busy_seconds() == 3.0


async def test_admission_refuses_at_the_estimated_capacity_and_admits_when_it_grows() -> None:
    clock = FakeClock()
    scheduler = _scheduler(clock, slots=1, max_queue=1, target_utilization=1.0, rtf_window_pieces=1)
    await _make_piece(scheduler, clock, 0.5, 1.0)
    assert scheduler.stream_capacity == 2
    deadline = time.monotonic() + 60
    held = [await scheduler.admit(deadline), await scheduler.admit(deadline)]
    queued = asyncio.ensure_future(scheduler.admit(deadline))
    assert await eventually(lambda: scheduler.waiting == 1)
    with pytest.raises(ServiceError) as refused:
        await scheduler.admit(deadline)
    assert refused.value.code.value == "overloaded"
    assert refused.value.retry_after_s == 2.0
    assert "estimated capacity 2" in str(refused.value)
    await _make_piece(scheduler, clock, 0.25, 1.0)  # the engine turns out faster: room for a fourth
    third = await asyncio.wait_for(queued, 5)
    assert (scheduler.running, scheduler.waiting, scheduler.stream_capacity) == (3, 0, 4)
    for ticket in [*held, third]:
        ticket.release()
        ticket.release()  # idempotent
    assert scheduler.running == 0


# ------------------------------------------------------------------ simulated schedules


@dataclass(eq=False)
class SimStream:
    name: str
    arrive_s: float
    pieces: int
    cost_s: float
    """Compute per piece (each piece is PIECE_S of audio)."""
    margin_s: float = 0.5
    starts: list[float] = field(default_factory=list)
    """Simulated time at which each piece started."""
    ready: list[float] = field(default_factory=list)
    """Simulated time at which each piece was delivered."""


PIECE_S = 0.1


def _gaps(stream: SimStream, jitter_s: float = 0.0) -> list[float]:
    """Stalls of a listener who starts playing when the first piece is ready."""
    playhead = stream.ready[0] + jitter_s
    gaps = []
    for at in stream.ready:
        if at > playhead:
            gaps.append(at - playhead)
            playhead = at
        playhead += PIECE_S
    return gaps


async def _simulate(streams: list[SimStream]) -> list[str]:
    """Run ``streams`` on one EDF slot in simulated time; returns the piece order by stream name."""
    now = [0.0]
    slots = ComputeSlots(1, idle_grace_s=3600, clock=lambda: now[0])  # holders always come straight back here
    order: list[str] = []
    arrived: dict[str, asyncio.Event] = {s.name: asyncio.Event() for s in streams}

    async def run(stream: SimStream) -> None:
        await arrived[stream.name].wait()
        clock = StreamClock(arrived=stream.arrive_s, deadline=FAR, margin_s=stream.margin_s)
        for _ in range(stream.pieces):
            await slots.acquire(clock.due(), FAR, holder=stream, rank=stream.arrive_s)
            start = max(now[0], stream.arrive_s)
            stream.starts.append(start)
            order.append(stream.name)
            now[0] = start + stream.cost_s
            # Everyone who has arrived by now queues before the slot is handed on.
            for other in streams:
                if other.arrive_s <= now[0] and not arrived[other.name].is_set():
                    arrived[other.name].set()
            await _settle()
            stream.ready.append(now[0])
            clock.deliver(PIECE_S, now=now[0])
            slots.pause(stream, clock.due(), rank=stream.arrive_s)
            await _settle()
        slots.drop(stream)

    for s in streams:
        if s.arrive_s <= 0:
            arrived[s.name].set()
    tasks = [asyncio.ensure_future(run(s)) for s in streams]
    while not all(t.done() for t in tasks):
        await _settle()
        if not slots.busy and not slots.waiting:
            # Idle: jump to the next arrival.
            pending = [s for s in streams if not arrived[s.name].is_set()]
            if pending:
                nxt = min(pending, key=lambda s: s.arrive_s)
                now[0] = max(now[0], nxt.arrive_s)
                arrived[nxt.name].set()
    await asyncio.gather(*tasks)
    return order


async def test_sim_a_newcomer_goes_before_a_stream_far_ahead() -> None:
    ahead = SimStream("ahead", 0.0, pieces=100, cost_s=0.01)
    newcomer = SimStream("new", 0.3, pieces=10, cost_s=0.01)
    order = await _simulate([ahead, newcomer])
    first_new = order.index("new")
    assert order[first_new : first_new + 10] == ["new"] * 10, "its later pieces too: it is close to running dry"
    assert ahead.starts[order[:first_new].count("ahead") - 1] <= newcomer.arrive_s, "no ahead piece after it came"
    assert not _gaps(ahead)
    assert not _gaps(newcomer)


async def test_sim_the_stream_closest_to_running_dry_is_served_first() -> None:
    # Two established streams: "thin" has little audio in hand, "thick" much; both want the slot.
    thick = SimStream("thick", 0.0, pieces=60, cost_s=0.01)
    thin = SimStream("thin", 0.2, pieces=30, cost_s=0.08)
    order = await _simulate([thick, thin])
    assert not _gaps(thin), "the slow stream never runs dry: it is served whenever it is closer to dry"
    assert not _gaps(thick)
    # While thin is within its margin of running dry, thick (seconds ahead) does not get the slot.
    i = order.index("thin")
    assert "thick" not in order[i : i + 5]


async def test_sim_no_stream_starves_under_a_stream_of_newcomers() -> None:
    # One long stream, and a newcomer every 50 ms for 2 s: newcomers go first while it is ahead,
    # but its own deadline comes round and it is served before it runs dry.
    long = SimStream("long", 0.0, pieces=80, cost_s=0.01)
    newcomers = [SimStream(f"n{i}", 0.05 * i, pieces=2, cost_s=0.02) for i in range(1, 41)]
    order = await _simulate([long, *newcomers])
    assert len(order) == 80 + 80
    assert not _gaps(long), "the long stream made progress within its deadlines"
    waits = [b - a for a, b in zip(long.ready, long.starts[1:], strict=False)]
    assert max(waits) < long.margin_s + PIECE_S * 5, "bounded: never held back much past its margin"
    for n in newcomers:
        assert n.starts[0] - n.arrive_s < 0.2, "and every newcomer still got its first piece soon"


class FixedPlayback:
    def __init__(self, due: float) -> None:
        self._due = due

    def due(self, ahead_s: float = 0.0) -> float:
        return self._due + ahead_s


async def test_a_stream_far_ahead_of_its_listener_does_not_count_against_the_capacity() -> None:
    clock = FakeClock()
    scheduler = _scheduler(clock, slots=1, max_queue=1, target_utilization=1.0, rtf_window_pieces=1)
    await _make_piece(scheduler, clock, 0.5, 1.0)
    deadline = time.monotonic() + 60
    # The deadline scheduler's admissions carry a playback clock the test sets directly.
    ahead: Any = await scheduler.admit(deadline)
    near: Any = await scheduler.admit(deadline)
    queued = asyncio.ensure_future(scheduler.admit(deadline))
    assert await eventually(lambda: scheduler.waiting == 1)
    near.playback = FixedPlayback(clock.now + 1.0)  # needs audio soon: counts
    ahead.playback = FixedPlayback(clock.now + scheduler.free_lead_s + 1.0)  # needs nothing for a while
    assert scheduler.far_ahead == 1
    await _make_piece(scheduler, clock, 0.5, 1.0)  # any piece re-checks the queue
    third = await asyncio.wait_for(queued, 5)
    assert scheduler.running == 3
    for ticket in (ahead, near, third):
        ticket.release()
    assert scheduler.running == 0

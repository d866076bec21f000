"""The deadline scheduler through a real worker: the test engine's journal shows the schedule.

The engine has one slot and computes each 100 ms piece when asked for it
(a sleep of ``compute_s_per_audio_s`` x 100 ms), recording the order in which
pieces start. A long stream that has run alone for a while is seconds ahead
of its listener; the tests then add other streams and read, from the
journal, who got the slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from orpheus_tts.engines.testing import ToneEngine, render
from orpheus_tts.worker.app import create_app
from orpheus_tts.worker.config import WorkerConfig
from tests.eventually import eventually
from tests.servers import run_server
from tests.streams import stream_tts

LONG = "A long story that goes on and on. " * 60
"""About 20 s of audio: 240 pieces."""
SHORT = "A newcomer says hello."
AHEAD_PIECES = 40
"""Pieces the long stream makes alone before the others come: it is then seconds ahead."""


@contextmanager
def worker(scheduler: str = "deadline", **config: Any) -> Iterator[tuple[str, ToneEngine, Any]]:
    engine = ToneEngine(capacity=1, compute_s_per_audio_s=0.2, faults=True)
    app = create_app(engine, WorkerConfig(scheduler=scheduler, **config))  # type: ignore[arg-type]
    with run_server(app) as url:
        yield url, engine, app.state.service


def _pieces_of(engine: ToneEngine, text: str) -> list[int]:
    """Positions in the journal of ``text``'s pieces."""
    return [i for i, p in enumerate(engine.journal) if p.text == text]


async def _start_long(url: str, engine: ToneEngine) -> asyncio.Future[Any]:
    long = asyncio.ensure_future(stream_tts(url, {"text": LONG}))
    assert await eventually(lambda: len(_pieces_of(engine, LONG)) >= AHEAD_PIECES, within_s=30)
    return long


async def _stop(task: asyncio.Future[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("scheduler", ["deadline", "fifo"])
async def test_a_newcomers_first_piece_goes_before_a_stream_far_ahead(scheduler: str) -> None:
    with worker(scheduler, max_queue=4) as (url, engine, _):
        long = await _start_long(url, engine)
        mark = len(engine.journal)
        newcomer = await asyncio.wait_for(stream_tts(url, {"text": SHORT}), 30)
        assert newcomer.status == 200
        assert newcomer.pcm == render(SHORT)
        mine = _pieces_of(engine, SHORT)
        long_before_mine = sum(1 for p in list(engine.journal)[mark : mine[0]] if p.text == LONG)
        interleaved = sum(1 for p in list(engine.journal)[mine[0] : mine[-1]] if p.text == LONG)
        long_pieces = _pieces_of(engine, LONG)
        await _stop(long)
    if scheduler == "fifo":
        # One slot per request: the newcomer waited for the whole long text.
        assert mine[0] > long_pieces[-1]
        return
    # Deadline: at most the long stream's pieces already under way (and sent while the request travelled).
    assert long_before_mine <= 10
    assert interleaved == 0, "its later pieces too: it is closer to running dry than the long stream"


async def test_a_stream_close_to_running_dry_is_served_before_one_far_ahead() -> None:
    # The slow stream makes 100 ms of audio in 80 ms, so it never gets far ahead; every one of its
    # pieces after the first competes with the long stream's, and must win.
    slow = {"text": "A slow stream keeps its listener waiting. " * 2, "fault_piece_delay_ms": 60}
    with worker() as (url, engine, _):
        long = await _start_long(url, engine)
        result = await asyncio.wait_for(stream_tts(url, slow), 30)
        assert result.status == 200
        mine = _pieces_of(engine, str(slow["text"]))
        assert len(mine) >= 10
        interleaved = [p.index for p in list(engine.journal)[mine[1] : mine[-1]] if p.text == LONG]
        await _stop(long)
    assert interleaved == []


async def test_cancelling_a_stream_frees_its_pending_pieces() -> None:
    with worker(max_queue=4) as (url, engine, service):
        scheduler = service.scheduler
        await stream_tts(url, {"text": "Warm up the estimate. " * 3})  # so that more than one stream is admitted
        assert scheduler.stream_capacity >= 3
        hog = asyncio.ensure_future(stream_tts(url, {"text": "hog", "fault_first_delay_ms": 3000}))
        assert await eventually(lambda: scheduler.slots.busy == 1)
        gone = asyncio.ensure_future(stream_tts(url, {"text": "I hang up."}))
        stays = asyncio.ensure_future(stream_tts(url, {"text": "I stay on the line."}))
        assert await eventually(lambda: scheduler.slots.waiting == 2)
        assert scheduler.running == 3
        await _stop(gone)
        assert await eventually(lambda: scheduler.slots.waiting == 1 and scheduler.running == 2)
        stayed = await asyncio.wait_for(stays, 30)
        await _stop(hog)
        assert await eventually(lambda: scheduler.running == 0 and scheduler.slots.busy == 0)
    assert stayed.pcm == render("I stay on the line.")
    assert _pieces_of(engine, "I hang up.") == [], "the hung-up stream's piece was never computed"


async def _later_then_newcomer(url: str, scheduler: Any, later: str, lead_s: float, newcomer: str) -> list[Any]:
    """While a hog holds the only slot, a later segment (``lead_s`` of audio in hand) and then a
    newcomer queue for it; their results, and the hog's, once the slot has served them."""
    hog = asyncio.ensure_future(stream_tts(url, {"text": "hog", "fault_first_delay_ms": 1500}))
    assert await eventually(lambda: scheduler.slots.busy == 1)
    first = asyncio.ensure_future(stream_tts(url, {"text": later, "playback_lead_s": lead_s}))
    assert await eventually(lambda: scheduler.slots.waiting == 1)
    second = asyncio.ensure_future(stream_tts(url, {"text": newcomer}))
    assert await eventually(lambda: scheduler.slots.waiting == 2)
    return list(await asyncio.wait_for(asyncio.gather(first, second, hog), 30))


@pytest.mark.parametrize("lead_s", [0.0, 10.0])
async def test_a_segment_whose_listener_still_holds_audio_yields_to_a_newcomer(lead_s: float) -> None:
    later, newcomer = "A later segment of a session.", "A newcomer says hello."
    with worker(max_queue=4) as (url, engine, service):
        scheduler = service.scheduler
        await stream_tts(url, {"text": "Warm up the estimate. " * 3})
        assert scheduler.stream_capacity >= 3
        results = await _later_then_newcomer(url, scheduler, later, lead_s, newcomer)
    assert [r.status for r in results] == [200, 200, 200]
    assert results[0].pcm == render(later)
    if lead_s:
        assert _pieces_of(engine, newcomer)[0] < _pieces_of(engine, later)[0], "the newcomer hears nothing yet"
    else:
        assert _pieces_of(engine, later)[0] < _pieces_of(engine, newcomer)[0], "equal deadlines: arrival order"


async def test_a_continuing_segment_is_due_earlier_by_the_time_a_piece_takes() -> None:
    # A 2.9 s piece at a fifth of real time takes 0.58 s. A later segment of that length whose
    # listener runs dry 0.3 s after the margin would, counted from its arrival alone, come after a
    # newcomer who arrives within those 0.3 s; it must start its own compute time before that, so
    # it goes first (a v1 stream's later pieces are due earlier by their previous piece's time too).
    engine = ToneEngine(capacity=1, compute_s_per_audio_s=0.2, piece_samples=72_000, faults=True)
    config = WorkerConfig(max_queue=4)
    app = create_app(engine, config)
    service, scheduler = app.state.service, app.state.service.scheduler
    later, newcomer = ("Later " * 48).strip() + ".", "A newcomer says hello."
    with run_server(app) as url:
        warm_up = ("Warm " * 58).strip() + "."  # 2.9 s of tone: one piece, 0.58 s of compute
        await stream_tts(url, {"text": f"{warm_up} {warm_up}"})
        assert service.first_piece_compute_s(later) >= 0.5
        assert scheduler.stream_capacity >= 3
        lead_s = config.playback_margin_s + 0.3
        results = await _later_then_newcomer(url, scheduler, later, lead_s, newcomer)
    assert [r.status for r in results] == [200, 200, 200]
    assert _pieces_of(engine, later)[0] < _pieces_of(engine, newcomer)[0], "the listener would run dry"


async def test_admission_refuses_when_the_estimated_capacity_is_reached() -> None:
    # 1 s pieces at a quarter of real time: one slot keeps about 4 streams ahead of their listeners.
    engine = ToneEngine(capacity=1, compute_s_per_audio_s=0.25, piece_samples=24_000)
    config = WorkerConfig(max_queue=0, target_utilization=1.0, retry_after_s=3.0)
    app = create_app(engine, config)
    scheduler = app.state.service.scheduler
    with run_server(app) as url:
        await stream_tts(url, {"text": "Warm up the estimate with two seconds of tone. " * 4})
        assert scheduler.stream_capacity >= 2, "more streams than slots"
        streams = []
        async with httpx.AsyncClient(timeout=30) as client:
            while scheduler.running < scheduler.stream_capacity:
                streams.append(asyncio.ensure_future(stream_tts(url, {"text": LONG})))
                assert await eventually(lambda: scheduler.running >= len(streams))
            system = (await client.get(f"{url}/v1/system")).json()
            refused = await client.post(f"{url}/v1/tts/stream", json={"text": "one too many"})
            metrics = (await client.get(f"{url}/metrics")).text
        for task in streams:
            await _stop(task)
    assert system["scheduler"] == "deadline"
    assert system["inflight"] == system["stream_capacity"] == len(streams) > system["capacity"] == 1
    assert f'orpheus_stream_capacity{{role="worker"}} {float(system["stream_capacity"])}' in metrics
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "overloaded"
    assert refused.headers["retry-after"] == "3"


async def test_fifo_admits_one_stream_per_slot() -> None:
    with worker("fifo", max_queue=0) as (url, engine, _):
        long = await _start_long(url, engine)
        async with httpx.AsyncClient() as client:
            system = (await client.get(f"{url}/v1/system")).json()
            refused = await client.post(f"{url}/v1/tts/stream", json={"text": SHORT})
        await _stop(long)
    assert (system["scheduler"], system["stream_capacity"], system["inflight"]) == ("fifo", 1, 1)
    assert refused.status_code == 503

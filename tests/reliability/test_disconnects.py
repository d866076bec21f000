"""A client that hangs up mid-stream frees its slot at once, even when the engine outruns it.

The case the other disconnect tests miss: an engine that produces as fast as
it is asked (the instant tone engine, or any engine ahead of its reader), so
the server's stream task spends its life inside the per-piece deadline wait
when the cancellation comes. Before Python 3.12, ``asyncio.wait_for`` returns
the awaited result and drops a cancellation that arrives as the piece
completes; uvicorn's ``send`` is a silent no-op once the client is gone; so
the stream used to run on to the end of its text into the void, holding the
slot and the CPU, and be counted ``ok``. This test failed on every run before
commit cf920a1 (2 to 16 of 16 abandoned streams synthesized to the end) and
guards the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.eventually import eventually
from tests.reliability.harness import gateway, metric, tone_workers

CLIENTS = 16
"""Each hang-up hits the race with a good chance, not always: sixteen make a miss all but impossible."""
TEXT = "This stream is far longer than any client here will wait for. " * 480
"""About 5 minutes of audio (~19 MB of NDJSON): no stream can end on its own during the test."""
FREED_WITHIN_S = 1.0
RUNAWAY_END_S = 60.0
"""Should the bug come back, how long the runaway streams are given to end before the next test."""


@pytest.fixture(scope="module")
def long_worker() -> Iterator[str]:
    """A worker process that accepts :data:`TEXT`."""
    with tone_workers(1, "--capacity", str(CLIENTS), "--max-text-chars", str(len(TEXT))) as procs:
        yield procs[0][0]


async def _hang_up_mid_production(url: str) -> None:
    """CLIENTS streams that each read one burst and hang up while the worker is still producing."""

    async def one(client: httpx.AsyncClient) -> None:
        async with client.stream("POST", f"{url}/v1/tts/stream", json={"text": TEXT}) as response:
            assert response.status_code == 200
            async for data in response.aiter_raw():
                assert data
                break

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=CLIENTS + 2)) as client:
        await asyncio.gather(*(one(client) for _ in range(CLIENTS)))


def _inflight(url: str) -> int:
    return int(httpx.get(f"{url}/v1/system", timeout=5).json()["inflight"])


@pytest.mark.parametrize("via", ["worker", "gateway"])
async def test_hanging_up_mid_stream_frees_the_slot_at_once(long_worker: str, via: str) -> None:
    worker = long_worker
    with contextlib.ExitStack() as stack:
        target = stack.enter_context(gateway([worker], max_text_chars=len(TEXT))) if via == "gateway" else worker
        ok_before = metric(worker, "orpheus_requests_total", role="worker", outcome="ok")
        await _hang_up_mid_production(target)
        hung_up = time.monotonic()
        freed = await eventually(lambda: _inflight(worker) == 0, within_s=FREED_WITHIN_S)
        waited = time.monotonic() - hung_up
        await eventually(lambda: _inflight(worker) == 0, within_s=RUNAWAY_END_S)
        finished_into_the_void = metric(worker, "orpheus_requests_total", role="worker", outcome="ok") - ok_before
    assert finished_into_the_void == 0, f"{finished_into_the_void:.0f} abandoned streams were synthesized to the end"
    assert freed, f"slots were held {waited:.1f} s after the clients hung up"

"""``run_before``: a wait bounded by a deadline and a stop future, that never swallows the caller's cancellation."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from orpheus_tts import aio
from orpheus_tts.aio import DeadlinePassed, Stopped, run_before


class Step:
    """An awaitable step that records whether it was cancelled, and can be finished from outside."""

    def __init__(self) -> None:
        self.result: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.started = asyncio.Event()
        self.cancelled = False

    async def run(self) -> str:
        self.started.set()
        try:
            return await self.result
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def test_the_result_comes_back_and_nothing_fires_later() -> None:
    step = Step()
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(step.result.set_result, "done")
    assert await run_before(step.run(), time.monotonic() + 0.05, stop) == "done"
    # Neither the timer nor a stop that completes afterwards may cancel the caller later on.
    stop.set_result(None)
    # Wait past the deadline the wait had: a stray timer or stop callback would cancel this task.
    later: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.1, later.set_result, None)
    await later
    assert not step.cancelled


async def test_the_deadline_cancels_the_step_and_raises_deadline_passed() -> None:
    step = Step()
    with pytest.raises(DeadlinePassed):
        await run_before(step.run(), time.monotonic() + 0.02)
    assert step.cancelled


async def test_a_deadline_already_past_raises_without_running_the_step() -> None:
    step = Step()
    with pytest.raises(DeadlinePassed):
        await run_before(step.run(), time.monotonic() - 1)
    assert not step.started.is_set()


async def test_a_stop_cancels_the_step_and_raises_stopped() -> None:
    step = Step()
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def stop_once_started() -> None:
        await step.started.wait()
        stop.set_result(None)

    stopper = asyncio.ensure_future(stop_once_started())
    with pytest.raises(Stopped):
        await run_before(step.run(), math.inf, stop)
    await stopper
    assert step.cancelled


async def test_a_stop_already_done_raises_stopped_without_running_the_step() -> None:
    step = Step()
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    stop.set_result(None)
    with pytest.raises(Stopped):
        await run_before(step.run(), math.inf, stop)
    assert not step.started.is_set()


async def test_the_callers_own_cancellation_is_never_swallowed_even_when_a_stop_fires_with_it() -> None:
    step = Step()
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiter = asyncio.ensure_future(run_before(step.run(), math.inf, stop))
    await step.started.wait()
    waiter.cancel()  # the client hung up ...
    stop.set_result(None)  # ... in the same instant the shutdown cut came
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert step.cancelled


async def test_a_cancellation_after_a_stop_fired_is_still_the_callers() -> None:
    step = Step()
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiter = asyncio.ensure_future(run_before(step.run(), time.monotonic() + 60, stop))
    await step.started.wait()
    stop.set_result(None)
    await asyncio.sleep(0)  # the stop's callback has run: the wait is being cut
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_no_task_is_created_per_wait_on_python_3_11_and_later() -> None:
    if not aio._UNCANCEL:
        pytest.skip("Python before 3.11 has no Task.uncancel: the wait runs in a task of its own")
    tasks_before = len(asyncio.all_tasks())
    seen: list[int] = []

    async def count_tasks() -> int:
        seen.append(len(asyncio.all_tasks()))
        return 1

    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    assert await run_before(count_tasks(), time.monotonic() + 10, stop) == 1
    assert seen == [tasks_before]


async def test_an_awaitable_that_swallows_the_cut_leaves_the_caller_uncancelled() -> None:
    if not aio._UNCANCEL:
        pytest.skip("Python before 3.11 has no Task.uncancel")

    async def stubborn() -> str:
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            return "kept going"
        return "unreachable"

    assert await run_before(stubborn(), time.monotonic() + 0.01) == "kept going"
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0  # type: ignore[attr-defined]  # 3.11+, skipped before

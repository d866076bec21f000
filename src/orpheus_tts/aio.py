"""Asyncio helpers that behave the same on every supported Python."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

__all__ = ["DeadlinePassed", "Stopped", "run_before"]

T = TypeVar("T")


class DeadlinePassed(Exception):
    """The deadline passed before the next item arrived."""


class Stopped(Exception):
    """The ``stop`` future completed before the awaitable did (e.g. shutdown cut the wait short)."""


async def run_before(awaitable: Awaitable[T], deadline: float, stop: asyncio.Future[None] | None = None) -> T:
    """``await awaitable`` if it finishes before ``deadline``; else cancel it and raise :class:`DeadlinePassed`.

    When ``stop`` completes first, the awaitable is cancelled and :class:`Stopped`
    is raised. Unlike ``asyncio.wait_for`` before Python 3.12, a cancellation of
    the caller is never swallowed when it coincides with the awaitable finishing:
    a client that hangs up always stops the stream.

    On Python 3.11 and later the awaitable runs in the caller's own task (the
    timer and ``stop`` cancel that task, as ``asyncio.timeout`` does, and
    ``Task.uncancel`` tells their cancellation from anyone else's): no task is
    created per call, which a proxy relaying every batch of every stream through
    here would pay for. Older Pythons run it in a task of its own.
    """
    if not _UNCANCEL:
        return await _run_before_in_task(awaitable, deadline, stop)
    task = asyncio.current_task()
    if task is None:  # not in a task (a bare coroutine driven by hand): nothing to cancel
        return await _run_before_in_task(awaitable, deadline, stop)
    remaining = deadline - time.monotonic()
    if (stop is not None and stop.done()) or remaining <= 0:
        _discard(awaitable)
        raise Stopped if stop is not None and stop.done() else DeadlinePassed
    loop = asyncio.get_running_loop()
    cut = _Cut(task)
    timer = None if math.isinf(deadline) else loop.call_at(loop.time() + remaining, cut.fire, False)
    if stop is not None:
        stop.add_done_callback(cut.stop)
    try:
        result = await awaitable
    except asyncio.CancelledError:
        if cut.fired is not None and task.uncancel() == 0:  # type: ignore[attr-defined]  # 3.11+, checked above
            raise (Stopped if cut.fired else DeadlinePassed) from None
        raise
    else:
        if cut.fired is not None:  # the awaitable swallowed our cancellation: take it back all the same
            task.uncancel()  # type: ignore[attr-defined]
        return result
    finally:
        cut.done = True
        if timer is not None:
            timer.cancel()
        if stop is not None:
            stop.remove_done_callback(cut.stop)


_UNCANCEL = sys.version_info >= (3, 11)
"""Whether ``asyncio.Task.uncancel`` exists (it counts cancellations, so our own can be told apart)."""


class _Cut:
    """Cancels ``task`` once, for a deadline or a stop, unless the wait already ended."""

    __slots__ = ("done", "fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.done = False
        self.fired: bool | None = None
        """``None`` until it fires; then ``True`` for a stop, ``False`` for the deadline."""

    def fire(self, stopped: bool) -> None:
        # A stop's callback is scheduled when it completes and may run after the wait ended.
        if not self.done and self.fired is None:
            self.fired = stopped
            self.task.cancel()

    def stop(self, _future: asyncio.Future[None]) -> None:
        self.fire(True)


def _discard(awaitable: Awaitable[Any]) -> None:
    """Drop an awaitable that will never be awaited (a coroutine is closed, a future cancelled)."""
    if asyncio.iscoroutine(awaitable):
        awaitable.close()
    elif isinstance(awaitable, asyncio.Future):
        awaitable.cancel()


async def _run_before_in_task(awaitable: Awaitable[T], deadline: float, stop: asyncio.Future[None] | None = None) -> T:
    task: asyncio.Future[T] = asyncio.ensure_future(awaitable)
    waiting: set[asyncio.Future[Any]] = {task} if stop is None else {task, stop}
    timeout = None if math.isinf(deadline) else max(0.0, deadline - time.monotonic())
    try:
        done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        await _cancel(task)
        raise
    if task not in done:
        await _cancel(task)
        raise Stopped if stop is not None and stop in done else DeadlinePassed
    return task.result()


async def _cancel(step: asyncio.Future[T]) -> None:
    step.cancel()
    with contextlib.suppress(BaseException):
        await step

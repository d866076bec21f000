"""Asyncio helpers that behave the same on every supported Python."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

__all__ = ["DeadlinePassed", "Stopped", "next_before", "run_before"]

T = TypeVar("T")


class DeadlinePassed(Exception):
    """The deadline passed before the next item arrived."""


class Stopped(Exception):
    """The ``stop`` future completed before the awaitable did (e.g. shutdown cut the wait short)."""


async def next_before(iterator: AsyncIterator[T], deadline: float) -> T:
    """The next item of ``iterator`` if it arrives before ``deadline`` (a ``time.monotonic()`` value).

    Raises :class:`DeadlinePassed` (after cancelling the pending step) or
    ``StopAsyncIteration`` at the end. Unlike ``asyncio.wait_for`` before Python
    3.12, a cancellation of the caller is never swallowed when it coincides with
    the item arriving: a client that hangs up always stops the stream.
    """
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlinePassed
    step: asyncio.Future[T] = asyncio.ensure_future(iterator.__anext__())
    try:
        done, _ = await asyncio.wait({step}, timeout=remaining)
    except BaseException:
        await _cancel(step)
        raise
    if not done:
        await _cancel(step)
        raise DeadlinePassed
    return step.result()


async def run_before(awaitable: Awaitable[T], deadline: float, stop: asyncio.Future[None] | None = None) -> T:
    """``await awaitable`` if it finishes before ``deadline``; else cancel it and raise :class:`DeadlinePassed`.

    When ``stop`` completes first, the awaitable is cancelled and :class:`Stopped`
    is raised. Like :func:`next_before`, it never swallows a cancellation of the caller.
    """
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

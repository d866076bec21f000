"""Asyncio helpers that behave the same on every supported Python."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

__all__ = ["DeadlinePassed", "next_before", "run_before"]

T = TypeVar("T")


class DeadlinePassed(Exception):
    """The deadline passed before the next item arrived."""


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


async def run_before(awaitable: Awaitable[T], deadline: float) -> T:
    """``await awaitable`` if it finishes before ``deadline``; else cancel it and raise :class:`DeadlinePassed`.

    Like :func:`next_before`, it never swallows a cancellation of the caller.
    """
    task: asyncio.Future[T] = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - time.monotonic()))
    except BaseException:
        await _cancel(task)
        raise
    if not done:
        await _cancel(task)
        raise DeadlinePassed
    return task.result()


async def _cancel(step: asyncio.Future[T]) -> None:
    step.cancel()
    with contextlib.suppress(BaseException):
        await step

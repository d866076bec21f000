"""The suite's one way to wait for something: poll a condition until it holds or time runs out.

Tests synchronise on events or with these helpers, never on a bare sleep: a
condition that holds returns at once, however slow or fast the machine is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["EVENTUALLY_S", "eventually", "eventually_sync"]

EVENTUALLY_S = 5.0
"""The default bound on a wait: generous, since CI's machine is small and shared."""
STEP_S = 0.02


async def eventually(condition: Callable[[], bool], within_s: float = EVENTUALLY_S, step_s: float = STEP_S) -> bool:
    """Whether ``condition()`` held within ``within_s`` seconds (checked every ``step_s``)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(step_s)
    return condition()


def eventually_sync(condition: Callable[[], bool], within_s: float = EVENTUALLY_S, step_s: float = STEP_S) -> bool:
    """:func:`eventually` for code outside an event loop (threads, subprocess checks)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return condition()

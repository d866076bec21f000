"""The server messages of one socket, queued for its writer: bounded, and purged on cancel.

Audio and word messages count against the bound: a producer waits in
:meth:`Outbox.put_audio` while the socket is that far behind (backpressure
reaches the engine through the waiting producer). Control messages (``done``,
``cancelled``, ``error``…) never wait; there are at most a few per context.
:meth:`Outbox.purge` drops a context's queued audio, so ``cancelled`` goes out
next and no audio of that context follows it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Outbox"]

_COUNTED = frozenset({"audio", "words"})


class Outbox:
    """A bounded queue of JSON messages; see the module docstring."""

    def __init__(self, max_audio: int) -> None:
        self._items: deque[dict[str, Any]] = deque()
        self._max_audio = max_audio
        self._audio = 0
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def queued(self) -> int:
        """Messages waiting for the writer."""
        return len(self._items)

    async def put_audio(self, message: dict[str, Any]) -> None:
        """Queue an ``audio`` or ``words`` message, waiting while the queue is full."""
        await self._wait(lambda: self._closed or self._audio < self._max_audio)
        if self._closed:
            return
        self._items.append(message)
        self._audio += 1
        self._changed.set()

    def put(self, message: dict[str, Any]) -> None:
        """Queue a control message at once."""
        if self._closed:
            return
        self._items.append(message)
        self._changed.set()

    def purge(self, context_id: str) -> None:
        """Drop the queued audio and word messages of ``context_id``."""
        kept = [m for m in self._items if not (m.get("context_id") == context_id and m["type"] in _COUNTED)]
        self._audio -= len(self._items) - len(kept)
        self._items = deque(kept)
        self._changed.set()

    async def get(self) -> dict[str, Any] | None:
        """The next message; ``None`` once closed."""
        await self._wait(lambda: self._closed or bool(self._items))
        if self._closed:
            return None
        message = self._items.popleft()
        if message["type"] in _COUNTED:
            self._audio -= 1
        self._changed.set()
        return message

    def close(self) -> None:
        """Drop everything; waiting producers return, the writer gets ``None``."""
        self._closed = True
        self._items.clear()
        self._audio = 0
        self._changed.set()

    async def _wait(self, ready: Callable[[], bool]) -> None:
        # Checking and clearing happen without an await in between, so no set() is missed.
        while not ready():
            self._changed.clear()
            await self._changed.wait()

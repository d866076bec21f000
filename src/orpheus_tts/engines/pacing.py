"""Playback deadlines, passed from the server to the engine code that orders work by them.

The worker knows when each stream's listener would run out of audio. An
engine that shares work among streams (the Orpheus decode batcher) can ask,
for the stream whose code is running, when a given piece of audio is needed,
and serve the most urgent first. The worker sets the stream's
:class:`Playback` around every step of that stream's generator, so tasks an
engine starts from inside the step see it too; outside a scheduled stream
:func:`current_playback` is ``None`` and the engine orders by arrival.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Protocol, runtime_checkable

__all__ = ["Playback", "current_playback", "playing"]


@runtime_checkable
class Playback(Protocol):
    """A stream's playback clock, as the server sees it."""

    def due(self, ahead_s: float = 0.0) -> float:
        """When (a ``time.monotonic()`` value) the audio starting ``ahead_s`` seconds after
        what has been delivered must be ready, for the listener never to run dry."""
        ...


_CURRENT: ContextVar[Playback | None] = ContextVar("orpheus_playback", default=None)


def current_playback() -> Playback | None:
    """The playback clock of the stream whose code is running, if the server set one."""
    return _CURRENT.get()


@contextlib.contextmanager
def playing(playback: Playback | None) -> Iterator[None]:
    """Make ``playback`` the current stream's clock inside the block (and in tasks started there)."""
    token = _CURRENT.set(playback)
    try:
        yield
    finally:
        _CURRENT.reset(token)

"""Per-key quotas: requests per minute over a sliding window, and concurrent streams.

:meth:`Quotas.acquire` takes a stream slot and a place in the key's window
at once, without awaiting, so concurrent requests always see each other; it
raises :class:`QuotaError` (429 ``rate_limited`` with ``Retry-After``), the
one error this module raises. The :class:`Lease` it returns is settled when
the request ends:

- :meth:`Lease.release`: the request counted (it produced audio, failed on
  the server's side, or was abandoned by its client after it went upstream);
  its place stays in the window, its stream slot is freed.
- :meth:`Lease.refund`: the request was refused (an unknown voice or
  parameter, a full queue, no worker, the deadline before any audio); its
  place in the window is given back too, so refusals never use up a quota.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

from orpheus_tts.gateway.keys import KeyLimits
from orpheus_tts.protocol import ErrorCode, ServiceError

__all__ = ["CONCURRENCY_RETRY_AFTER_S", "RATE_WINDOW_S", "Admission", "Lease", "QuotaError", "Quotas"]

logger = logging.getLogger(__name__)

RATE_WINDOW_S = 60.0
"""Length of the sliding window ``requests_per_minute`` counts over."""
CONCURRENCY_RETRY_AFTER_S = 1.0
"""``Retry-After`` sent when a key has all its concurrent streams open."""


class QuotaError(ServiceError):
    """429 ``rate_limited`` with ``retry_after_s``; ``reason`` names the quota."""

    def __init__(self, reason: str, message: str, retry_after_s: float) -> None:
        super().__init__(ErrorCode.RATE_LIMITED, message, retry_after_s=retry_after_s)
        self.reason = reason


class Lease:
    """One admitted request's hold on its key's quotas; see the module docstring.

    :meth:`release` and :meth:`refund` are idempotent (the first one wins); a
    lease dropped unsettled releases itself when it is garbage collected (and
    logs it).
    """

    def __init__(self, state: _KeyState | None, name: str, start: float | None = None) -> None:
        self._state = state
        self._start = start
        self.name = name

    @property
    def released(self) -> bool:
        return self._state is None

    def release(self) -> None:
        """The request counted: free its stream slot, keep its place in the rate window."""
        state, self._state = self._state, None
        if state is not None:
            state.release_stream()

    def refund(self) -> None:
        """The request was refused: free its stream slot and its place in the rate window."""
        state, self._state = self._state, None
        if state is not None:
            state.release_stream(refund=self._start)

    def __del__(self) -> None:
        if getattr(self, "_state", None) is not None:
            logger.warning("a stream slot of key %r was never released; releasing it now", self.name)
            self.release()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class _KeyState:
    """A key's live counters; every method runs under the quotas' lock."""

    def __init__(self, limits: KeyLimits, lock: threading.RLock, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.streams = 0
        self._lock = lock
        self._clock = clock
        # Start times inside the window, oldest first; never longer than requests_per_minute.
        self._starts: collections.deque[float] = collections.deque()

    def try_acquire(self, name: str) -> float | None:
        """Take a slot; the start time recorded in the window (``None`` without a rate limit)."""
        limits = self.limits
        with self._lock:
            if limits.max_concurrent_streams is not None and self.streams >= limits.max_concurrent_streams:
                raise QuotaError(
                    "concurrent_streams",
                    f"key {name!r} already has {self.streams} streams open; "
                    f"its limit is {limits.max_concurrent_streams}",
                    retry_after_s=CONCURRENCY_RETRY_AFTER_S,
                )
            start = None
            if limits.requests_per_minute is not None:
                now = self._clock()
                while self._starts and self._starts[0] <= now - RATE_WINDOW_S:
                    self._starts.popleft()
                if len(self._starts) >= limits.requests_per_minute:
                    retry_after = self._starts[0] + RATE_WINDOW_S - now
                    raise QuotaError(
                        "requests_per_minute",
                        f"key {name!r} made {len(self._starts)} requests in the last "
                        f"{RATE_WINDOW_S:.0f} s; its limit is {limits.requests_per_minute}",
                        retry_after_s=max(retry_after, 0.001),
                    )
                self._starts.append(now)
                start = now
            self.streams += 1
            return start

    def release_stream(self, refund: float | None = None) -> None:
        with self._lock:
            self.streams = max(0, self.streams - 1)
            if refund is not None:
                # Equal start times are interchangeable: removing any one gives the same window.
                try:
                    self._starts.remove(refund)
                except ValueError:
                    pass  # it already left the window

    def window_count(self) -> int:
        with self._lock:
            return len(self._starts)


class Quotas:
    """Every key's quota state, created on first use; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        # Re-entrant: a lease collected by the GC may release while this thread holds the lock.
        self._lock = threading.RLock()
        self._clock = clock
        self._states: dict[str, _KeyState] = {}

    def acquire(self, name: str, limits: KeyLimits) -> Lease:
        """Take a stream slot and a place in the rate window for key ``name``, or raise :class:`QuotaError`."""
        if limits.max_concurrent_streams is None and limits.requests_per_minute is None:
            return Lease(None, name)
        with self._lock:
            state = self._states.get(name)
            if state is None:
                state = self._states[name] = _KeyState(limits, self._lock, self._clock)
        start = state.try_acquire(name)
        return Lease(state, name, start)

    def streams_open(self, name: str) -> int:
        """Streams the key called ``name`` holds now."""
        state = self._states.get(name)
        return 0 if state is None else state.streams

    def requests_in_window(self, name: str) -> int:
        """Requests the key called ``name`` has counted in the current rate window."""
        state = self._states.get(name)
        return 0 if state is None else state.window_count()


class Admission:
    """``async with auth.admit(identity) as lease:`` holds a stream slot for the block.

    Entering checks the quotas and raises :class:`QuotaError`; it never awaits,
    so a cancellation cannot land between taking the slot and returning it.
    Exiting (also on cancellation or error) releases the slot; exiting twice is
    harmless.
    """

    def __init__(self, acquire: Callable[[], Lease]) -> None:
        self._acquire = acquire
        self.lease: Lease | None = None

    async def __aenter__(self) -> Lease:
        self.lease = self._acquire()
        return self.lease

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.lease is not None:
            self.lease.release()

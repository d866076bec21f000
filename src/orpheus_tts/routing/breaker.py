"""A per-endpoint circuit breaker: closed → open → half-open → closed.

Closed, it counts consecutive failures; at the threshold it opens and refuses
traffic for a cooldown. Then it is half-open: it admits exactly one request (a
probe) at a time; the probe's success closes it, its failure reopens it for
another cooldown. Success is reported at ``eos``, not at response headers.
Time is passed in (``now``, monotonic seconds) so the logic is pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["Breaker", "BreakerState", "Permit"]


class BreakerState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Permit:
    """Admission of one request by a breaker; hand it back with the request's outcome."""

    probe: bool
    """True when this request is the half-open probe."""
    generation: int
    """The breaker's open/close generation at admission; outcomes of older generations are ignored."""


class Breaker:
    """See the module docstring."""

    def __init__(self, failure_threshold: int, cooldown_s: float) -> None:
        if failure_threshold < 1 or cooldown_s <= 0:
            raise ValueError("need failure_threshold >= 1 and cooldown_s > 0")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.consecutive_failures = 0
        self.opens = 0
        """How many times the circuit opened."""
        self._open_until: float | None = None
        self._probe_in_flight = False
        self._generation = 0

    def state(self, now: float) -> BreakerState:
        if self._open_until is None:
            return BreakerState.CLOSED
        return BreakerState.OPEN if now < self._open_until else BreakerState.HALF_OPEN

    def available(self, now: float) -> bool:
        """Whether :meth:`acquire` would admit a request now (no side effect)."""
        state = self.state(now)
        return state is BreakerState.CLOSED or (state is BreakerState.HALF_OPEN and not self._probe_in_flight)

    def retry_in_s(self, now: float) -> float | None:
        """Seconds until an open circuit admits a probe; ``None`` unless open."""
        if self._open_until is None or now >= self._open_until:
            return None
        return self._open_until - now

    def acquire(self, now: float) -> Permit | None:
        """Admit one request, or ``None``; in half-open state this takes the one probe slot."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return Permit(probe=False, generation=self._generation)
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return Permit(probe=True, generation=self._generation)
        return None

    def record_success(self, permit: Permit) -> None:
        if permit.probe and permit.generation == self._generation:
            self._probe_in_flight = False
            self._close()
        elif self._open_until is None:
            self.consecutive_failures = 0

    def record_failure(self, permit: Permit, now: float) -> None:
        if permit.probe and permit.generation == self._generation:
            self._probe_in_flight = False
            self._open(now)
        elif self._open_until is None:
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.failure_threshold:
                self._open(now)

    def release(self, permit: Permit) -> None:
        """The request ended with no verdict (cancelled, abandoned): free the probe slot."""
        if permit.probe and permit.generation == self._generation:
            self._probe_in_flight = False

    def trip(self, now: float) -> None:
        """Open the circuit now, whatever its state (e.g. a failed health probe)."""
        self._probe_in_flight = False
        self._open(now)

    def end_cooldown(self, now: float) -> None:
        """Make an open circuit half-open now (e.g. a health probe succeeded)."""
        if self._open_until is not None and now < self._open_until:
            self._open_until = now

    def _open(self, now: float) -> None:
        if self._open_until is None:
            self.opens += 1
        self._generation += 1
        self._open_until = now + self.cooldown_s

    def _close(self) -> None:
        self._generation += 1
        self._open_until = None
        self.consecutive_failures = 0

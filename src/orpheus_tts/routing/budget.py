"""Budgets for extra requests (hedges, failovers) over a sliding time window.

An extra request is allowed while ``extras < ratio × requests + reserve``,
both counted over the last ``window_s`` seconds. The ratio keeps hedging and
retrying from amplifying an overload; the reserve lets light traffic hedge.
Counts live in a fixed ring of one-second-ish buckets, so memory is bounded
whatever the request rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Budget", "BudgetSnapshot", "WindowCounter"]

BUCKETS_PER_WINDOW = 10


class WindowCounter:
    """Events counted over a sliding window, in ``BUCKETS_PER_WINDOW`` buckets."""

    def __init__(self, window_s: float) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self._bucket_s = window_s / BUCKETS_PER_WINDOW
        self._counts = [0] * BUCKETS_PER_WINDOW
        self._current = 0
        """Index (in bucket units since the epoch of ``now``) of the newest bucket."""

    def _advance(self, now: float) -> None:
        index = math.floor(now / self._bucket_s)
        gap = index - self._current
        if gap <= 0:
            return
        for step in range(1, min(gap, BUCKETS_PER_WINDOW) + 1):
            self._counts[(self._current + step) % BUCKETS_PER_WINDOW] = 0
        self._current = index

    def add(self, now: float, count: int = 1) -> None:
        self._advance(now)
        self._counts[self._current % BUCKETS_PER_WINDOW] += count

    def total(self, now: float) -> int:
        self._advance(now)
        return sum(self._counts)


@dataclass(frozen=True)
class BudgetSnapshot:
    requests: int
    """Requests counted in the window."""
    spent: int
    """Extra requests spent in the window."""
    denied_total: int
    """Extra requests refused since the start."""


class Budget:
    """See the module docstring."""

    def __init__(self, ratio: float, reserve: int, window_s: float) -> None:
        self.ratio = ratio
        self.reserve = reserve
        self._requests = WindowCounter(window_s)
        self._spent = WindowCounter(window_s)
        self.denied_total = 0

    def record_request(self, now: float) -> None:
        self._requests.add(now)

    def try_spend(self, now: float) -> bool:
        """Spend one extra request if the budget allows; ``False`` (and counted) if not."""
        allowed = self.ratio * self._requests.total(now) + self.reserve
        if self._spent.total(now) + 1 > allowed:
            self.denied_total += 1
            return False
        self._spent.add(now)
        return True

    def snapshot(self, now: float) -> BudgetSnapshot:
        return BudgetSnapshot(self._requests.total(now), self._spent.total(now), self.denied_total)

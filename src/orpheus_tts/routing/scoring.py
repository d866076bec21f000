"""Load scores and the choice between endpoints.

``load = ttfb_ewma × (inflight + queue_hint + 1)``, lower is better. The
time-to-first-audio estimate is a peak-EWMA: a slow sample is adopted at once,
fast samples pull it down with time constant ``decay_s``, and an estimate that
gets no news fades, so a briefly slow endpoint is tried again instead of
being starved forever. Endpoints are
chosen by the power of two choices: two at random, the less loaded wins.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["DecayingValue", "PeakEwma", "load_score", "pick_two"]

T = TypeVar("T")


class PeakEwma:
    """Peak-sensitive exponentially weighted moving average of a latency, in milliseconds.

    As in Finagle's peak-EWMA: the estimate decays towards zero while no sample
    arrives, so an endpoint that was penalised and then left idle becomes
    attractive again and is re-measured instead of being starved forever.
    """

    def __init__(self, prior_ms: float, decay_s: float, now: float) -> None:
        self.prior_ms = prior_ms
        self.decay_s = decay_s
        self._value_ms = prior_ms
        self._stamp = now
        self.samples = 0
        """Observations so far."""

    def _weight(self, now: float) -> float:
        return math.exp(-max(0.0, now - self._stamp) / self.decay_s)

    def value(self, now: float) -> float:
        """The estimate at ``now``."""
        return self._value_ms * self._weight(now)

    def restart(self, prior_ms: float, now: float) -> None:
        """Forget every sample and start again from ``prior_ms`` (an endpoint back from the dead)."""
        self.prior_ms = prior_ms
        self._value_ms = prior_ms
        self._stamp = now
        self.samples = 0

    def observe(self, sample_ms: float, now: float) -> None:
        """Add a measured latency: a peak is adopted at once, a lower sample blends in."""
        weight = self._weight(now)
        current = self._value_ms * weight
        if sample_ms >= current or not self.samples:  # the first real sample replaces the prior
            self._value_ms = sample_ms
        else:
            self._value_ms = current + sample_ms * (1.0 - weight)
        self._stamp = now
        self.samples += 1

    def observe_at_least(self, elapsed_ms: float, now: float) -> None:
        """Add a censored sample: a request abandoned after ``elapsed_ms`` took at least that long."""
        if elapsed_ms > self.value(now):
            self.observe(elapsed_ms, now)


class DecayingValue:
    """A number reported by a server (e.g. its queue depth) whose weight fades with age."""

    def __init__(self, decay_s: float) -> None:
        self.decay_s = decay_s
        self.raw = 0.0
        self._stamp = 0.0

    def set(self, value: float, now: float) -> None:
        self.raw = max(0.0, value)
        self._stamp = now

    def value(self, now: float) -> float:
        if not self.raw:
            return 0.0
        return self.raw * math.exp(-max(0.0, now - self._stamp) / self.decay_s)


def load_score(ttfb_ms: float, inflight: int, queue_hint: float) -> float:
    """``ttfb × (inflight + queue_hint + 1)``: the expected wait for one more request."""
    return ttfb_ms * (inflight + queue_hint + 1.0)


def pick_two(candidates: Sequence[T], score: Callable[[T], float], rng: random.Random) -> T:
    """Power of two choices: sample two distinct candidates, return the lower-scored one."""
    if not candidates:
        raise ValueError("no candidates")
    if len(candidates) == 1:
        return candidates[0]
    a, b = rng.sample(list(candidates), 2)
    # rng.sample returns the pair in random order, so ties are broken at random.
    return a if score(a) <= score(b) else b

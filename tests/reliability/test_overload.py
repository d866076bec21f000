"""Four times more concurrent requests than the cluster holds: the excess is refused, the rest is whole.

Two workers with 2 slots and a queue of 2 each hold 8 requests. 32 arrive at
once. Admitted streams complete byte for byte; the others get 503
``overloaded`` with ``Retry-After`` and no audio, so resending is safe. The
gateway's retries stay inside the budget the routing settings promise.

The bound on upstream requests per client request (no hedging)::

    upstream ≤ R + min((min(max_attempts, W) - 1) × R, retry_budget_ratio × R + retry_budget_reserve)

R client requests within one budget window, W workers. Each request is sent
once; a failover goes only to a worker not yet tried, at most ``max_attempts``
tries in all, and only while the retry budget (a ratio of recent requests plus
a reserve per window) has room. With the defaults (ratio 0.2, reserve 10,
3 attempts) and W = 2, R = 32: at most 32 + 16 = 48 upstream requests, a
ratio of 1.5; for large R it tends to 1.2.
"""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from orpheus_tts.gateway.config import DEFAULT_MAX_ATTEMPTS
from orpheus_tts.routing import RoutingSettings
from orpheus_tts.sdk import HTTPStatusError, OrpheusTTS
from tests.reliability.harness import (
    COMPLETE,
    REFUSED,
    Received,
    metric,
    routed_gateway,
    sdk_stream,
    tally,
    tone_workers,
)

WORKERS = 2
CAPACITY = 2
MAX_QUEUE = 2
HELD = WORKERS * (CAPACITY + MAX_QUEUE)
"""Requests the cluster holds at once: running plus queued."""
OVERLOAD_FACTOR = 4
PIECE_DELAY_MS = 100.0
"""Each stream (about 1 s of audio, 10 pieces) lasts about a second: all 32 arrive while the first 8 run."""


def upstream_bound(requests: int, settings: RoutingSettings, workers: int) -> int:
    """Most upstream requests ``requests`` client requests may cause (see the module docstring)."""
    tries = min(settings.max_attempts, workers) - 1
    failovers = min(
        tries * requests, math.floor(settings.retry_budget_ratio * requests + settings.retry_budget_reserve)
    )
    return requests + failovers


def _worker_requests(urls: list[str]) -> float:
    """Every request the workers answered, whatever the outcome (``orpheus_requests_total``)."""
    return sum(metric(u, "orpheus_requests_total", role="worker") for u in urls)


async def _overload(rounds: int, per_round: int) -> tuple[list[Received], float, RoutingSettings, float]:
    settings = RoutingSettings(hedge_ttfb_ms=None, max_attempts=DEFAULT_MAX_ATTEMPTS)
    args = ("--capacity", str(CAPACITY), "--max-queue", str(MAX_QUEUE))
    with tone_workers(WORKERS, *args) as procs:
        urls = [u for u, _ in procs]
        with routed_gateway(urls, settings) as (gw, _):
            before = _worker_requests(urls)
            started = time.monotonic()
            results: list[Received] = []
            async with OrpheusTTS(gw, hedge_ttfb_ms=None) as tts:
                for round_ in range(rounds):
                    texts = [f"Round {round_}, caller {i}: is there room for me?" for i in range(per_round)]
                    results += await asyncio.gather(
                        *(sdk_stream(tts, t, fault_piece_delay_ms=PIECE_DELAY_MS) for t in texts)
                    )
            elapsed = time.monotonic() - started
            upstream = _worker_requests(urls) - before
    return results, upstream, settings, elapsed


async def test_four_times_capacity_refuses_the_excess_and_completes_the_rest() -> None:
    requests = OVERLOAD_FACTOR * HELD
    results, upstream, settings, _ = await _overload(1, requests)
    counts = tally(results, refused=["overloaded"])
    bound = upstream_bound(requests, settings, WORKERS)
    print(
        f"overload: {requests} requests, {counts[COMPLETE]} complete, {counts[REFUSED]} refused; "
        f"{upstream:.0f} upstream (x{upstream / requests:.2f}, bound x{bound / requests:.2f})"
    )
    # All arrive within a stream's length: each slot and queue place is taken once, the rest refused.
    assert counts[COMPLETE] == HELD, "every slot and queue place serves a stream, and no more are admitted"
    assert counts[REFUSED] == requests - HELD, "the excess is refused, not queued without bound"
    for r in results:
        if r.error is not None:
            assert isinstance(r.error, HTTPStatusError)
            assert r.error.status_code == 503
            assert r.error.retry_after_s is not None
            assert r.error.retry_after_s >= 1
    assert requests <= upstream <= bound, f"{upstream:.0f} upstream requests for {requests}: retries beyond the budget"


@pytest.mark.slow
async def test_sustained_overload_keeps_retries_in_budget() -> None:
    """Twelve waves of 4x overload back to back (~15 s, more than one budget window)."""
    rounds = 12
    results, upstream, settings, elapsed = await _overload(rounds, OVERLOAD_FACTOR * HELD)
    counts = tally(results, refused=["overloaded"])
    requests = len(results)
    print(
        f"sustained overload: {requests} requests in {elapsed:.1f} s, {counts[COMPLETE]} complete, "
        f"{counts[REFUSED]} refused; {upstream:.0f} upstream (x{upstream / requests:.2f})"
    )
    assert counts[COMPLETE] == rounds * HELD, "each wave fills every slot and queue place"
    # Cut time into n back-to-back windows: failovers spent in one are at most the ratio times the
    # requests of that window and the one before (the window slides), plus the reserve.
    n = math.ceil(elapsed / settings.budget_window_s)
    budget = 2 * settings.retry_budget_ratio * requests + n * settings.retry_budget_reserve
    assert upstream <= requests + min((WORKERS - 1) * requests, math.floor(budget))

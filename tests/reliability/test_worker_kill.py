"""Workers SIGKILLed under concurrent load, through ``orpheus-tts serve`` (gateway + 2 worker processes).

Killed while idle, just before a burst: every request fails over before its
first chunk and completes. Killed while streaming: streams that had audio
from the victim end with ``worker_lost`` after a prefix of their audio (never
replayed, never silently short); streams queued on it fail over and complete.
Either way the supervisor brings the worker back.
"""

from __future__ import annotations

import asyncio
import subprocess
import time

import httpx
import pytest

from orpheus_tts.routing import RoutingSettings
from orpheus_tts.routing.settings import DEFAULT_RETRY_BUDGET_RATIO as RETRY_BUDGET_RATIO
from orpheus_tts.routing.settings import DEFAULT_RETRY_BUDGET_RESERVE as RETRY_BUDGET_RESERVE
from orpheus_tts.sdk import HTTPStatusError, OrpheusTTS
from tests.eventually import eventually
from tests.reliability.harness import (
    COMPLETE,
    CUT,
    REFUSED,
    Received,
    kill,
    metric,
    routed_gateway,
    sdk_stream,
    system,
    tally,
    tone_workers,
    worker_pids,
)
from tests.servers import run_cli

CAPACITY = 8
"""Slots per worker: 30 streams on 2 workers keep both busy with a short queue behind. The queue is
kept short on purpose: failing it over must fit the retry budget (see the budget test below)."""
SERVE = (
    "serve", "--engine", "test", "--enable-test-faults", "--workers", "2",
    "--capacity", str(CAPACITY), "--probe-interval-s", "0.2",
)  # fmt: skip
SERVE_SLOW_PROBES = (*SERVE[:-1], "1.0")
"""The same stack probing each worker once a second: on a loaded machine a 0.2 s probe can mark a
worker that was just killed down before the first request after the kill reaches the gateway, and
then no request meets the dead worker (the kill-before-a-burst test then proves nothing)."""
STREAMS = 30
ARRIVAL_GAP_S = 0.03
LATE_STREAMS = 5
"""Sent right after the kill, before a probe can have noticed it."""
PIECE_DELAY_MS = 40.0
"""Each 100 ms piece takes this long: a stream of ~1.5 s of audio lasts ~0.6 s."""
MID_STREAM_S = 5 * PIECE_DELAY_MS / 1000
"""After the victim's slots fill, wait this long so its running streams are mid-stream when it dies."""
RESTART_WITHIN_S = 40.0
"""The supervisor doubles its restart delay for a worker that keeps dying young (1, 2, 4, 8 s…)."""


def _text(n: int, label: str) -> str:
    return f"{label} stream {n} is talking. It keeps on for a while, sentence after sentence, to the end."


def _worker_load(port: str) -> tuple[int, int]:
    """(running, queued) as the worker itself reports them; (0, 0) once it is gone."""
    try:
        data = httpx.get(f"http://127.0.0.1:{port}/v1/system", timeout=1).json()
    except httpx.HTTPError:
        return 0, 0
    return int(data["inflight"]), int(data["queue_depth"])


async def _restarted(url: str, proc: subprocess.Popen[bytes], victim: int) -> bool:
    def back() -> bool:
        pids = worker_pids(proc.pid)
        return len(pids) == 2 and victim not in pids and system(url)["totals"]["healthy"] == 2

    return await eventually(back, within_s=RESTART_WITHIN_S, step_s=0.2)


async def _readmitted(url: str) -> bool:
    """Stream until every worker's circuit is closed: a restarted worker is half-open until one
    probe stream through it has ended well (only then does it take more than one stream at a time)."""
    async with OrpheusTTS(url, hedge_ttfb_ms=None) as tts:
        for _ in range(20):
            if all(w["breaker"] == "closed" for w in system(url)["workers"]):
                return True
            await asyncio.gather(*(sdk_stream(tts, f"Probe {i}.") for i in range(2)))
    return False


async def _burst(tts: OrpheusTTS, count: int, label: str) -> list[asyncio.Future[Received]]:
    return [
        asyncio.ensure_future(sdk_stream(tts, _text(i, label), fault_piece_delay_ms=PIECE_DELAY_MS))
        for i in range(count)
    ]


async def test_sigkill_during_streams_cuts_only_with_worker_lost_and_fails_over_the_queue() -> None:
    with run_cli(*SERVE) as (url, proc):
        assert await eventually(lambda: system(url)["totals"]["healthy"] == 2)
        victim, port = next(iter(worker_pids(proc.pid).items()))
        async with OrpheusTTS(url, hedge_ttfb_ms=None) as tts:
            tasks = await _burst(tts, STREAMS, "Busy")
            busy = await eventually(lambda: _worker_load(port) >= (CAPACITY, 1), within_s=10, step_s=0.02)
            assert busy, f"the victim never had {CAPACITY} streams running and a queue: {_worker_load(port)}"
            await asyncio.sleep(MID_STREAM_S)
            kill(victim)
            tasks += await _burst(tts, LATE_STREAMS, "Late")
            results = await asyncio.gather(*tasks)
        failovers = metric(url, "orpheus_failovers_total")
        counts = tally(results, cut=["worker_lost"])
        assert failovers >= 1, "the victim's queue was failed over"
        assert failovers <= RETRY_BUDGET_RESERVE + RETRY_BUDGET_RATIO * len(results), "within the retry budget"
        assert counts[CUT] >= 1, "streams running on the victim must end with worker_lost"
        assert counts[CUT] <= CAPACITY, "only streams that were running on the victim may be cut"
        assert counts[COMPLETE] == len(results) - counts[CUT], "no request is lost before its first chunk"
        assert await _restarted(url, proc, victim), "serve did not bring the killed worker back"


async def test_sigkill_just_before_a_burst_loses_nothing() -> None:
    """The worker the router prefers dies; 30 streams arrive over the next second and all complete.

    Arrivals are spread (one every ARRIVAL_GAP_S, ~30 in flight at the peak) as real traffic is: a
    burst that lands all in the same instant sends half of itself to the dead worker before any
    failure is known, and the retry budget bounds how much of that is failed over (the test below).
    """
    with run_cli(*SERVE_SLOW_PROBES) as (url, proc):
        assert await eventually(lambda: system(url)["totals"]["healthy"] == 2)
        pids = worker_pids(proc.pid)
        async with OrpheusTTS(url, hedge_ttfb_ms=None) as tts:
            await sdk_stream(tts, "Warm the connections up.")
            # The worker that served the warm-up is the one the router now prefers: the worst to lose.
            victim = max(pids, key=lambda pid: metric(f"http://127.0.0.1:{pids[pid]}", "orpheus_requests_total"))
            kill(victim)
            started = time.monotonic()
            tasks = []
            for i in range(STREAMS):
                tasks.append(
                    asyncio.ensure_future(sdk_stream(tts, _text(i, "Burst"), fault_piece_delay_ms=PIECE_DELAY_MS))
                )
                await asyncio.sleep(ARRIVAL_GAP_S)
            results = await asyncio.gather(*tasks)
            elapsed = time.monotonic() - started
        failovers = metric(url, "orpheus_failovers_total")
        counts = tally(results)
        assert counts[COMPLETE] == STREAMS, "every request fails over before its first chunk"
        assert failovers >= 1, "no request met the dead worker: the test proves nothing"
        assert elapsed < 30, "failover is prompt, not a timeout"
        assert await _restarted(url, proc, victim)


async def test_failovers_beyond_the_retry_budget_are_refused_with_a_retryable_503() -> None:
    """A worker dies with a queue deeper than the retry budget: the excess is refused, loudly.

    The budget is what keeps a crash from turning into a retry storm; what it refuses gets
    503 ``no_workers`` with ``Retry-After`` (safe to resend: no audio was produced).
    """
    reserve = 2
    routing = RoutingSettings(hedge_ttfb_ms=None, retry_budget_ratio=0.0, retry_budget_reserve=reserve)
    with tone_workers(2, "--capacity", "2") as procs, routed_gateway([u for u, _ in procs], routing) as (gw, router):
        (victim_url, victim), _ = procs
        port = victim_url.rsplit(":", 1)[1]
        async with OrpheusTTS(gw, hedge_ttfb_ms=None) as tts:
            tasks = await _burst(tts, 20, "Queued")
            assert await eventually(lambda: _worker_load(port) >= (2, reserve + 2), within_s=10, step_s=0.02)
            kill(victim)
            results = await asyncio.gather(*tasks)
        stats = router.stats()
    counts = tally(results, refused=["no_workers"], cut=["worker_lost"])
    assert stats.failovers <= reserve
    assert stats.failovers_denied >= 1
    assert counts[REFUSED] >= 1
    for r in results:
        if r.error is not None and not r.audio:
            assert isinstance(r.error, HTTPStatusError)
            assert r.error.status_code == 503
            assert r.error.retry_after_s is not None
            assert r.error.retry_after_s >= 1


@pytest.mark.slow
async def test_repeated_kills_under_sustained_load() -> None:
    """Eight rounds through one SDK client: 30 streams, the busiest worker SIGKILLed mid-stream, back
    (and readmitted) before the next round."""
    results: list[Received] = []
    restarts = 0
    with run_cli(*SERVE) as (url, proc):
        assert await eventually(lambda: system(url)["totals"]["healthy"] == 2)
        async with OrpheusTTS(url, hedge_ttfb_ms=None) as tts:
            for round_ in range(8):
                tasks = await _burst(tts, STREAMS, f"Round {round_}")
                await asyncio.sleep(MID_STREAM_S * 2)
                pids = worker_pids(proc.pid)
                victim = max(pids, key=lambda pid: _worker_load(pids[pid])[0])
                kill(victim)
                results += await asyncio.gather(*tasks)
                restarts += await _restarted(url, proc, victim)
                assert await _readmitted(url), "the restarted worker's circuit never closed"
    # Back-to-back crashes spend the retry budget: what it cannot fail over is refused, retryable.
    # A stream with all its audio is never then cut (verdict): the worker writes its last chunk and
    # eos together, never waiting in between for the engine to say it has no more.
    counts = tally(results, refused=["no_workers"], cut=["worker_lost"])
    print(
        f"repeated kills: {len(results)} streams, {counts[COMPLETE]} complete, {counts[CUT]} cut, "
        f"{counts[REFUSED]} refused; {restarts} restarts"
    )
    assert counts[CUT] <= CAPACITY * restarts, "only streams running on a victim are cut"
    assert restarts == 8
    assert counts[COMPLETE] >= len(results) // 2


async def test_a_worker_crash_behind_the_gateway_does_not_cut_the_sdk_off_the_gateway() -> None:
    """Five worker_lost streams in a row once opened the SDK's circuit to the (healthy) gateway: every
    new request then failed with CircuitOpenError for the 5 s cooldown (fixed in ce1bfcd)."""
    with tone_workers(2, "--capacity", str(CAPACITY)) as procs, routed_gateway([u for u, _ in procs]) as (gw, _):
        (victim_url, victim), _ = procs
        port = victim_url.rsplit(":", 1)[1]
        async with OrpheusTTS(gw, hedge_ttfb_ms=None) as tts:
            tasks = await _burst(tts, 2 * CAPACITY, "Crash")
            assert await eventually(lambda: _worker_load(port)[0] >= 6, within_s=10, step_s=0.02)
            await asyncio.sleep(MID_STREAM_S)
            kill(victim)
            crashed = await asyncio.gather(*tasks)
            assert tally(crashed, cut=["worker_lost"])[CUT] >= 5
            after = await sdk_stream(tts, "The gateway still has a healthy worker.")
    assert after.error is None, f"refused: {after.error!r}"
    assert tally([after])[COMPLETE] == 1

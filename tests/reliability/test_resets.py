"""TCP resets mid-stream, on either hop: the client always hears about it, and nothing is replayed.

SDK ↔ gateway (a fault proxy in front of the gateway): the SDK raises
``httpx.RemoteProtocolError`` (``httpx.ConnectError`` when the reset came
before a response), and the gateway stops the worker's synthesis.
Gateway ↔ worker (a fault proxy in front of one of two workers): a reset
before the first chunk is failed over and the client never notices; after
it, the client gets ``worker_lost`` after a prefix of its audio.
"""

from __future__ import annotations

import asyncio
import subprocess

import httpx
import pytest

from orpheus_tts.sdk import OrpheusTTS
from tests.eventually import eventually
from tests.faultproxy import Faults, fault_proxy
from tests.reliability.harness import (
    COMPLETE,
    CUT,
    REFUSED,
    gateway,
    routed_gateway,
    sdk_stream,
    tally,
)

STREAMS = 8
PIECE_DELAY_MS = 10.0
"""Synthesis keeps going while the reset happens."""


def _text(n: int) -> str:
    """About 6 s of audio: ~400 kB of NDJSON, so every reset offset below falls inside the body."""
    return " ".join(f"Stream {n}, sentence {k}, carries on a little longer than the last." for k in range(9))


def _running(urls: list[str]) -> int:
    return sum(int(httpx.get(f"{u}/v1/system", timeout=2).json()["inflight"]) for u in urls)


@pytest.mark.parametrize(
    "reset_after_bytes",
    [60, 700, 30_000, 150_000],
    ids=["in-headers", "before-first-chunk", "early-body", "mid-body"],
)
async def test_reset_between_sdk_and_gateway_always_raises(
    worker_pair: list[tuple[str, subprocess.Popen[bytes]]], reset_after_bytes: int
) -> None:
    workers = [url for url, _ in worker_pair]
    with gateway(workers) as gw, fault_proxy(gw, Faults(reset_after_bytes=reset_after_bytes)) as proxy:
        async with OrpheusTTS(proxy.url, hedge_ttfb_ms=None) as tts:
            results = await asyncio.gather(
                *(sdk_stream(tts, _text(i), fault_piece_delay_ms=PIECE_DELAY_MS) for i in range(STREAMS))
            )
        # The gateway saw its client vanish and hung up on the worker, which stopped synthesizing.
        assert await eventually(lambda: _running(workers) == 0), "a reset client left synthesis running"
    counts = tally(results, refused=["ConnectError", "RemoteProtocolError"], cut=["RemoteProtocolError"])
    assert counts[COMPLETE] == 0, "every stream is longer than the reset offset"
    assert counts[CUT if reset_after_bytes >= 30_000 else REFUSED] == STREAMS
    assert proxy.connections == STREAMS, "nothing was retried through the same gateway"


@pytest.mark.parametrize(
    ("reset_after_bytes", "cut"),
    [(100, False), (600, False), (40_000, True)],
    ids=["in-headers", "before-first-chunk", "after-first-chunk"],
)
async def test_reset_between_gateway_and_worker_fails_over_or_is_worker_lost(
    worker_pair: list[tuple[str, subprocess.Popen[bytes]]], reset_after_bytes: int, cut: bool
) -> None:
    (flaky_url, _), (steady_url, _) = worker_pair
    with fault_proxy(flaky_url, Faults()) as proxy:
        with routed_gateway([proxy.url, steady_url], probe_interval_s=600.0) as (gw, router):
            proxy.faults.reset_after_bytes = reset_after_bytes  # after the start-up probe
            before = proxy.connections
            async with OrpheusTTS(gw, hedge_ttfb_ms=None) as tts:
                results = await asyncio.gather(
                    *(sdk_stream(tts, _text(i), fault_piece_delay_ms=PIECE_DELAY_MS) for i in range(STREAMS))
                )
            stats = router.stats()
    assert proxy.connections > before, "the flaky worker was never tried: the test proves nothing"
    counts = tally(results, cut=["worker_lost"])
    if cut:
        assert counts[CUT] >= 1, "streams cut after audio end with worker_lost"
        assert stats.failovers == 0, "nothing is replayed after the first chunk"
    else:
        assert counts[COMPLETE] == STREAMS, "a reset before the first chunk is invisible to the client"
        assert stats.failovers >= 1

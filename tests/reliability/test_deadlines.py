"""Streams that stop moving are ended on time: no client is ever left waiting on a silent stream.

A worker that hangs after its headers (``fault_stall_after``) is cut by the
request's deadline, at the gateway and at the worker alike; a network that
goes silent mid-body is cut by the SDK's read timeout. Either way the client
gets an error after a prefix of its audio, and the worker's slot comes back.
"""

from __future__ import annotations

import asyncio
import subprocess
import time

import httpx
import pytest

from orpheus_tts.engines.testing import render
from orpheus_tts.routing import RoutingSettings
from orpheus_tts.sdk import OrpheusTTS
from tests.eventually import eventually
from tests.faultproxy import Faults, fault_proxy
from tests.reliability.harness import COMPLETE, CUT, REFUSED, gateway, sdk_stream, tally

TIMEOUT_S = 1.5
"""The deadline the hanging requests ask for."""
EARLY_S = 0.05
"""A deadline may not fire before its time (minus timer granularity)."""
LATE_S = 1.0
"""Nor much after it: the slack allowed for a busy machine."""
STALLED = 8
HEALTHY = 8


def _text(label: str, n: int) -> str:
    return f"{label} {n}. This one runs for a few pieces of audio and then, maybe, stops."


def _running(url: str) -> int:
    return int(httpx.get(f"{url}/v1/system", timeout=2).json()["inflight"])


@pytest.mark.parametrize("via", ["gateway", "worker"])
async def test_streams_that_hang_after_headers_end_at_their_deadline(
    worker_pair: list[tuple[str, subprocess.Popen[bytes]]], via: str
) -> None:
    workers = [url for url, _ in worker_pair]
    with gateway(workers) as gw:
        target = gw if via == "gateway" else workers[0]
        async with OrpheusTTS(target, hedge_ttfb_ms=None) as tts:
            stalled = [
                sdk_stream(tts, _text("Stalled", i), timeout_s=TIMEOUT_S, fault_stall_after=2) for i in range(STALLED)
            ]
            healthy = [sdk_stream(tts, _text("Healthy", i), timeout_s=TIMEOUT_S) for i in range(HEALTHY)]
            results = await asyncio.gather(*stalled, *healthy)
    hung, fine = results[:STALLED], results[STALLED:]
    assert tally(fine)[COMPLETE] == HEALTHY, "streams beside the hanging ones are untouched"
    assert tally(hung, cut=["deadline_exceeded"])[CUT] == STALLED
    for r in hung:
        assert TIMEOUT_S - EARLY_S <= r.elapsed_s <= TIMEOUT_S + LATE_S, f"ended after {r.elapsed_s:.2f} s"
    assert await eventually(lambda: sum(_running(w) for w in workers) == 0), "hung streams still hold worker slots"


@pytest.mark.parametrize("via", ["gateway", "worker"])
async def test_no_audio_before_the_deadline_is_a_504_on_time(
    worker_pair: list[tuple[str, subprocess.Popen[bytes]]], via: str
) -> None:
    workers = [url for url, _ in worker_pair]
    with gateway(workers) as gw:
        async with OrpheusTTS(gw if via == "gateway" else workers[0], hedge_ttfb_ms=None) as tts:
            results = await asyncio.gather(
                *(sdk_stream(tts, _text("Late", i), timeout_s=TIMEOUT_S, fault_first_delay_ms=60_000) for i in range(4))
            )
    assert tally(results, refused=["deadline_exceeded"])[REFUSED] == 4
    for r in results:
        assert TIMEOUT_S - EARLY_S <= r.elapsed_s <= TIMEOUT_S + LATE_S, f"ended after {r.elapsed_s:.2f} s"
    assert await eventually(lambda: sum(_running(w) for w in workers) == 0)


async def test_a_worker_that_accepts_and_never_answers_is_a_504_at_the_deadline(
    worker_pair: list[tuple[str, subprocess.Popen[bytes]]],
) -> None:
    """A black hole in front of the only worker: the gateway's deadline still answers the client.

    Set after the gateway's start-up probe, so the worker looked healthy; ``latency_s`` rather
    than ``hang`` so that the probe's kept-alive connection is held back too.
    """
    with fault_proxy(worker_pair[0][0]) as proxy, gateway([proxy.url], probe_interval_s=600.0) as gw:
        proxy.faults.latency_s = 3600.0
        async with OrpheusTTS(gw, hedge_ttfb_ms=None) as tts:
            results = await asyncio.gather(*(sdk_stream(tts, _text("Void", i), timeout_s=TIMEOUT_S) for i in range(4)))
    assert tally(results, refused=["deadline_exceeded"])[REFUSED] == 4
    for r in results:
        assert TIMEOUT_S - EARLY_S <= r.elapsed_s <= TIMEOUT_S + LATE_S, f"ended after {r.elapsed_s:.2f} s"


async def _read_then_silence(
    tts: OrpheusTTS, text: str, faults: Faults, chunks: list[bytes], silenced: list[float]
) -> None:
    """Read ``text``'s stream; after two chunks the proxy holds back every further read."""
    async for chunk in tts.stream(text, "tone", fault_piece_delay_ms=20):
        chunks.append(chunk)
        if len(chunks) == 2:
            faults.latency_s = 3600.0
            silenced.append(time.monotonic())


async def test_a_network_that_goes_silent_mid_stream_raises_read_timeout(
    worker_pair: list[tuple[str, subprocess.Popen[bytes]]],
) -> None:
    """The SDK's own guard: no server deadline can help when the bytes stop on the wire."""
    read_timeout_s = 1.0
    settings = RoutingSettings(hedge_ttfb_ms=None, read_timeout_s=read_timeout_s, deadline_grace_s=0.0)
    text = _text("Silenced", 0) * 20
    chunks: list[bytes] = []
    silenced: list[float] = []
    with fault_proxy(worker_pair[0][0], Faults()) as proxy:
        async with OrpheusTTS(proxy.url, settings=settings) as tts:
            with pytest.raises(httpx.ReadTimeout):
                await _read_then_silence(tts, text, proxy.faults, chunks, silenced)
        # Let the proxy see the SDK hang up before it stops: FaultProxy.stop() cancels its connection
        # handlers but not their relay tasks, which would be left pending.
        assert await eventually(lambda: not proxy._tasks)
    waited = time.monotonic() - silenced[0]
    assert read_timeout_s - EARLY_S <= waited <= read_timeout_s + LATE_S + 1.0, f"raised after {waited:.2f} s"
    assert render(text).startswith(b"".join(chunks)), "what came before the silence is a prefix of the audio"

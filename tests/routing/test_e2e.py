"""The router against real workers on loopback: hedged races and disconnects reach the server."""

from __future__ import annotations

import asyncio
import time

import pytest

from orpheus_tts.engines.testing import render
from orpheus_tts.protocol import ChunkFrame
from orpheus_tts.routing import Router, RoutingSettings
from orpheus_tts.worker.app import create_app
from orpheus_tts.worker.config import WorkerConfig
from tests.eventually import eventually
from tests.faultproxy import fault_proxy
from tests.routing.engines import CountingToneEngine
from tests.servers import run_server

TEXT = "The quick brown fox. It jumps over the lazy dog."


async def test_a_hedge_loser_is_disconnected_and_the_server_stops() -> None:
    slow, fast = CountingToneEngine(first_delay_s=5.0), CountingToneEngine()
    with run_server(create_app(slow, WorkerConfig())) as slow_url, run_server(create_app(fast)) as fast_url:
        router = Router([slow_url, fast_url], RoutingSettings(hedge_ttfb_ms=200))
        try:
            # Make the slow worker look better, so it gets the first try.
            router.endpoints[1].observe_ttfb(1.0, time.monotonic())
            started = time.monotonic()
            routed = await router.open({"text": TEXT})
            first_audio_s = time.monotonic() - started
            pcm = b"".join([f.pcm async for f in routed if isinstance(f, ChunkFrame)])
        finally:
            await router.aclose()
        assert routed.endpoint == fast_url
        assert routed.hedged
        assert routed.is_hedge
        assert first_audio_s < 2.0
        assert pcm == render(TEXT), "exactly one copy of the audio"
        assert slow.started == 1
        assert await eventually(lambda: slow.cancelled == 1), "the slow worker never saw the disconnect"
        assert fast.completed == 1


async def test_abandoning_a_stream_midway_stops_the_worker() -> None:
    engine = CountingToneEngine(faults=True)
    with run_server(create_app(engine)) as url:
        router = Router([url], RoutingSettings(hedge_ttfb_ms=None))
        try:
            stream = router.stream({"text": TEXT * 4, "fault_piece_delay_ms": 100})
            async for frame in stream:
                if isinstance(frame, ChunkFrame):
                    break
            await stream.aclose()
            assert await eventually(lambda: engine.cancelled == 1)
            assert engine.completed == 0
            assert router.snapshots()[0].inflight == 0
        finally:
            await router.aclose()


@pytest.mark.parametrize("concurrency", [8])
async def test_concurrent_streams_reuse_keepalive_connections(concurrency: int) -> None:
    engine = CountingToneEngine()
    app = create_app(engine, WorkerConfig(max_queue=64))
    with run_server(app) as worker_url, fault_proxy(worker_url) as proxy:
        router = Router([proxy.url], RoutingSettings(hedge_ttfb_ms=None))
        try:

            async def one(i: int) -> bytes:
                text = f"Sentence number {i}."
                frames = [f async for f in router.stream({"text": text})]
                pcm = b"".join(f.pcm for f in frames if isinstance(f, ChunkFrame))
                assert pcm == render(text)
                return pcm

            for _ in range(3):
                await asyncio.gather(*(one(i) for i in range(concurrency)))
            snap = router.snapshots()[0]
            assert snap.requests == 3 * concurrency
            assert snap.inflight == 0
            assert snap.failures == 0
        finally:
            await router.aclose()
        assert engine.completed == 3 * concurrency
        assert proxy.connections <= concurrency, "finished streams must leave their connection reusable"


async def test_a_caller_that_gives_up_before_audio_cancels_every_attempt() -> None:
    slow_a, slow_b = CountingToneEngine(first_delay_s=5.0), CountingToneEngine(first_delay_s=5.0)
    with run_server(create_app(slow_a)) as url_a, run_server(create_app(slow_b)) as url_b:
        router = Router([url_a, url_b], RoutingSettings(hedge_ttfb_ms=100))
        try:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(router.open({"text": TEXT}), timeout=0.5)
            assert router.stats().hedges_launched == 1
            assert await eventually(lambda: slow_a.cancelled + slow_b.cancelled == 2), "both servers must see it"
            assert all(s.inflight == 0 for s in router.snapshots())
            assert all(s.failures == 0 for s in router.snapshots())
        finally:
            await router.aclose()

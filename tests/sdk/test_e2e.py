"""OrpheusTTS against real workers on loopback: hedging, breaking, broken streams, errors, loops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from orpheus_tts.engines.testing import render
from orpheus_tts.routing import BreakerState, RoutingSettings
from orpheus_tts.sdk import CircuitOpenError, EventLoopMismatchError, OrpheusTTS
from orpheus_tts.worker.app import create_app
from orpheus_tts.worker.config import WorkerConfig
from tests.faultproxy import Faults, fault_proxy
from tests.routing.engines import CountingToneEngine
from tests.sdk.apps import QueueReportingUpstream, require_bearer
from tests.servers import free_port, run_server

TEXT = "The quick brown fox. It jumps over the lazy dog."
MOVED_TEXT = "Traffic moves to the healthy one."
SLOW_FIRST_BYTE_S = 2.0
SERVER_SEES_IT_WITHIN_S = 2.0


async def eventually(condition: Callable[[], bool], within_s: float = SERVER_SEES_IT_WITHIN_S) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


async def timed(tts: OrpheusTTS, text: str, **params: Any) -> tuple[float, bytes]:
    """(seconds to the first chunk, all the audio)."""
    started = time.monotonic()
    first: float | None = None
    chunks = []
    async for chunk in tts.stream(text=text, **params):
        if first is None:
            first = time.monotonic() - started
        chunks.append(chunk)
    assert first is not None
    return first, b"".join(chunks)


async def read_into(stream: AsyncIterator[bytes], out: list[bytes]) -> None:
    async for chunk in stream:
        out.append(chunk)


async def test_hedging_hides_a_slow_first_byte() -> None:
    slow = CountingToneEngine(first_delay_s=SLOW_FIRST_BYTE_S)
    fast = CountingToneEngine()
    with run_server(create_app(slow)) as slow_url, run_server(create_app(fast)) as fast_url:
        async with OrpheusTTS([slow_url, fast_url], hedge_ttfb_ms=300) as tts:
            results: list[tuple[str, tuple[float, bytes]]] = []
            for round_ in range(3):
                texts = [f"Round {round_}, voice {i}. Hello there." for i in range(3)]
                # Concurrent streams spread over both endpoints (in-flight counts enter the score).
                results += zip(texts, await asyncio.gather(*(timed(tts, t) for t in texts)), strict=True)
        for text, (first_audio_s, pcm) in results:
            assert first_audio_s < SLOW_FIRST_BYTE_S / 2, f"{text!r}: first audio after {first_audio_s:.2f} s"
            assert pcm == render(text), "exactly one copy of the audio"
        assert slow.started >= 1, "the slow endpoint was never tried; the test proves nothing"
        assert await eventually(lambda: slow.cancelled == slow.started), "the loser's server never saw it leave"
        assert slow.completed == 0
        assert fast.completed == len(results)


async def test_breaker_opens_moves_traffic_and_a_probe_restores_it() -> None:
    dead_port = free_port()  # nothing listens here yet: connections are refused
    dead_url = f"http://127.0.0.1:{dead_port}"
    settings = RoutingSettings(hedge_ttfb_ms=None, breaker_failure_threshold=2, breaker_cooldown_s=1.0)
    healthy = CountingToneEngine()
    with run_server(create_app(healthy, WorkerConfig(max_queue=32))) as healthy_url:
        async with OrpheusTTS([dead_url, healthy_url], settings=settings) as tts:
            for _ in range(10):
                # Concurrent streams keep the healthy endpoint busy, so the dead one keeps being chosen.
                pcms = await asyncio.gather(*(timed(tts, TEXT) for _ in range(4)))
                assert all(pcm == render(TEXT) for _, pcm in pcms), "failover must hide the dead endpoint"
                if tts.endpoints()[0].breaker is BreakerState.OPEN:
                    break
            dead = tts.endpoints()[0]
            assert dead.breaker is BreakerState.OPEN
            assert dead.failures >= settings.breaker_failure_threshold
            requests_when_opened = dead.requests

            for _ in range(5):
                await timed(tts, MOVED_TEXT)
            assert tts.endpoints()[0].requests == requests_when_opened, "an open circuit takes no traffic"

            revived = CountingToneEngine()
            with run_server(create_app(revived), port=dead_port):
                await asyncio.sleep(settings.breaker_cooldown_s)
                assert tts.endpoints()[0].breaker is BreakerState.HALF_OPEN
                _, pcm = await timed(tts, TEXT)
                assert pcm == render(TEXT)
                assert revived.completed == 1, "the half-open probe went to the revived endpoint"
                assert tts.endpoints()[0].breaker is BreakerState.CLOSED


async def test_all_circuits_open_fails_at_once_with_a_runtime_error() -> None:
    urls = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    settings = RoutingSettings(breaker_failure_threshold=1, breaker_cooldown_s=30.0)
    async with OrpheusTTS(urls, settings=settings) as tts:
        with pytest.raises(httpx.ConnectError):
            await timed(tts, TEXT)
        started = time.monotonic()
        with pytest.raises(RuntimeError, match=r"^Circuit open for endpoint http://127\.0\.0\.1") as info:
            await timed(tts, TEXT)
        assert time.monotonic() - started < 0.5
        assert isinstance(info.value, CircuitOpenError)


async def test_a_stream_cut_mid_body_raises_after_the_audio_already_yielded() -> None:
    engine = CountingToneEngine()
    text = TEXT * 4
    with run_server(create_app(engine)) as url, fault_proxy(url, Faults(reset_after_bytes=20_000)) as proxy:
        async with OrpheusTTS([proxy.url], hedge_ttfb_ms=None) as tts:
            received: list[bytes] = []
            with pytest.raises(httpx.RemoteProtocolError):
                await read_into(tts.stream(text=text), received)
    assert received, "chunks before the cut are yielded"
    audio = b"".join(received)
    assert 0 < len(audio) < len(render(text))
    assert render(text).startswith(audio)
    assert proxy.connections == 1, "nothing is retried after audio"
    assert engine.started == 1


async def test_a_wrong_key_is_a_401_status_error() -> None:
    app = require_bearer(create_app(CountingToneEngine()), key="right")
    with run_server(app) as url:
        async with OrpheusTTS([url], api_key="wrong") as tts:
            with pytest.raises(httpx.HTTPStatusError) as info:
                await timed(tts, TEXT)
        assert info.value.response.status_code == 401
        assert info.value.code == "unauthorized"  # type: ignore[attr-defined]
        async with OrpheusTTS([url], api_key="right") as tts:
            _, pcm = await timed(tts, TEXT)
        assert pcm == render(TEXT)


async def test_invalid_parameters_are_a_400_naming_the_key() -> None:
    with run_server(create_app(CountingToneEngine())) as url:
        async with OrpheusTTS([url]) as tts:
            with pytest.raises(httpx.HTTPStatusError) as info:
                await timed(tts, TEXT, temperture=0.4)
    assert info.value.response.status_code == 400
    assert "temperture" in info.value.message  # type: ignore[attr-defined]


async def test_server_deadlines_are_asyncio_timeouts() -> None:
    with run_server(create_app(CountingToneEngine(faults=True))) as url:
        async with OrpheusTTS([url], hedge_ttfb_ms=None) as tts:
            with pytest.raises(asyncio.TimeoutError):  # 504 before any audio
                await timed(tts, TEXT, timeout_s=0.3, fault_first_delay_ms=2000)
            received: list[bytes] = []
            with pytest.raises(asyncio.TimeoutError):  # an error frame mid-stream
                await read_into(tts.stream(TEXT * 4, timeout_s=0.6, fault_piece_delay_ms=150), received)
            assert received


def test_a_second_event_loop_gets_a_clear_error_instead_of_hanging() -> None:
    with run_server(create_app(CountingToneEngine())) as url:
        tts = OrpheusTTS([url])

        async def speak() -> bytes:
            return b"".join([chunk async for chunk in tts.stream(text=TEXT)])

        async def speak_then_close() -> bytes:
            try:
                return await speak()
            finally:
                await tts.close()

        assert asyncio.run(speak()) == render(TEXT)
        started = time.monotonic()
        with pytest.raises(EventLoopMismatchError, match="another event loop"):
            asyncio.run(asyncio.wait_for(speak(), timeout=10))
        assert time.monotonic() - started < 1.0
        # One instance per loop is the documented way; a fresh one works on the new loop.
        tts = OrpheusTTS([url])
        assert asyncio.run(speak_then_close()) == render(TEXT)


async def test_scoring_prefers_the_endpoint_without_a_queue() -> None:
    deep, shallow = QueueReportingUpstream(queue_depth=50), QueueReportingUpstream(queue_depth=0)
    with run_server(deep.app) as deep_url, run_server(shallow.app) as shallow_url:
        async with OrpheusTTS([deep_url, shallow_url], hedge_ttfb_ms=None) as tts:
            # Two at once: the second goes to the endpoint the first did not take.
            await asyncio.gather(timed(tts, TEXT), timed(tts, TEXT))
            assert (deep.hits, shallow.hits) == (1, 1)
            for _ in range(20):
                await timed(tts, TEXT)
            snapshots = tts.endpoints()
    assert deep.hits <= 2, f"the deep queue got {deep.hits} of 22 requests"
    assert snapshots[0].queue_hint > 10

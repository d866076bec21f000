"""The SDK's realtime and event APIs against real servers: events, sessions, stream_text, errors."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator

import pytest

from orpheus_tts.engines.segmenter import Segmenter
from orpheus_tts.engines.testing import ToneEngine, render
from orpheus_tts.gateway.app import create_app as create_gateway
from orpheus_tts.gateway.auth import Authenticator
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.sdk import (
    Audio,
    Cancelled,
    ConnectError,
    Done,
    HTTPStatusError,
    Metrics,
    OrpheusTTS,
    RemoteProtocolError,
    Words,
)
from orpheus_tts.worker.app import create_app
from tests.servers import free_port, run_cli, run_server

TEXT = "Hello there, my friend. The weather is fine today. See you later!"


def _said(text: str) -> bytes:
    s = Segmenter()
    segments = [seg for word in text.split(" ") for seg in s.feed(word + " ")] + s.end()
    return b"".join(render(seg) for seg in segments)


async def _tokens(text: str) -> AsyncIterator[str]:
    for word in text.split(" "):
        yield word + " "


async def test_stream_events_yields_audio_words_and_metrics_while_stream_stays_bytes() -> None:
    with run_server(create_app(ToneEngine(word_timings=True))) as url:
        async with OrpheusTTS(url) as tts:
            events = [e async for e in tts.stream_events(TEXT, timestamps=True)]
            chunks = [c async for c in tts.stream(TEXT)]
    assert b"".join(e.data for e in events if isinstance(e, Audio)) == render(TEXT) == b"".join(chunks)
    assert all(isinstance(c, bytes) for c in chunks)
    words = [w for e in events if isinstance(e, Words) for w in e.words]
    assert [w.word for w in words] == TEXT.split()
    assert any(isinstance(e, Metrics) and "ttfb_ms" in e.values for e in events)


async def test_a_realtime_session_and_stream_text_speak_text_as_it_arrives() -> None:
    with run_server(create_app(ToneEngine())) as url:
        async with OrpheusTTS(url) as tts:
            async with tts.realtime() as session:
                assert session.ready["type"] == "ready"
                for word in TEXT.split(" "):
                    await session.send(word + " ")
                await session.end()
                events = [e async for e in session]
            piped = b"".join([b async for b in tts.stream_text(_tokens(TEXT))])
    assert isinstance(events[-1], Done)
    audio = b"".join(e.data for e in events if isinstance(e, Audio))
    assert audio == _said(TEXT) == piped
    assert events[-1].samples_total == len(audio) // 2


async def test_cancel_ends_the_events_with_cancelled() -> None:
    with run_server(create_app(ToneEngine(compute_s_per_audio_s=0.5))) as url:
        async with OrpheusTTS(url) as tts, tts.realtime() as session:
            await session.send(TEXT * 5)
            events = []
            async for event in session:
                events.append(event)
                if isinstance(event, Audio) and len(events) == 1:
                    await session.cancel()
    assert isinstance(events[-1], Cancelled)
    assert not any(isinstance(e, Done) for e in events)


async def test_the_session_connects_to_a_reachable_endpoint() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with run_server(create_app(ToneEngine())) as url:
        async with OrpheusTTS([dead, url], hedge_ttfb_ms=None) as tts:
            audio = b"".join([b async for b in tts.stream_text(_tokens("Just this."))])
        assert audio == render("Just this.")
        async with OrpheusTTS(dead) as tts:
            with pytest.raises(ConnectError):
                async with tts.realtime():
                    pass


async def test_refusals_are_http_status_errors_like_stream() -> None:
    with run_server(create_app(ToneEngine())) as worker:
        config = GatewayConfig(workers=(worker,), probe_interval_s=0.2)
        with run_server(create_gateway(config, Authenticator.from_keys(["k-1"]))) as gw:
            async with OrpheusTTS(gw, api_key="wrong") as tts:
                with pytest.raises(HTTPStatusError) as bad_key:
                    async with tts.realtime():
                        pass
            assert bad_key.value.status_code == 401
            assert bad_key.value.code == "unauthorized"
            async with OrpheusTTS(gw, api_key="k-1") as tts:
                with pytest.raises(HTTPStatusError) as bad_voice:
                    async for _ in tts.stream_text(_tokens("Hi."), voice="nobody"):
                        pass
            assert bad_voice.value.status_code == 404
            assert bad_voice.value.code == "unknown_voice"


async def test_a_broken_socket_raises_and_never_replays() -> None:
    with run_cli("worker", "--engine", "test", "--enable-test-faults") as (url, proc):
        received: list[bytes] = []

        async def listen() -> None:
            async with OrpheusTTS(url) as tts, tts.realtime(fault_piece_delay_ms=20) as session:
                await session.send(TEXT * 5)
                async for event in session:
                    if isinstance(event, Audio):
                        received.append(event.data)
                        if len(received) == 2:
                            os.killpg(proc.pid, signal.SIGKILL)

        with pytest.raises(RemoteProtocolError):
            await listen()
    assert len(received) >= 2
    assert b"".join(received) == _said(TEXT * 5)[: len(b"".join(received))]

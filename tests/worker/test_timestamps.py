"""v1 ``timestamps``: ``words`` frames in the NDJSON stream, from the worker and relayed by the gateway."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from orpheus_tts.engines.testing import ToneEngine, render
from orpheus_tts.gateway.app import create_app as create_gateway
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.protocol import SAMPLE_RATE_HZ, ChunkFrame, WordsFrame
from orpheus_tts.worker.app import create_app
from tests.servers import run_server
from tests.streams import stream_tts

TEXT = "Hello world from Orpheus. This is the second sentence!"


def _words(frames: Sequence[object]) -> list[dict[str, object]]:
    return [w for f in frames if isinstance(f, WordsFrame) for w in f.words]


async def test_words_frames_come_before_their_audio_and_cover_the_text() -> None:
    with run_server(create_app(ToneEngine(word_timings=True))) as url:
        result = await stream_tts(url, {"text": TEXT, "timestamps": True})
        plain = await stream_tts(url, {"text": TEXT})
    assert result.status == 200
    assert result.pcm == render(TEXT)
    words = _words(result.frames)
    assert [w["word"] for w in words] == TEXT.split()
    # Each words frame precedes the chunk that starts its first word.
    seen = 0
    for frame in result.frames:
        if isinstance(frame, WordsFrame):
            first = frame.words[0]["start_s"]
            assert isinstance(first, float)
            assert round(first * SAMPLE_RATE_HZ) == seen
        elif isinstance(frame, ChunkFrame):
            seen += frame.samples
    assert words[-1]["end_s"] == pytest.approx(seen / SAMPLE_RATE_HZ)
    assert not _words(plain.frames), "no words frames unless asked"


async def test_an_engine_that_cannot_tell_sends_no_words_and_no_error() -> None:
    with run_server(create_app(ToneEngine())) as url:
        result = await stream_tts(url, {"text": TEXT, "timestamps": True})
    assert result.status == 200
    assert result.pcm == render(TEXT)
    assert not _words(result.frames)


@pytest.mark.parametrize("value", ["yes", 1, [True]])
async def test_timestamps_must_be_a_boolean(value: object) -> None:
    with run_server(create_app(ToneEngine(word_timings=True))) as url:
        result = await stream_tts(url, {"text": TEXT, "timestamps": value})
    assert result.status == 400
    assert result.error_json is not None
    assert result.error_json["error"]["code"] == "invalid_request"
    assert "timestamps" in result.error_json["error"]["message"]


async def test_the_gateway_relays_words_frames() -> None:
    with run_server(create_app(ToneEngine(word_timings=True))) as worker:
        direct = await stream_tts(worker, {"text": TEXT, "timestamps": True})
        with run_server(create_gateway(GatewayConfig(workers=(worker,), probe_interval_s=0.2))) as gateway:
            relayed = await stream_tts(gateway, {"text": TEXT, "timestamps": True})
    assert relayed.status == 200
    assert _words(relayed.frames) == _words(direct.frames)
    assert relayed.pcm == direct.pcm


async def test_voices_say_whether_the_engine_reports_timings() -> None:
    import httpx

    with run_server(create_app(ToneEngine(word_timings=True))) as timed, run_server(create_app(ToneEngine())) as plain:
        async with httpx.AsyncClient() as client:
            assert (await client.get(timed + "/v1/voices")).json()["capabilities"] == {"timestamps": True}
            assert (await client.get(plain + "/v1/voices")).json()["capabilities"] == {"timestamps": False}
            with run_server(create_gateway(GatewayConfig(workers=(timed,), probe_interval_s=0.2))) as gateway:
                listing = (await client.get(gateway + "/v1/voices")).json()
            assert listing["capabilities"] == {"timestamps": True}
            with run_server(create_gateway(GatewayConfig(workers=(timed, plain), probe_interval_s=0.2))) as gateway:
                listing = (await client.get(gateway + "/v1/voices")).json()
            assert listing["capabilities"] == {"timestamps": False}, "only what every worker can tell"

"""Our LiveKit Agents plugin, driven through the framework's own stream API against a real gateway."""

from __future__ import annotations

import pytest

pytest.importorskip("livekit.agents", reason="livekit-agents is not installed: pip install '.[livekit]'")

from livekit.agents import APIConnectOptions, APIStatusError
from livekit.agents.tts import TTSError

from orpheus_tts.integrations.livekit import TTS
from tests.asr import assert_says
from tests.integrations.conftest import KEY
from tests.servers import free_port

pytestmark = pytest.mark.asr

TEXT = "Your table for two is ready, please follow me to the garden."


@pytest.mark.parametrize("rate", [24_000, 16_000, 48_000])
async def test_synthesize_says_the_words_at_the_requested_rate(gateway_url: str, rate: int) -> None:
    plugin = TTS(base_url=gateway_url, api_key=KEY, voice="alloy", sample_rate=rate)
    try:
        frames = []
        async with plugin.synthesize(TEXT) as stream:
            async for event in stream:
                frames.append(event.frame)
    finally:
        await plugin.aclose()
    assert frames
    assert {(f.sample_rate, f.num_channels) for f in frames} == {(rate, 1)}
    assert_says(b"".join(f.data.tobytes() for f in frames), TEXT, rate=rate)


async def test_a_list_of_base_urls_fails_over_to_the_one_that_answers(embedded_worker: str) -> None:
    plugin = TTS(base_url=[f"http://127.0.0.1:{free_port()}", embedded_worker], voice="tara", sample_rate=24_000)
    try:
        frame = await plugin.synthesize(TEXT).collect()
    finally:
        await plugin.aclose()
    assert_says(frame.data.tobytes(), TEXT)


async def test_a_refused_request_is_a_status_error_and_is_not_retried(gateway_url: str) -> None:
    plugin = TTS(base_url=gateway_url, api_key=KEY, voice="no-such-voice")
    errors: list[TTSError] = []
    plugin.on("error", errors.append)
    try:
        with pytest.raises(APIStatusError) as caught:
            await plugin.synthesize(TEXT, conn_options=APIConnectOptions(max_retry=3)).collect()
    finally:
        await plugin.aclose()
    assert caught.value.status_code == 404
    assert [e.recoverable for e in errors] == [False], "a 404 is final: one attempt, no retry"


async def test_a_wrong_key_is_a_401(gateway_url: str) -> None:
    plugin = TTS(base_url=gateway_url, api_key="wrong")
    try:
        with pytest.raises(APIStatusError) as caught:
            await plugin.synthesize(TEXT, conn_options=APIConnectOptions(max_retry=0)).collect()
    finally:
        await plugin.aclose()
    assert caught.value.status_code == 401


def test_bad_options_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        TTS(base_url="http://127.0.0.1:1", sample_rate=0)
    with pytest.raises(ValueError, match="base_url"):
        TTS(base_url=[])
    with pytest.raises(ValueError, match="http"):
        TTS(base_url="ftp://example")

"""OpenAI compatibility as the frameworks' stock plugins use it: each pointed at the gateway with only its base URL
and key changed."""

from __future__ import annotations

import typing

import httpx
import openai
import pytest
from openai.types.audio import speech_create_params

from orpheus_tts.gateway.openai_models import SPEECH_MODELS
from tests.asr import assert_says
from tests.integrations.conftest import KEY

pytestmark = pytest.mark.asr

TEXT = "The train to the airport leaves from the second platform."


def openai_voice_names() -> set[str]:
    """Every built-in voice the installed ``openai`` client knows (new releases add names)."""
    names: set[str] = set()
    for arg in typing.get_args(speech_create_params.Voice):
        if typing.get_origin(arg) is typing.Literal:
            names.update(typing.get_args(arg))
    return names


def test_models_list_is_parsed_by_the_official_client(gateway_url: str) -> None:
    with openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=KEY, max_retries=0) as client:
        models = client.models.list()
        assert [m.id for m in models] == list(SPEECH_MODELS)
        assert {"orpheus", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"} <= {m.id for m in models.data}
        assert all(m.object == "model" and isinstance(m.created, int) and m.owned_by for m in models.data)
        one = client.models.retrieve("gpt-4o-mini-tts")
        assert one.id == "gpt-4o-mini-tts"
        with pytest.raises(openai.NotFoundError) as caught:
            client.models.retrieve("whisper-1")
    assert caught.value.body["code"] == "not_found"  # type: ignore[index]
    assert caught.value.body["param"] == "model"  # type: ignore[index]


def test_every_openai_voice_name_resolves(gateway_url: str) -> None:
    names = openai_voice_names()
    assert {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse"} <= names
    try:
        from pipecat.services.openai.tts import VALID_VOICES
    except ImportError:
        VALID_VOICES = {}
    names |= set(VALID_VOICES)
    refused = {}
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
        for voice in sorted(names):
            body = {"model": "tts-1", "voice": voice, "input": "Hi.", "response_format": "pcm"}
            response = client.post("/v1/audio/speech", json=body)
            if response.status_code != 200 or not response.content:
                refused[voice] = (response.status_code, response.text[:200])
    assert refused == {}


def test_instructions_are_accepted_and_pcm_is_raw_24khz(gateway_url: str) -> None:
    with openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=KEY, max_retries=0) as client:
        response = client.audio.speech.create(
            model="gpt-4o-mini-tts", voice="coral", input=TEXT, instructions="Speak cheerfully.", response_format="pcm"
        )
    assert response.response.headers["content-type"].startswith("audio/pcm")
    assert_says(response.content, TEXT, rate=24_000)


# --------------------------------------------------------------------------- livekit-plugins-openai


@pytest.mark.parametrize("model", ["gpt-4o-mini-tts", "tts-1"])
async def test_livekit_stock_openai_plugin_says_the_words(gateway_url: str, model: str) -> None:
    lk_openai = pytest.importorskip(
        "livekit.plugins.openai", reason="livekit-plugins-openai is not installed: pip install '.[dev]'"
    )
    from livekit.agents.metrics import TTSMetrics

    # gpt-4o-mini-tts goes as stream_format="sse" (with usage at the end), tts-1 as plain audio.
    plugin = lk_openai.TTS(model=model, voice="ash", base_url=f"{gateway_url}/v1", api_key=KEY)
    metrics: list[TTSMetrics] = []
    plugin.on("metrics_collected", metrics.append)
    try:
        frame = await plugin.synthesize(TEXT).collect()
    finally:
        await plugin.aclose()
    assert frame.sample_rate == 24_000
    assert_says(frame.data.tobytes(), TEXT, rate=frame.sample_rate)
    assert len(metrics) == 1
    if model == "gpt-4o-mini-tts":
        assert metrics[0].input_tokens == len(TEXT), "the usage of speech.audio.done reaches the plugin"


# --------------------------------------------------------------------------- pipecat OpenAITTSService


async def test_pipecat_stock_openai_service_says_the_words(gateway_url: str) -> None:
    pytest.importorskip("pipecat", reason="pipecat-ai is not installed: pip install '.[pipecat]'")
    from pipecat.frames.frames import TTSAudioRawFrame, TTSSpeakFrame
    from pipecat.services.openai.tts import OpenAITTSService
    from pipecat.tests.utils import run_test

    service = OpenAITTSService(
        api_key=KEY,
        base_url=f"{gateway_url}/v1",
        settings=OpenAITTSService.Settings(voice="nova", model="gpt-4o-mini-tts", instructions="Calm."),
    )
    down, _up = await run_test(service, frames_to_send=[TTSSpeakFrame(TEXT)])
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert audio
    assert {(f.sample_rate, f.num_channels) for f in audio} == {(24_000, 1)}
    assert_says(b"".join(f.audio for f in audio), TEXT)

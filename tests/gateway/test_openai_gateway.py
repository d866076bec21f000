"""The official ``openai`` client against the real gateway and an embedded-voice worker."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Literal

import av
import httpx
import numpy as np
import openai
import pytest
import soxr

from orpheus_tts.encoding import AUDIO_FORMATS
from orpheus_tts.gateway.app import create_app
from orpheus_tts.gateway.auth import Authenticator
from orpheus_tts.gateway.config import GatewayConfig
from tests.asr import assert_says
from tests.servers import run_server

pytestmark = pytest.mark.asr

KEY = "openai-compat-key"
TEXT = "Please call the front desk if you need fresh towels."
# The formats that OpenAI's client accepts: the same six as AUDIO_FORMATS.
OpenAIFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]


@pytest.fixture(scope="module")
def gateway_url(embedded_worker: str) -> Iterator[str]:
    app = create_app(GatewayConfig(workers=(embedded_worker,), probe_interval_s=0.5), Authenticator.from_keys([KEY]))
    with run_server(app) as url:
        yield url


@pytest.fixture
def client(gateway_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=KEY, max_retries=0) as c:
        yield c


def decode_to_pcm(data: bytes, fmt: str) -> bytes:
    """Any response format back to s16le mono 24 kHz, with PyAV (pcm is raw already)."""
    if fmt == "pcm":
        return data
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        rate = stream.codec_context.sample_rate
    samples = np.concatenate(chunks)
    if samples.dtype.kind == "f":
        samples = np.clip(samples, -1, 1) * 32767
    resampled = soxr.resample(samples.astype(np.float32), rate, 24_000)
    return bytes(np.asarray(resampled).round().clip(-32768, 32767).astype("<i2").tobytes())


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_every_response_format_says_the_words(client: openai.OpenAI, fmt: OpenAIFormat) -> None:
    response = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format=fmt)
    assert_says(decode_to_pcm(response.content, fmt), TEXT)


def test_streaming_response_arrives_in_pieces(client: openai.OpenAI) -> None:
    pieces = []
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="nova", input=TEXT + " " + TEXT, response_format="mp3"
    ) as response:
        assert response.headers["content-type"].startswith("audio/mpeg")
        for piece in response.iter_bytes(chunk_size=None):  # type: ignore[arg-type]
            pieces.append(piece)
    assert len(pieces) > 1, "mp3 is sent while it is encoded, not at the end"
    assert_says(decode_to_pcm(b"".join(pieces), "mp3"), TEXT + " " + TEXT)


def test_sse_events_carry_the_audio(gateway_url: str) -> None:
    body = {"model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": "pcm", "stream_format": "sse"}
    audio = b""
    types = []
    with httpx.stream(
        "POST", f"{gateway_url}/v1/audio/speech", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                types.append(event["type"])
                if event["type"] == "speech.audio.delta":
                    audio += base64.b64decode(event["audio"])
    assert types[-1] == "speech.audio.done"
    assert set(types[:-1]) == {"speech.audio.delta"}
    assert_says(audio, TEXT)


def test_errors_use_openai_shape(client: openai.OpenAI, gateway_url: str) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="wrong", max_retries=0).audio.speech.create(
            model="tts-1", voice="alloy", input="hi"
        )
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.speech.create(model="tts-1", voice="alloy", input="hi", response_format="wma")  # type: ignore[arg-type]
    error = info.value.body
    assert isinstance(error, dict)
    assert error["code"] == "invalid_request"
    assert error["param"] == "response_format"
    with pytest.raises(openai.NotFoundError) as missing:
        client.audio.speech.create(model="tts-1", voice="nobody-at-all", input="hi")
    assert isinstance(missing.value.body, dict)
    assert missing.value.body["code"] == "unknown_voice"

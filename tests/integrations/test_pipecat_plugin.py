"""Our Pipecat services inside real Pipecat pipelines (the framework's own test source and sink) against a real
gateway."""

from __future__ import annotations

import pytest

pytest.importorskip("pipecat", reason="pipecat-ai is not installed: pip install '.[pipecat]'")

from pipecat.frames.frames import ErrorFrame, TTSAudioRawFrame, TTSSpeakFrame, TTSStartedFrame, TTSStoppedFrame
from pipecat.tests.utils import run_test

from orpheus_tts.integrations.pipecat import OrpheusHttpTTSService
from tests.asr import assert_says
from tests.integrations.conftest import KEY

pytestmark = pytest.mark.asr

TEXT = "The museum opens at nine and closes at five on weekdays."


@pytest.mark.parametrize("rate", [24_000, 16_000])
async def test_http_service_speaks_in_a_pipeline(gateway_url: str, rate: int) -> None:
    service = OrpheusHttpTTSService(base_url=gateway_url, api_key=KEY, voice="tara", sample_rate=rate)
    down, _up = await run_test(service, frames_to_send=[TTSSpeakFrame(TEXT)])
    kinds = [type(f) for f in down]
    assert TTSStartedFrame in kinds
    assert TTSStoppedFrame in kinds
    assert kinds.index(TTSStartedFrame) < kinds.index(TTSAudioRawFrame) < kinds.index(TTSStoppedFrame)
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert {(f.sample_rate, f.num_channels) for f in audio} == {(rate, 1)}
    assert_says(b"".join(f.audio for f in audio), TEXT, rate=rate)


async def test_http_service_reports_a_refused_voice_as_an_error_frame(gateway_url: str) -> None:
    service = OrpheusHttpTTSService(base_url=gateway_url, api_key=KEY, voice="no-such-voice")
    _down, up = await run_test(service, frames_to_send=[TTSSpeakFrame(TEXT)])
    errors = [f for f in up if isinstance(f, ErrorFrame)]
    assert errors
    assert "unknown_voice" in errors[0].error


def test_generation_parameters_and_service_options_are_told_apart() -> None:
    service = OrpheusHttpTTSService(
        base_url="http://127.0.0.1:1", temperature=0.5, seed=7, push_silence_after_stop=True
    )
    assert service._params == {"temperature": 0.5, "seed": 7}
    assert service._push_silence_after_stop is True

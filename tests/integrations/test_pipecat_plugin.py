"""Our Pipecat services inside real Pipecat pipelines (the framework's own test source and sink) against a real
gateway."""

from __future__ import annotations

import pytest

pytest.importorskip("pipecat", reason="pipecat-ai is not installed: pip install '.[pipecat]'")

import asyncio
from collections.abc import Sequence
from typing import Any

from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import run_test
from pipecat.workers.runner import WorkerRunner

from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.integrations.pipecat import OrpheusHttpTTSService, OrpheusTTSService
from orpheus_tts.worker.app import create_app as create_worker
from tests.asr import assert_says, normalize
from tests.eventually import eventually
from tests.integrations.conftest import KEY
from tests.servers import run_server

pytestmark = pytest.mark.asr

HANG_GUARD_S = 30.0
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


# --------------------------------------------------------------------------- OrpheusTTSService: the realtime socket

REPLY = "Of course. Your order will arrive tomorrow morning, and the courier will call you first."


def audio_of(frames: Sequence[Frame], rate: int) -> bytes:
    audio = [f for f in frames if isinstance(f, TTSAudioRawFrame)]
    assert audio, f"no audio among {[type(f).__name__ for f in frames]}"
    assert {(f.sample_rate, f.num_channels) for f in audio} == {(rate, 1)}
    return b"".join(f.audio for f in audio)


@pytest.mark.parametrize("rate", [24_000, 16_000])
async def test_realtime_service_speaks_a_speak_frame(gateway_url: str, rate: int) -> None:
    service = OrpheusTTSService(base_url=gateway_url, api_key=KEY, voice="tara", sample_rate=rate)
    down, _up = await run_test(service, frames_to_send=[TTSSpeakFrame(TEXT)])
    kinds = [type(f) for f in down]
    assert kinds.index(TTSStartedFrame) < kinds.index(TTSAudioRawFrame) < kinds.index(TTSStoppedFrame)
    assert_says(audio_of(down, rate), TEXT, rate=rate)
    # The server's word timings drive the text frames: every word, in order.
    words = [normalize(f.text) for f in down if isinstance(f, TTSTextFrame)]
    assert " ".join(w for w in words if w) == normalize(TEXT)


async def test_realtime_service_speaks_an_llm_reply_streamed_in_tokens(gateway_url: str) -> None:
    service = OrpheusTTSService(base_url=gateway_url, api_key=KEY, voice="alloy")
    tokens = [REPLY[i : i + 5] for i in range(0, len(REPLY), 5)]
    frames: list[Frame] = [LLMFullResponseStartFrame(), *(LLMTextFrame(t) for t in tokens), LLMFullResponseEndFrame()]
    down, _up = await run_test(service, frames_to_send=frames)
    assert_says(audio_of(down, 24_000), REPLY)


class Recorder(FrameProcessor):
    """The pipeline's sink: every frame that reaches it, and an event on the first audio."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self.first_audio = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
            if isinstance(frame, TTSAudioRawFrame):
                self.first_audio.set()
        await self.push_frame(frame, direction)


async def test_an_interruption_stops_the_audio_and_cancels_the_servers_work() -> None:
    # An engine three times slower than real time: the utterance would keep it busy for minutes.
    app = create_worker(ToneEngine(capacity=2, compute_s_per_audio_s=3.0))
    with run_server(app) as url:
        scheduler = app.state.service.scheduler
        service = OrpheusTTSService(base_url=url, word_timestamps=False)
        sink = Recorder()
        worker = PipelineWorker(Pipeline([service, sink]), cancel_on_idle_timeout=False)
        runner = WorkerRunner()
        await runner.add_workers(worker)
        running = asyncio.create_task(runner.run())
        try:
            await worker.queue_frame(TTSSpeakFrame("And then the story goes on for a while longer. " * 20))
            await asyncio.wait_for(sink.first_audio.wait(), HANG_GUARD_S)
            assert scheduler.running > 0
            await worker.queue_frame(InterruptionFrame())
            assert await eventually(lambda: any(isinstance(f, InterruptionFrame) for f in sink.frames))
            assert await eventually(lambda: scheduler.running == 0), "the server's work stopped"
            assert not await eventually(lambda: scheduler.running > 0, within_s=1.0), "and no later segment started"
            await worker.queue_frame(EndFrame())
            await asyncio.wait_for(running, HANG_GUARD_S)
        finally:
            if not running.done():
                await worker.cancel()
                await running
    after: list[Any] = sink.frames[[isinstance(f, InterruptionFrame) for f in sink.frames].index(True) :]
    assert not [f for f in after if isinstance(f, TTSAudioRawFrame)], "no audio after the interruption"


async def test_realtime_service_reports_a_refused_voice_as_an_error_frame(gateway_url: str) -> None:
    service = OrpheusTTSService(base_url=gateway_url, api_key=KEY, voice="no-such-voice")
    down, up = await run_test(service, frames_to_send=[TTSSpeakFrame(TEXT)])
    errors = [f for f in up if isinstance(f, ErrorFrame)]
    assert errors
    assert "unknown_voice" in errors[0].error
    assert not [f for f in down if isinstance(f, TTSAudioRawFrame)]


async def test_realtime_service_reports_a_wrong_key(gateway_url: str) -> None:
    service = OrpheusTTSService(base_url=gateway_url, api_key="wrong", reconnect_on_error=False)
    _down, up = await run_test(service, frames_to_send=[TTSSpeakFrame(TEXT)])
    errors = [f.error for f in up if isinstance(f, ErrorFrame)]
    assert errors
    assert any("401" in e or "unauthorized" in e for e in errors), errors

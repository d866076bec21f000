"""Our LiveKit Agents plugin, driven through the framework's own stream API against a real gateway."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytest.importorskip("livekit.agents", reason="livekit-agents is not installed: pip install '.[livekit]'")

from livekit import rtc
from livekit.agents import Agent, AgentSession, APIConnectOptions, APIStatusError
from livekit.agents.tts import SynthesizedAudio, TTSError
from livekit.agents.types import USERDATA_TIMED_TRANSCRIPT
from livekit.agents.voice.io import AudioOutput, AudioOutputCapabilities

from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.integrations.livekit import TTS
from orpheus_tts.worker.app import create_app as create_worker
from tests.asr import assert_says, normalize
from tests.eventually import eventually
from tests.integrations.conftest import KEY
from tests.servers import free_port, run_server

pytestmark = pytest.mark.asr

HANG_GUARD_S = 30.0
TEXT = "Your table for two is ready, please follow me to the garden."


def assert_timed_words(frames: list[rtc.AudioFrame], text: str) -> None:
    """One timed transcript per word of ``text``, in order, monotonic, within the audio."""
    timed = [t for f in frames for t in f.userdata.get(USERDATA_TIMED_TRANSCRIPT, [])]
    assert [normalize(t) for t in timed] == normalize(text).split(), "one timed transcript per word"
    starts = [t.start_time for t in timed]
    assert starts == sorted(starts), "timed transcripts are monotonic"
    assert all(t.start_time <= t.end_time for t in timed)
    assert timed[-1].end_time <= sum(f.duration for f in frames) + 0.05


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
    assert_timed_words(frames, TEXT)


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


# --------------------------------------------------------------------------- stream(): the realtime socket

STREAMED = "Good evening and welcome aboard. We will be landing in about twenty minutes, so please stay seated."


def llm_pieces(text: str) -> list[str]:
    """The text as an LLM writes it: word pieces, spaces attached, some words split in two."""
    pieces: list[str] = []
    for i, word in enumerate(text.split(" ")):
        token = word if i == 0 else " " + word
        if len(token) > 6:
            pieces += [token[:4], token[4:]]
        else:
            pieces.append(token)
    return pieces


async def drive_like_agent_session(plugin: TTS, pieces: list[str]) -> list[SynthesizedAudio]:
    """What ``Agent.tts_node`` does: push text from a task while reading the stream, then ``end_input``."""
    events: list[SynthesizedAudio] = []
    async with plugin.stream() as stream:

        async def forward() -> None:
            for piece in pieces:
                stream.push_text(piece)
                await asyncio.sleep(0)
            stream.flush()
            stream.end_input()

        task = asyncio.create_task(forward())
        try:
            async for event in stream:
                events.append(event)
        finally:
            await task
    return events


@pytest.mark.parametrize("rate", [24_000, 16_000, 48_000])
async def test_stream_says_the_pushed_words_at_the_requested_rate(gateway_url: str, rate: int) -> None:
    plugin = TTS(base_url=gateway_url, api_key=KEY, voice="alloy", sample_rate=rate)
    try:
        events = await drive_like_agent_session(plugin, llm_pieces(STREAMED))
    finally:
        await plugin.aclose()
    frames = [e.frame for e in events]
    assert frames
    assert {(f.sample_rate, f.num_channels) for f in frames} == {(rate, 1)}
    assert events[-1].is_final
    assert len({e.segment_id for e in events}) == 1
    assert_says(b"".join(f.data.tobytes() for f in frames), STREAMED, rate=rate)

    assert_timed_words(frames, STREAMED)


async def test_stream_retries_nothing_and_errors_cleanly_on_a_refused_voice(gateway_url: str) -> None:
    plugin = TTS(base_url=gateway_url, api_key=KEY, voice="no-such-voice")
    errors: list[TTSError] = []
    plugin.on("error", errors.append)
    try:
        with pytest.raises(APIStatusError) as caught:
            await drive_like_agent_session(plugin, ["Hello there."])
    finally:
        await plugin.aclose()
    assert caught.value.status_code == 404
    assert [e.recoverable for e in errors] == [False]


def requests_seen(url: str) -> float:
    """How many synthesis requests the worker has started (one per realtime segment), whatever their outcome."""
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        if family.name == "orpheus_requests":
            return sum(s.value for s in family.samples if s.name == "orpheus_requests_total")
    return 0.0


async def test_closing_the_stream_midway_cancels_the_servers_work() -> None:
    # An engine three times slower than real time: the whole text would keep it busy for minutes.
    engine = ToneEngine(capacity=2, compute_s_per_audio_s=3.0)
    app = create_worker(engine)
    sentences = 20
    with run_server(app) as url:
        scheduler = app.state.service.scheduler
        plugin = TTS(base_url=url, sample_rate=24_000)
        try:
            stream = plugin.stream()
            stream.push_text("And then the story goes on for a while longer. " * sentences)
            stream.flush()
            stream.end_input()
            first = await asyncio.wait_for(stream.__anext__(), HANG_GUARD_S)
            assert first.frame.samples_per_channel > 0
            assert scheduler.running > 0
            await stream.aclose()
            assert await eventually(lambda: scheduler.running == 0), "the engine work in flight stopped"
            assert not await eventually(lambda: scheduler.running > 0, within_s=1.0), "and no later segment started"
            assert requests_seen(url) < sentences / 2, "the rest of the text was dropped"
        finally:
            await plugin.aclose()


# --------------------------------------------------------------------------- inside a real AgentSession


class CapturingAudioOutput(AudioOutput):
    """An audio sink in place of a room: keeps every frame the session plays, as fast as they come."""

    def __init__(self, sample_rate: int) -> None:
        super().__init__(label="capture", capabilities=AudioOutputCapabilities(pause=False), sample_rate=sample_rate)
        self.frames: list[rtc.AudioFrame] = []
        self._position_s = 0.0

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        self.frames.append(frame)
        self._position_s += frame.duration

    def flush(self) -> None:
        super().flush()
        self.on_playback_finished(playback_position=self._position_s, interrupted=False)
        self._position_s = 0.0

    def clear_buffer(self) -> None:
        self.on_playback_finished(playback_position=self._position_s, interrupted=True)
        self._position_s = 0.0


async def start_session(plugin: TTS, sink: CapturingAudioOutput) -> AgentSession[None]:
    session: AgentSession[None] = AgentSession(tts=plugin)
    session.output.audio = sink
    await session.start(agent=Agent(instructions="Read aloud."), record=False)
    return session


async def test_an_agent_session_speaks_through_the_plugin(gateway_url: str) -> None:
    plugin = TTS(base_url=gateway_url, api_key=KEY, voice="nova", sample_rate=48_000)
    sink = CapturingAudioOutput(48_000)
    session = await start_session(plugin, sink)
    try:
        await asyncio.wait_for(session.say(STREAMED).wait_for_playout(), HANG_GUARD_S)
    finally:
        await session.aclose()
        await plugin.aclose()
    assert {f.sample_rate for f in sink.frames} == {48_000}
    assert_says(b"".join(f.data.tobytes() for f in sink.frames), STREAMED, rate=48_000)


async def test_interrupting_the_agent_cancels_the_servers_work() -> None:
    app = create_worker(ToneEngine(capacity=2, compute_s_per_audio_s=3.0))
    with run_server(app) as url:
        scheduler = app.state.service.scheduler
        plugin = TTS(base_url=url)
        sink = CapturingAudioOutput(24_000)
        session = await start_session(plugin, sink)
        try:
            handle = session.say("And then the story goes on for a while longer. " * 20)
            assert await eventually(lambda: bool(sink.frames), within_s=HANG_GUARD_S)
            assert scheduler.running > 0
            handle.interrupt()
            await asyncio.wait_for(handle.wait_for_playout(), HANG_GUARD_S)
            assert handle.interrupted
            assert await eventually(lambda: scheduler.running == 0), "the server's work stopped"
            assert not await eventually(lambda: scheduler.running > 0, within_s=1.0), "and no later segment started"
        finally:
            await session.aclose()
            await plugin.aclose()

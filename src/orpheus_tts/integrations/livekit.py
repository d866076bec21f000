"""Orpheus TTS for LiveKit Agents 1.x (``pip install 'orpheus-tts[livekit]'``)::

    from livekit.agents import AgentSession
    from orpheus_tts.integrations.livekit import TTS

    session = AgentSession(tts=TTS(base_url="http://127.0.0.1:8000", voice="tara"), ...)

:meth:`TTS.synthesize` speaks a whole text over protocol v1 (``POST
/v1/tts/stream``, through the SDK: failover and hedging across
``base_url``'s endpoints); :meth:`TTS.stream` takes text as the LLM writes it
over the realtime socket (``/v1/tts/realtime``): pushed text goes out as
``text`` messages, ``flush()`` as ``flush``, ``end_input()`` as ``end``, and
closing the stream early sends ``cancel``, which stops the server's work for
it. Both push the word timings (from engines that report them) as timed
transcripts and keep the framework's retry rule: an error is retryable only
while no audio was pushed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from orpheus_tts.integrations import missing_extra

try:
    from livekit import rtc
    from livekit.agents import (
        APIConnectionError,
        APIConnectOptions,
        APIError,
        APIStatusError,
        APITimeoutError,
        tts,
        utils,
    )
    from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, TimedString
except ImportError as exc:  # pragma: no cover - exercised by the packaging test
    raise missing_extra("livekit", "livekit-agents", exc) from exc

from orpheus_tts.integrations import _realtime
from orpheus_tts.protocol import SAMPLE_RATE_HZ
from orpheus_tts.sdk import (
    Audio,
    Cancelled,
    ConnectError,
    DeadlineExceeded,
    Done,
    Flushed,
    HTTPStatusError,
    OrpheusError,
    OrpheusTTS,
    ReadTimeout,
    StreamError,
    Words,
)
from orpheus_tts.sdk.realtime import RealtimeSession

__all__ = ["DEFAULT_SAMPLE_RATE_HZ", "ChunkedStream", "SynthesizeStream", "TTS"]

DEFAULT_SAMPLE_RATE_HZ = SAMPLE_RATE_HZ
"""The engines' own rate; any other rate is resampled (by the server where it can, else here)."""
NUM_CHANNELS = 1


class TTS(tts.TTS[None]):
    """A LiveKit Agents TTS backed by an Orpheus gateway (or workers).

    ``base_url``: the gateway's URL, or a list of gateways/workers (v1
    requests go to the least-loaded healthy one, with failover and hedging;
    the realtime socket connects to the best reachable one). ``api_key`` is
    sent as ``Authorization: Bearer``. ``voice``: a voice name (``None``: the
    engine's default). ``sample_rate``: the rate of the frames this TTS
    yields, in Hz; 24000, 16000 and 8000 are made by the server, any other
    rate is resampled here. Every other keyword (``temperature``, ``speed``,
    ``seed``…) is a generation parameter, sent as in v1 and validated by the
    engine.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        api_key: str | None = None,
        voice: str | None = None,
        sample_rate: int = DEFAULT_SAMPLE_RATE_HZ,
        **params: Any,
    ) -> None:
        if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate!r}")
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("base_url must name at least one gateway or worker URL")
        for url in urls:
            if urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(f"base_url must be http:// or https://, got {url!r}")
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=True, aligned_transcript=True),
            sample_rate=sample_rate,
            num_channels=NUM_CHANNELS,
        )
        self._urls = urls
        self._api_key = api_key
        self._voice = voice
        self._params = dict(params)
        self._client = OrpheusTTS(urls, api_key=api_key)

    @property
    def model(self) -> str:
        return "orpheus"

    @property
    def provider(self) -> str:
        return "orpheus-tts"

    @property
    def voice(self) -> str | None:
        return self._voice

    def update_options(self, *, voice: str | None = None, **params: Any) -> None:
        """Change the voice and/or generation parameters for the next utterances."""
        if voice is not None:
            self._voice = voice
        self._params.update(params)

    def synthesize(self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> ChunkedStream:
        return ChunkedStream(tts=self, input_text=text, conn_options=conn_options)

    def stream(self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> SynthesizeStream:
        return SynthesizeStream(tts=self, conn_options=conn_options)

    async def aclose(self) -> None:
        await self._client.close()


class ChunkedStream(tts.ChunkedStream):
    """One whole text over protocol v1 (the SDK's ``stream``)."""

    def __init__(self, *, tts: TTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._tts: TTS = tts
        self._voice = tts._voice
        self._params = dict(tts._params)

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        rate = self._tts.sample_rate
        output_emitter.initialize(
            request_id=utils.shortuuid(), sample_rate=rate, num_channels=NUM_CHANNELS, mime_type="audio/pcm"
        )
        out = _Rate(SAMPLE_RATE_HZ, rate)
        pushed = False
        events = self._tts._client.stream_events(self.input_text, voice=self._voice, timestamps=True, **self._params)
        try:
            async for event in events:
                if isinstance(event, Audio):
                    for data in out.push(event.data):
                        output_emitter.push(data)
                        pushed = True
                elif isinstance(event, Words):
                    output_emitter.push_timed_transcript(_timed(event))
            for data in out.flush():
                output_emitter.push(data)
        except OrpheusError as exc:
            raise _from_sdk(exc, after_audio=pushed) from exc
        output_emitter.flush()


class SynthesizeStream(tts.SynthesizeStream):
    """Text pushed as it is written, over the realtime socket (an SDK realtime session): one context per stream."""

    def __init__(self, *, tts: TTS, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, conn_options=conn_options)
        self._tts: TTS = tts
        self._voice = tts._voice
        self._params = dict(tts._params)

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        rate = self._tts.sample_rate
        request_id = utils.shortuuid()
        output_emitter.initialize(
            request_id=request_id, sample_rate=rate, num_channels=NUM_CHANNELS, mime_type="audio/pcm", stream=True
        )
        out = _Rate(_server_rate(rate), rate)
        session = self._tts._client.realtime(
            self._voice,
            output_format=_realtime.output_format(rate),
            timestamps=True,
            open_timeout_s=self._conn_options.timeout or _realtime.DEFAULT_OPEN_TIMEOUT_S,
            **self._params,
        )
        pushed = False
        finished = False
        try:
            async with session:
                output_emitter.start_segment(segment_id=request_id)
                sender = asyncio.create_task(self._send_input(session), name="orpheus-realtime-send")
                try:
                    async for event in session:
                        if isinstance(event, Audio):
                            for data in out.push(event.data):
                                output_emitter.push(data)
                                pushed = True
                        elif isinstance(event, Words):
                            output_emitter.push_timed_transcript(_timed(event))
                        elif isinstance(event, Flushed):
                            output_emitter.flush()
                        elif isinstance(event, (Done, Cancelled)):
                            finished = True
                            break
                    for data in out.flush():
                        output_emitter.push(data)
                    if sender.done() and sender.exception() is not None:
                        raise sender.exception()  # type: ignore[misc]
                finally:
                    if not finished:
                        # Closed early (barge-in) or failed: the server drops the text and stops the engine.
                        with contextlib.suppress(OrpheusError):
                            await session.cancel()
                    await utils.aio.cancel_and_wait(sender)
        except OrpheusError as exc:
            raise _from_sdk(exc, after_audio=pushed) from exc

    async def _send_input(self, session: RealtimeSession) -> None:
        async for data in self._input_ch:
            if isinstance(data, self._FlushSentinel):
                await session.flush()
            elif data:
                self._mark_started()
                await session.send(data)
        await session.end()


class _Rate:
    """PCM at ``source`` Hz as bytes at ``target`` Hz: the same bytes, or through LiveKit's resampler."""

    def __init__(self, source: int, target: int) -> None:
        self._resampler = None if source == target else rtc.AudioResampler(source, target, num_channels=NUM_CHANNELS)

    def push(self, pcm: bytes) -> list[bytes]:
        if self._resampler is None:
            return [pcm] if pcm else []
        return [f.data.tobytes() for f in self._resampler.push(bytearray(pcm))]

    def flush(self) -> list[bytes]:
        if self._resampler is None:
            return []
        return [f.data.tobytes() for f in self._resampler.flush()]


def _timed(event: Words) -> list[TimedString]:
    """Word timings as LiveKit's timed transcripts (each word with the space that follows it)."""
    return [TimedString(f"{w.word} ", start_time=w.start_s, end_time=w.end_s) for w in event.words]


def _server_rate(sample_rate: int) -> int:
    return int(_realtime.output_format(sample_rate).removeprefix("pcm_"))


def _from_sdk(exc: OrpheusError, *, after_audio: bool) -> APIError:
    """The LiveKit error for an SDK error: retryable only when the server says so and no audio was pushed."""
    if isinstance(exc, HTTPStatusError):
        return APIStatusError(
            exc.message or str(exc),
            status_code=exc.status_code,
            body={"code": exc.code, "message": exc.message},
            retryable=not after_audio and exc.status_code in (429, 502, 503),
        )
    if isinstance(exc, (DeadlineExceeded, ReadTimeout)):
        return APITimeoutError(str(exc), retryable=not after_audio)
    if isinstance(exc, ConnectError):
        return APIConnectionError(str(exc), retryable=not after_audio)
    if isinstance(exc, StreamError):
        return APIError(str(exc), body={"code": exc.code}, retryable=exc.retryable and not after_audio)
    return APIError(str(exc), retryable=False)

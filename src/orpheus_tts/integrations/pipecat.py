"""Orpheus TTS for Pipecat 1.x (``pip install 'orpheus-tts[pipecat]'``)::

    from orpheus_tts.integrations.pipecat import OrpheusTTSService

    tts = OrpheusTTSService(base_url="http://127.0.0.1:8000", voice="tara")
    pipeline = Pipeline([transport.input(), stt, user_aggregator, llm, tts, transport.output(), ...])

:class:`OrpheusTTSService` speaks over the realtime socket
(``/v1/tts/realtime``), in the shape of Pipecat's own WebSocket services: each
turn is one server context; :meth:`run_tts` sends the turn's text as it
comes, a receive task appends the audio to the turn's audio context and adds
the word timestamps, the end of the turn (``flush_audio``) sends ``flush``
and ``end``, and an interruption (``on_audio_context_interrupted``) sends
``cancel``, which stops the server's work for that turn.
:class:`OrpheusHttpTTSService` speaks each text over protocol v1 (``POST
/v1/tts/stream``) through the SDK.

Both take ``base_url``, ``api_key``, ``voice``, ``sample_rate`` (Hz of the
frames they push; 24000, 16000 and 8000 come from the server, any other rate
is resampled here) and generation parameters as keywords (``temperature``,
``speed``…). Keywords that Pipecat's ``TTSService`` itself takes
(``text_aggregation_mode``, ``push_silence_after_stop``…) go to it.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

from orpheus_tts.integrations import missing_extra

try:
    from loguru import logger
    from pipecat.frames.frames import ErrorFrame, Frame, TTSAudioRawFrame, TTSStoppedFrame
    from pipecat.processors.frame_processor import FrameProcessorSetup
    from pipecat.services.settings import TTSSettings
    from pipecat.services.tts_service import TTSService, WebsocketTTSService
    from pipecat.services.websocket_service import WebsocketService
except ImportError as exc:  # pragma: no cover - exercised by the packaging test
    raise missing_extra("pipecat", "pipecat-ai", exc) from exc

from websockets.protocol import State

from orpheus_tts.integrations import _realtime
from orpheus_tts.protocol import SAMPLE_RATE_HZ
from orpheus_tts.sdk import OrpheusError, OrpheusTTS

__all__ = ["DEFAULT_SAMPLE_RATE_HZ", "OrpheusHttpTTSService", "OrpheusTTSService"]

DEFAULT_SAMPLE_RATE_HZ = SAMPLE_RATE_HZ
"""The engines' own rate; any other rate is resampled (by the server where it can, else here)."""
MODEL = "orpheus"


def _split(kwargs: dict[str, Any], *bases: type) -> tuple[dict[str, Any], dict[str, Any]]:
    """(keywords of the Pipecat base classes, generation parameters)."""
    names = {
        name
        for base in bases
        for name, p in inspect.signature(base.__init__).parameters.items()  # type: ignore[misc]
        if p.kind is inspect.Parameter.KEYWORD_ONLY or p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    } - {"self", "sample_rate", "settings"}
    service = {k: v for k, v in kwargs.items() if k in names}
    params = {k: v for k, v in kwargs.items() if k not in names}
    return service, params


def _check_rate(sample_rate: int) -> int:
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate!r}")
    return sample_rate


class OrpheusTTSService(WebsocketTTSService):
    """Pipecat TTS on the realtime socket: text in as the LLM writes it, audio and word timings back.

    ``word_timestamps`` (default on) asks the server for word timings and
    lets them drive Pipecat's text frames (the words appear as they are
    spoken); with an engine that reports none, turn it off so Pipecat pushes
    the text itself.
    """

    def __init__(
        self,
        *,
        base_url: str | Sequence[str],
        api_key: str | None = None,
        voice: str | None = None,
        sample_rate: int = DEFAULT_SAMPLE_RATE_HZ,
        word_timestamps: bool = True,
        **kwargs: Any,
    ) -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("base_url must name at least one gateway or worker URL")
        self._urls = [_realtime.realtime_url(u) for u in urls]
        service, params = _split(kwargs, TTSService, WebsocketService)
        service.setdefault("push_text_frames", not word_timestamps)
        super().__init__(
            sample_rate=_check_rate(sample_rate),
            push_start_frame=True,
            append_trailing_space=True,
            settings=TTSSettings(model=MODEL, voice=voice, language=None),
            **service,
        )
        self._api_key = api_key
        self._params = params
        self._word_timestamps = word_timestamps
        self._next_url = 0
        self._open_contexts: set[str] = set()
        self._receive_task: Any = None

    def can_generate_metrics(self) -> bool:
        return True

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]  # pipecat narrows it
        await super().setup(setup)
        await self._connect()

    async def _connect(self) -> None:
        await super()._connect()
        await self._connect_websocket()
        if self._websocket and not self._receive_task:
            self._receive_task = self.create_task(self._receive_task_handler(self._report_error))

    async def _disconnect(self) -> None:
        await super()._disconnect()
        if self._receive_task:
            await self.cancel_task(self._receive_task)
            self._receive_task = None
        await self._disconnect_websocket()

    async def _connect_websocket(self) -> None:
        if self._websocket and self._websocket.state is State.OPEN:
            return
        url = self._urls[self._next_url % len(self._urls)]
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        try:
            self._websocket = await self._websocket_connect(url, additional_headers=headers)
            self._open_contexts.clear()
            await self._call_event_handler("on_connected")
        except Exception as exc:
            self._next_url += 1  # the next attempt tries the next URL
            self._websocket = None
            await self.push_error(error_msg=f"cannot connect to {url}: {exc}", exception=exc)
            await self._call_event_handler("on_connection_error", f"{exc}")

    async def _disconnect_websocket(self) -> None:
        try:
            await self.stop_all_metrics()
            if self._websocket:
                await self._websocket.close()
        except Exception as exc:
            logger.warning(f"{self} error closing the realtime socket: {exc}")
        finally:
            self._websocket = None
            self._open_contexts.clear()
            await self._call_event_handler("on_disconnected")

    async def _send(self, message_type: str, context_id: str, **fields: Any) -> None:
        if self._websocket is None:
            raise ConnectionError("the realtime socket is not connected")
        await _realtime.send(self._websocket, message_type, context_id, **fields)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Send ``text`` to the turn's server context (opened on its first text)."""
        try:
            if not self._websocket or self._websocket.state is State.CLOSED:
                await self._connect()
            if context_id not in self._open_contexts:
                fields = _realtime.start_fields(
                    self._settings.voice if isinstance(self._settings.voice, str) else None,
                    self._params,
                    self.sample_rate,
                    timestamps=self._word_timestamps,
                )
                await self._send("start", context_id, **fields)
                self._open_contexts.add(context_id)
            await self._send("text", context_id, text=text)
            await self.start_tts_usage_metrics(text)
        except Exception as exc:
            yield ErrorFrame(error=f"{self} cannot send text: {exc}")
            yield TTSStoppedFrame(context_id=context_id)
            return
        yield None

    async def flush_audio(self, context_id: str | None = None) -> None:
        """The turn's text is complete: synthesize what is buffered (``flush``) and close the context (``end``)."""
        flush_id = context_id or self.get_active_audio_context_id()
        if not flush_id or flush_id not in self._open_contexts or not self._websocket:
            return
        try:
            await self._send("flush", flush_id)
            await self._send("end", flush_id)
        except Exception as exc:
            logger.warning(f"{self} cannot flush context {flush_id}: {exc}")

    async def on_audio_context_interrupted(self, context_id: str) -> None:
        """Barge-in: the server drops the context's text and stops its engine work."""
        await self.stop_all_metrics()
        if context_id in self._open_contexts and self._websocket:
            self._open_contexts.discard(context_id)
            try:
                await self._send("cancel", context_id)
            except Exception as exc:
                logger.warning(f"{self} cannot cancel context {context_id}: {exc}")
        await super().on_audio_context_interrupted(context_id)

    async def _receive_messages(self) -> None:
        if self._websocket is None:
            raise ConnectionError("the realtime socket is not connected")
        server_rate = int(_realtime.output_format(self.sample_rate).removeprefix("pcm_"))
        async for raw in self._websocket:
            message = json.loads(raw)
            if not isinstance(message, dict):
                continue
            kind = message.get("type")
            context_id = message.get("context_id")
            if kind == "error" and context_id is None:
                await self.push_error(error_msg=f"{self} realtime session error: {_realtime.error_of(message)}")
                continue
            if not isinstance(context_id, str) or not self.audio_context_available(context_id):
                continue  # a context that was interrupted, or none of ours
            if kind == "audio":
                await self.stop_ttfb_metrics()
                pcm = _realtime.audio_of(message)
                if server_rate != self.sample_rate:
                    pcm = await self._resampler.resample(pcm, server_rate, self.sample_rate)
                frame = TTSAudioRawFrame(pcm, self.sample_rate, 1, context_id=context_id)
                await self.append_to_audio_context(context_id, frame)
            elif kind == "words":
                timings = [(w.word, w.start_s) for w in _realtime.words_of(message)]
                await self.add_word_timestamps(timings, context_id)
            elif kind in ("done", "error"):
                self._open_contexts.discard(context_id)
                if kind == "error":
                    await self.push_error(error_msg=f"{self} synthesis failed: {_realtime.error_of(message)}")
                await self.append_to_audio_context(context_id, TTSStoppedFrame(context_id=context_id))
                await self.remove_audio_context(context_id)


class OrpheusHttpTTSService(TTSService):
    """Pipecat TTS over protocol v1, one request per text (the SDK: failover and hedging across ``base_url``)."""

    def __init__(
        self,
        *,
        base_url: str | Sequence[str],
        api_key: str | None = None,
        voice: str | None = None,
        sample_rate: int = DEFAULT_SAMPLE_RATE_HZ,
        **kwargs: Any,
    ) -> None:
        service, params = _split(kwargs, TTSService)
        super().__init__(
            sample_rate=_check_rate(sample_rate),
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model=MODEL, voice=voice, language=None),
            **service,
        )
        self._client = OrpheusTTS(base_url, api_key=api_key)
        self._params = params

    def can_generate_metrics(self) -> bool:
        return True

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._client.close()

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Speak ``text``; frames at the service's rate, as they arrive."""
        voice = self._settings.voice if isinstance(self._settings.voice, str) else None
        await self.start_ttfb_metrics()
        await self.start_tts_usage_metrics(text)
        try:
            pcm: AsyncIterator[bytes] = self._client.stream(text, voice=voice, **self._params)
            async for frame in self._stream_audio_frames_from_iterator(
                pcm, in_sample_rate=SAMPLE_RATE_HZ, context_id=context_id
            ):
                await self.stop_ttfb_metrics()
                yield frame
        except OrpheusError as exc:
            yield ErrorFrame(error=f"{self} synthesis failed: {exc}")

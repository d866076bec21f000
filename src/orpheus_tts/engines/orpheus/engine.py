"""The Orpheus engine: an LLM writes SNAC audio tokens, a streaming decoder makes 24 kHz PCM.

Per request: the text is checked for unknown tags and split into segments
(sentences); each segment is one generation. Its tokens become frames
(:mod:`.tokens`), frames become decoder windows (:mod:`.decoder`) that are
decoded in batches with other requests' windows off the event loop, and the
audio of consecutive segments is crossfaded at the seams (:mod:`.seams`).
Token generation and decoding overlap: a segment's tokens are read by a
producer task while the request's generator yields decoded audio in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from orpheus_tts.audio import float_to_int16
from orpheus_tts.engines.base import EngineError, ParamSpec, VoiceCatalog, close_iterator
from orpheus_tts.engines.orpheus.backends import Encoder, TokenBackend
from orpheus_tts.engines.orpheus.codec import SnacCodec
from orpheus_tts.engines.orpheus.decoder import (
    DEFAULT_CONTEXT_FRAMES,
    DEFAULT_DECODE_BATCH_SIZE,
    DEFAULT_DECODE_BATCH_WAIT_S,
    DEFAULT_MAX_FRAMES_PER_WINDOW,
    DecodeBatcher,
    StreamWindows,
    WindowSettings,
)
from orpheus_tts.engines.orpheus.loading import DEFAULT_SNAC_ID, load_codec, resolve_weights
from orpheus_tts.engines.orpheus.prompt import (
    DEFAULT_MAX_MODEL_LEN,
    LANGUAGES,
    Prompt,
    SamplingParams,
    build_prompt,
    check_tags,
    param_specs,
    sampling_from_params,
    voices_for,
)
from orpheus_tts.engines.orpheus.seams import DEFAULT_CROSSFADE_S, Crossfader
from orpheus_tts.engines.orpheus.tokens import FrameParser, ParserCounters
from orpheus_tts.engines.text import DEFAULT_MAX_SEGMENT_CHARS, split_segments
from orpheus_tts.protocol import SAMPLE_RATE_HZ

__all__ = ["OrpheusConfig", "OrpheusEngine"]

logger = logging.getLogger(__name__)

PROMPT_OVERHEAD_TOKENS = 8
"""Special tokens around the text, for sizing a text prompt that has no ids."""


@dataclass(frozen=True)
class OrpheusConfig:
    """Engine settings (the backend has its own)."""

    snac: str = DEFAULT_SNAC_ID
    """SNAC 24 kHz decoder: a directory or a Hugging Face repository id."""
    allow_download: bool = False
    """Fetch missing weights from the Hugging Face Hub instead of failing."""
    capacity: int | None = None
    """Requests synthesized at once; ``None`` takes the backend's default."""
    language: str = "en"
    """Voice set, one of :data:`~orpheus_tts.engines.orpheus.prompt.LANGUAGES`."""
    decoder_device: str | None = None
    """Device of the SNAC decoder; ``None``: CUDA when available, else CPU."""
    max_model_len: int = DEFAULT_MAX_MODEL_LEN
    """Prompt plus generated tokens per segment, in tokens."""
    left_context_frames: int = DEFAULT_CONTEXT_FRAMES
    right_context_frames: int = DEFAULT_CONTEXT_FRAMES
    max_frames_per_window: int = DEFAULT_MAX_FRAMES_PER_WINDOW
    decode_batch_size: int = DEFAULT_DECODE_BATCH_SIZE
    """Most windows per decoder call."""
    decode_batch_wait_s: float = DEFAULT_DECODE_BATCH_WAIT_S
    """Longest a window waits for others before its batch is decoded, in seconds."""
    crossfade_s: float = DEFAULT_CROSSFADE_S
    """Overlap at each seam between text segments, in seconds (0 disables)."""
    max_segment_chars: int = DEFAULT_MAX_SEGMENT_CHARS
    """Longest text segment generated in one go, in characters."""
    voice_aliases: dict[str, str] | None = None
    """Extra voice names; ``None`` maps the OpenAI voice names to the default voice."""

    def __post_init__(self) -> None:
        if self.language not in LANGUAGES:
            raise ValueError(f"unknown language {self.language!r}; choose one of: {', '.join(LANGUAGES)}")
        if self.capacity is not None and self.capacity < 1:
            raise ValueError("capacity must be at least 1")
        if self.crossfade_s < 0:
            raise ValueError("crossfade_s must not be negative")
        if self.max_model_len < 64:
            raise ValueError("max_model_len must be at least 64 tokens")

    @property
    def window(self) -> WindowSettings:
        return WindowSettings(self.left_context_frames, self.right_context_frames, self.max_frames_per_window)


@dataclass
class EngineCounters:
    """Totals since start, for metrics."""

    parser: ParserCounters = field(default_factory=ParserCounters)
    segments: int = 0
    """Text segments generated."""
    length_capped: int = 0
    """Segments that hit ``max_tokens`` before the stop token."""
    empty_segments: int = 0
    """Segments that ended without one complete frame."""
    samples: int = 0
    """Audio samples produced."""


@dataclass
class _Failed:
    exc: BaseException


class OrpheusEngine:
    """The Orpheus engine behind the :class:`~orpheus_tts.engines.base.Engine` protocol."""

    name = "orpheus"

    def __init__(self, backend: TokenBackend, config: OrpheusConfig | None = None, codec: SnacCodec | None = None):
        self.config = config or OrpheusConfig()
        self.backend = backend
        self.capacity = self.config.capacity or backend.default_capacity
        voices, default, aliases = voices_for(self.config.language)
        if self.config.voice_aliases is not None:
            aliases = dict(self.config.voice_aliases)
        self.catalog = VoiceCatalog(voices=voices, default=default, aliases=aliases)
        self.stats = EngineCounters()
        self._codec = codec
        self._batcher: DecodeBatcher | None = None
        self._encoder: Encoder | None = None
        self._started = False
        self._live: set[FrameParser] = set()
        """Parsers of segments in progress, so counters move while they generate."""

    def param_specs(self) -> list[ParamSpec]:
        return param_specs(self.config.max_model_len)

    def counters(self) -> dict[str, int]:
        """Totals since start: parser counters (``dropped``, ``resynced``, ``invalid``…), segments, decoding."""
        batcher = self._batcher
        parser = ParserCounters()
        parser.add(self.stats.parser)
        for live in list(self._live):
            parser.add(live.counters)
        return {
            **parser.as_dict(),
            "segments": self.stats.segments,
            "length_capped": self.stats.length_capped,
            "empty_segments": self.stats.empty_segments,
            "samples": self.stats.samples,
            "decode_calls": batcher.calls if batcher else 0,
            "windows_decoded": batcher.windows_decoded if batcher else 0,
        }

    async def start(self) -> None:
        if self._started:
            return
        # The backend first: vLLM starts its engine processes before anything here initialises CUDA.
        await self.backend.start()
        if self._codec is None:
            try:
                self._codec = await asyncio.to_thread(self._load_codec)
            except BaseException:
                await self.backend.close()
                raise
        self._encoder = self.backend.encoder()
        self._batcher = DecodeBatcher(self._codec, self.config.decode_batch_size, self.config.decode_batch_wait_s)
        await self._batcher.start()
        self._started = True

    def _load_codec(self) -> SnacCodec:
        device = self.config.decoder_device
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        path = resolve_weights(
            self.config.snac,
            what="SNAC decoder",
            flag="--snac",
            allow_download=self.config.allow_download,
            required=("config.json", "pytorch_model.bin|model.safetensors"),
        )
        codec: SnacCodec = load_codec(path, device)
        return codec

    async def close(self) -> None:
        batcher, self._batcher = self._batcher, None
        try:
            if batcher is not None:
                await batcher.close()
        finally:
            self._started = False
            await self.backend.close()

    async def synthesize(self, text: str, voice: str, params: dict[str, Any]) -> AsyncIterator[bytes]:
        check_tags(text)
        if not self._started or self._batcher is None:
            raise EngineError("the Orpheus engine is not started")
        fader = Crossfader(round(self.config.crossfade_s * SAMPLE_RATE_HZ))
        for index, segment in enumerate(split_segments(text, self.config.max_segment_chars)):
            prompt = build_prompt(voice, segment, self._encoder)
            prompt_len = (
                len(prompt.ids)
                if prompt.ids is not None
                else (len(prompt.text.encode("utf-8")) + PROMPT_OVERHEAD_TOKENS)
            )
            sampling = sampling_from_params(params, segment, prompt_len, self.config.max_model_len, index)
            self.stats.segments += 1
            audios = self._segment_audio(self._batcher, prompt, sampling)
            try:
                async for audio in audios:
                    pcm = fader.push(audio)
                    if pcm.size:
                        self.stats.samples += pcm.size
                        yield float_to_int16(pcm)
            finally:
                await close_iterator(audios)
            if fader.segment_samples == 0:
                self.stats.empty_segments += 1
                logger.warning("a text segment produced no audio frames")
            fader.end_segment()
        tail = fader.finish()
        if tail.size:
            self.stats.samples += tail.size
            yield float_to_int16(tail)
        elif fader.total_samples == 0:
            raise EngineError("the model produced no audio for this text (no complete frame before it stopped)")

    async def _segment_audio(
        self, batcher: DecodeBatcher, prompt: Prompt, sampling: SamplingParams
    ) -> AsyncIterator[NDArray[np.float32]]:
        """Decoded audio of one segment, in order, while its tokens are still being generated."""
        # Bounded by the segment's frames (max_tokens / 7), so never unbounded.
        pending: asyncio.Queue[asyncio.Future[NDArray[np.float32]] | _Failed | None] = asyncio.Queue()
        stream = batcher.open_stream()
        producer = asyncio.create_task(self._produce(batcher, stream, prompt, sampling, pending))
        try:
            while True:
                item = await pending.get()
                if item is None:
                    return
                if isinstance(item, _Failed):
                    raise item.exc
                yield await item
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
            while not pending.empty():
                left = pending.get_nowait()
                if isinstance(left, asyncio.Future):
                    left.cancel()
            batcher.close_stream(stream)

    async def _produce(
        self,
        batcher: DecodeBatcher,
        stream: int,
        prompt: Prompt,
        sampling: SamplingParams,
        out: asyncio.Queue[asyncio.Future[NDArray[np.float32]] | _Failed | None],
    ) -> None:
        parser = FrameParser()
        windows = StreamWindows(self.config.window)
        self._live.add(parser)
        try:
            async with contextlib.aclosing(self.backend.generate(prompt, sampling)) as tokens:
                async for ids in tokens:
                    frames = parser.feed(ids)
                    if frames:
                        windows.push(frames)
                        for window in windows.ready():
                            out.put_nowait(batcher.submit(window, stream))
                    if parser.ended:
                        break
            if not parser.ended and parser.counters.tokens >= sampling.max_tokens:
                self.stats.length_capped += 1
                logger.warning("a segment reached max_tokens=%d before the stop token", sampling.max_tokens)
            # Otherwise the backend ended it for the model (a server-side stop or end-of-generation token).
            parser.finish()
            for window in windows.ready(final=True):
                out.put_nowait(batcher.submit(window, stream))
            out.put_nowait(None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            out.put_nowait(_Failed(exc))
        finally:
            self._live.discard(parser)
            self.stats.parser.add(parser.counters)

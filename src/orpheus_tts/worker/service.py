"""Synthesis service: turns a validated request into a v1 frame stream.

Everything that can fail before the first audio (voice, parameters, queue,
deadline, an engine that fails at once) raises :class:`ServiceError` from
:meth:`SynthesisService.prepare`, so the route answers with a plain HTTP error.
Once the first audio exists the stream is committed: later failures end it
with an ``error`` frame, never with silence.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from orpheus_tts.aio import DeadlinePassed, next_before
from orpheus_tts.engines.base import (
    Engine,
    EngineError,
    EngineInputError,
    InvalidParameterError,
    UnknownVoiceError,
    validate_params,
)
from orpheus_tts.protocol import (
    AUDIO_FORMAT,
    HEADER_AUDIO_FORMAT,
    HEADER_INFLIGHT,
    HEADER_QUEUE_DEPTH,
    NDJSON_MEDIA_TYPE,
    SAMPLE_RATE_HZ,
    SAMPLE_WIDTH_BYTES,
    ChunkFrame,
    EosFrame,
    ErrorCode,
    ErrorFrame,
    MetricsFrame,
    RequestError,
    ServiceError,
    TTSRequest,
    encode_frame,
)
from orpheus_tts.serving.metrics import ServiceMetrics
from orpheus_tts.serving.streaming import PreparedStream
from orpheus_tts.worker.config import WorkerConfig
from orpheus_tts.worker.scheduler import Scheduler

__all__ = ["SynthesisService"]

logger = logging.getLogger(__name__)


@dataclass
class _Timing:
    arrived: float
    admitted: float = 0.0
    first_audio: float = 0.0
    compute_s: float = 0.0


class SynthesisService:
    """Admission, deadline and framing around one engine."""

    def __init__(self, engine: Engine, config: WorkerConfig, metrics: ServiceMetrics) -> None:
        self.engine = engine
        self.config = config
        self.metrics = metrics
        self.scheduler = Scheduler(
            capacity=config.capacity or engine.capacity,
            max_queue=config.max_queue,
            retry_after_s=config.retry_after_s,
        )

    def validate(self, request: TTSRequest) -> tuple[str, dict[str, Any]]:
        """Resolve the voice and check parameters against the engine's schema."""
        try:
            voice = self.engine.catalog.resolve(request.voice)
        except UnknownVoiceError as exc:
            raise ServiceError(ErrorCode.UNKNOWN_VOICE, str(exc)) from exc
        try:
            params = validate_params(self.engine.param_specs(), request.params)
        except InvalidParameterError as exc:
            raise RequestError(str(exc)) from exc
        return voice, params

    async def prepare(self, request: TTSRequest) -> PreparedStream:
        """Queue, start the engine and wait for the first audio; see the module docstring."""
        timing = _Timing(arrived=time.monotonic())
        deadline = timing.arrived + self.config.deadline_s(request.timeout_s)
        voice, params = self.validate(request)
        self.metrics.waiting.labels(self.metrics.role).inc()
        try:
            await self.scheduler.acquire(deadline)
        except ServiceError as exc:
            self.metrics.outcome(exc.code.value)
            raise
        finally:
            self.metrics.waiting.labels(self.metrics.role).dec()
        timing.admitted = time.monotonic()
        self.metrics.queue_wait.labels(self.metrics.role).observe(timing.admitted - timing.arrived)
        self.metrics.running.labels(self.metrics.role).inc()
        hints = {"queue_depth": self.scheduler.waiting, "inflight": self.scheduler.running}
        pieces = self.engine.synthesize(request.text, voice, params)
        try:
            first = await self._next_piece(pieces, deadline, timing)
        except BaseException as exc:
            await self._finish(pieces, timing, _outcome(exc))
            if isinstance(exc, DeadlinePassed):
                raise ServiceError(ErrorCode.DEADLINE_EXCEEDED, "no audio before the deadline") from None
            if isinstance(exc, UnknownVoiceError):
                raise ServiceError(ErrorCode.UNKNOWN_VOICE, str(exc)) from exc
            if isinstance(exc, EngineInputError):  # e.g. an unknown inline tag in the text
                raise RequestError(str(exc)) from exc
            if isinstance(exc, EngineError):
                raise ServiceError(ErrorCode.ENGINE_ERROR, f"synthesis failed: {exc}") from exc
            if isinstance(exc, Exception):
                logger.exception("engine failed before the first audio")
                raise ServiceError(ErrorCode.ENGINE_ERROR, "synthesis failed") from exc
            raise
        timing.first_audio = time.monotonic()
        self.metrics.ttfa.labels(self.metrics.role).observe(timing.first_audio - timing.arrived)
        self.metrics.input_chars.labels(self.metrics.role).inc(len(request.text))
        headers = {
            HEADER_AUDIO_FORMAT: AUDIO_FORMAT,
            HEADER_QUEUE_DEPTH: str(hints["queue_depth"]),
            HEADER_INFLIGHT: str(hints["inflight"]),
        }
        body = self._frames(pieces, first, deadline, timing, hints)
        return PreparedStream(body=body, media_type=NDJSON_MEDIA_TYPE, headers=headers)

    async def _next_piece(self, pieces: AsyncIterator[bytes], deadline: float, timing: _Timing) -> bytes | None:
        """The next non-empty piece, ``None`` at the end; raises ``DeadlinePassed``."""
        while True:
            started = time.monotonic()
            try:
                piece = await next_before(pieces, deadline)
            except StopAsyncIteration:
                return None
            finally:
                timing.compute_s += time.monotonic() - started
            if len(piece) % SAMPLE_WIDTH_BYTES:
                raise EngineError(f"engine produced an odd number of bytes ({len(piece)})")
            if piece:
                return piece

    async def _frames(
        self,
        pieces: AsyncIterator[bytes],
        first: bytes | None,
        deadline: float,
        timing: _Timing,
        hints: dict[str, int],
    ) -> AsyncIterator[bytes]:
        role = self.metrics.role
        seq = samples_total = 0
        outcome = "cancelled"
        max_bytes = self.config.max_chunk_samples * SAMPLE_WIDTH_BYTES
        try:
            yield encode_frame(
                MetricsFrame(
                    {
                        "queue_ms": round((timing.admitted - timing.arrived) * 1000, 2),
                        **hints,
                        "worker": self.config.worker_id,
                        "engine": self.engine.name,
                    }
                )
            )
            piece = first
            try:
                while piece is not None:
                    for start in range(0, len(piece), max_bytes):
                        frame = ChunkFrame(seq=seq, pcm=piece[start : start + max_bytes])
                        yield encode_frame(frame)
                        seq += 1
                        samples_total += frame.samples
                    piece = await self._next_piece(pieces, deadline, timing)
            except DeadlinePassed:
                outcome = ErrorCode.DEADLINE_EXCEEDED.value
                yield encode_frame(ErrorFrame(outcome, "the deadline passed during synthesis", False))
                return
            except EngineInputError as exc:  # the request's fault: not counted against this worker
                outcome = ErrorCode.INVALID_REQUEST.value
                yield encode_frame(ErrorFrame(outcome, f"the text cannot be synthesized: {exc}", False))
                return
            except Exception as exc:
                logger.exception("engine failed mid-stream")
                outcome = ErrorCode.ENGINE_ERROR.value
                yield encode_frame(ErrorFrame(outcome, f"synthesis failed: {exc}", False))
                return
            audio_s = samples_total / SAMPLE_RATE_HZ
            rtf = timing.compute_s / audio_s if audio_s else 0.0
            self.metrics.rtf.labels(role).observe(rtf)
            self.metrics.audio_seconds.labels(role).inc(audio_s)
            yield encode_frame(
                MetricsFrame(
                    {
                        "ttfb_ms": round((timing.first_audio - timing.arrived) * 1000, 2),
                        "audio_ms": round(audio_s * 1000, 2),
                        "compute_ms": round(timing.compute_s * 1000, 2),
                        "rtf": round(rtf, 4),
                    }
                )
            )
            yield encode_frame(EosFrame(samples_total=samples_total, chunks_total=seq))
            outcome = "ok"
        finally:
            await self._finish(pieces, timing, outcome)

    async def _finish(self, pieces: AsyncIterator[bytes], timing: _Timing, outcome: str) -> None:
        try:
            aclose = getattr(pieces, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self.scheduler.release()
            role = self.metrics.role
            self.metrics.running.labels(role).dec()
            self.metrics.duration.labels(role).observe(time.monotonic() - timing.arrived)
            self.metrics.outcome(outcome)


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, DeadlinePassed):
        return ErrorCode.DEADLINE_EXCEEDED.value
    if isinstance(exc, UnknownVoiceError):
        return ErrorCode.UNKNOWN_VOICE.value
    if isinstance(exc, EngineInputError):
        return ErrorCode.INVALID_REQUEST.value
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return ErrorCode.ENGINE_ERROR.value

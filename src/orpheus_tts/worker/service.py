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

from orpheus_tts.aio import DeadlinePassed, run_before
from orpheus_tts.engines.base import (
    Engine,
    EngineError,
    EngineInputError,
    InvalidParameterError,
    TimedPiece,
    UnknownVoiceError,
    validate_params,
)
from orpheus_tts.engines.pacing import playing
from orpheus_tts.engines.text import split_segments
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
    WordsFrame,
    encode_frame,
)
from orpheus_tts.serving.metrics import ServiceMetrics
from orpheus_tts.serving.streaming import FinalPiece, PreparedStream
from orpheus_tts.worker.config import WorkerConfig
from orpheus_tts.worker.deadline import DeadlineScheduler, RtfWindow, StreamClock
from orpheus_tts.worker.scheduler import Admission, FifoScheduler, Scheduler
from orpheus_tts.worker.timed import timed_pieces

__all__ = ["COALESCE_BYTES", "SynthesisService", "create_scheduler"]

logger = logging.getLogger(__name__)

COALESCE_BYTES = 64 * 1024
"""The frames of one engine piece (its words and chunks, and the stream's opening metrics with the
first) go out as one piece of the body, hence one write, up to about this many bytes: every write to
a peer costs a system call, and a proxy or client a read and a wake-up. A piece's frames exist
together, so waiting for the rest of them costs no audio latency; the cap bounds the first chunk's
wait for the encoding of a long piece's others."""


@dataclass
class _Timing:
    arrived: float
    admitted: float = 0.0
    first_audio: float = 0.0
    compute_s: float = 0.0


@dataclass
class _Stream:
    """One admitted stream: the engine's generator and what schedules it."""

    pieces: AsyncIterator[TimedPiece]
    admission: Admission
    clock: StreamClock
    deadline: float
    timing: _Timing
    chars: int
    """Characters of the request's text."""


class _Pending:
    """Encoded frames waiting to go out together, and their size in bytes."""

    __slots__ = ("lines", "size")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.size = 0

    def add(self, line: bytes) -> None:
        self.lines.append(line)
        self.size += len(line)

    def take(self) -> bytes:
        """The lines, joined; none are left."""
        data = b"".join(self.lines)
        self.lines.clear()
        self.size = 0
        return data


def create_scheduler(config: WorkerConfig, capacity: int) -> Scheduler:
    """The admission policy ``config.scheduler`` names, over ``capacity`` engine slots."""
    if config.scheduler == "fifo":
        return FifoScheduler(capacity, config.max_queue, config.retry_after_s)
    return DeadlineScheduler(
        capacity,
        config.max_queue,
        config.retry_after_s,
        max_streams=config.max_streams,
        target_utilization=config.target_utilization,
        rtf_window_pieces=config.rtf_window_pieces,
    )


class SynthesisService:
    """Admission, deadline and framing around one engine."""

    def __init__(self, engine: Engine, config: WorkerConfig, metrics: ServiceMetrics) -> None:
        self.engine = engine
        self.config = config
        self.metrics = metrics
        self.scheduler = create_scheduler(config, config.capacity or engine.capacity)
        self.compute_per_char = RtfWindow(config.rtf_window_pieces)
        """Compute seconds per character of text, over the recent complete streams."""
        metrics.stream_capacity.labels(metrics.role).set_function(lambda: self.scheduler.stream_capacity)

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
            admission = await self.scheduler.admit(deadline)
        except ServiceError as exc:
            self.metrics.outcome(exc.code.value)
            raise
        finally:
            self.metrics.waiting.labels(self.metrics.role).dec()
        timing.admitted = time.monotonic()
        self.metrics.queue_wait.labels(self.metrics.role).observe(timing.admitted - timing.arrived)
        self.metrics.running.labels(self.metrics.role).inc()
        hints = {"queue_depth": self.scheduler.waiting, "inflight": self.scheduler.running}
        clock = StreamClock(
            arrived=timing.arrived,
            deadline=deadline,
            margin_s=self.config.playback_margin_s,
            held_s=request.playback_lead_s,
            next_compute_s=self.first_piece_compute_s(request.text) if request.playback_lead_s > 0 else 0.0,
        )
        stream = _Stream(
            timed_pieces(self.engine, request, voice, params), admission, clock, deadline, timing, len(request.text)
        )
        try:
            first = await self._next_piece(stream)
        except BaseException as exc:
            await self._finish(stream, _outcome(exc))
            if isinstance(exc, DeadlinePassed):
                raise ServiceError(ErrorCode.DEADLINE_EXCEEDED, "no audio before the deadline") from None
            if isinstance(exc, UnknownVoiceError):
                raise ServiceError(ErrorCode.UNKNOWN_VOICE, str(exc)) from exc
            if isinstance(exc, EngineInputError):  # e.g. an unknown inline tag in the text
                raise RequestError(str(exc)) from exc
            if isinstance(exc, EngineError):
                raise ServiceError(ErrorCode.ENGINE_ERROR, f"synthesis failed: {exc}", retryable=exc.retryable) from exc
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
        body = self._frames(stream, first, hints)
        return PreparedStream(body=body, media_type=NDJSON_MEDIA_TYPE, headers=headers)

    def first_piece_compute_s(self, text: str) -> float:
        """How long the first segment of ``text`` takes to synthesize now, estimated from the
        compute per character of the recent complete streams (0 before any).

        A stream's later pieces are due earlier by its previous piece's time; a request that
        continues a listener's audio (``playback_lead_s``, a realtime segment) has no previous
        piece of its own, so its first is due earlier by this instead."""
        segments = split_segments(text)
        per_char = self.compute_per_char.value()
        return per_char * len(segments[0]) if segments and per_char is not None else 0.0

    async def _next_piece(self, stream: _Stream) -> TimedPiece | None:
        """The next non-empty piece, ``None`` at the end; raises ``DeadlinePassed``.

        Each step of the engine's generator runs in a compute slot that the
        scheduler grants by the stream's playback deadline, with the stream's
        clock visible to the engine (:mod:`orpheus_tts.engines.pacing`).
        """
        timing = stream.timing
        while True:
            async with stream.admission.slot(stream.clock, stream.deadline):
                started = time.monotonic()
                try:
                    with playing(stream.clock):
                        piece = await run_before(stream.pieces.__anext__(), stream.deadline)
                except StopAsyncIteration:
                    return None
                finally:
                    elapsed = time.monotonic() - started
                    timing.compute_s += elapsed
                if len(piece.pcm) % SAMPLE_WIDTH_BYTES:
                    raise EngineError(f"engine produced an odd number of bytes ({len(piece.pcm)})")
                audio_s = len(piece.pcm) / (SAMPLE_WIDTH_BYTES * SAMPLE_RATE_HZ)
                # Delivered now (its frames go out next), so the slot knows the next piece's deadline.
                if audio_s:
                    stream.clock.deliver(audio_s)
                    stream.clock.next_compute_s = elapsed
            stream.admission.record(elapsed, audio_s)
            if piece.pcm:
                return piece

    async def _frames(self, stream: _Stream, first: TimedPiece | None, hints: dict[str, int]) -> AsyncIterator[bytes]:
        role = self.metrics.role
        seq = samples_total = 0
        outcome = "cancelled"
        max_bytes = self.config.max_chunk_samples * SAMPLE_WIDTH_BYTES
        timing = stream.timing
        # Lines not yet sent: a piece's frames go out together (see COALESCE_BYTES), the last
        # piece's with ``eos``.
        pending = _Pending()
        try:
            pending.add(
                encode_frame(
                    MetricsFrame(
                        {
                            "queue_ms": round((timing.admitted - timing.arrived) * 1000, 2),
                            **hints,
                            "worker": self.config.worker_id,
                            "engine": self.engine.name,
                        }
                    )
                )
            )
            piece = first
            try:
                while piece is not None:
                    if piece.words:
                        pending.add(encode_frame(WordsFrame(tuple(w.to_json() for w in piece.words))))
                    for start in range(0, len(piece.pcm), max_bytes):
                        frame = ChunkFrame(seq=seq, pcm=piece.pcm[start : start + max_bytes])
                        seq += 1
                        samples_total += frame.samples
                        pending.add(encode_frame(frame))
                        if pending.size >= COALESCE_BYTES and start + max_bytes < len(piece.pcm):
                            yield pending.take()
                    if piece.last:
                        # An engine that marks its last piece is not asked for another: asking takes a
                        # slot, and a crash while waiting for it would cut a stream that has all its audio.
                        break
                    if pending.size:
                        yield pending.take()
                    piece = await self._next_piece(stream)
            except DeadlinePassed:
                outcome = ErrorCode.DEADLINE_EXCEEDED.value
                error = ErrorFrame(outcome, "the deadline passed during synthesis", False)
                yield FinalPiece(pending.take() + encode_frame(error))
                return
            except EngineInputError as exc:  # the request's fault: not counted against this worker
                outcome = ErrorCode.INVALID_REQUEST.value
                error = ErrorFrame(outcome, f"the text cannot be synthesized: {exc}", False)
                yield FinalPiece(pending.take() + encode_frame(error))
                return
            except Exception as exc:
                logger.exception("engine failed mid-stream")
                outcome = ErrorCode.ENGINE_ERROR.value
                retryable = bool(getattr(exc, "retryable", False))
                error = ErrorFrame(outcome, f"synthesis failed: {exc}", retryable)
                yield FinalPiece(pending.take() + encode_frame(error))
                return
            audio_s = samples_total / SAMPLE_RATE_HZ
            rtf = timing.compute_s / audio_s if audio_s else 0.0
            self.metrics.rtf.labels(role).observe(rtf)
            self.metrics.audio_seconds.labels(role).inc(audio_s)
            metrics = encode_frame(
                MetricsFrame(
                    {
                        "ttfb_ms": round((timing.first_audio - timing.arrived) * 1000, 2),
                        "audio_ms": round(audio_s * 1000, 2),
                        "compute_ms": round(timing.compute_s * 1000, 2),
                        "rtf": round(rtf, 4),
                    }
                )
            )
            # The work is complete once eos exists: a consumer that stops reading at eos (the
            # realtime path does) must not turn a finished stream into a cancelled one.
            outcome = "ok"
            self.compute_per_char.add(timing.compute_s, stream.chars)
            eos = encode_frame(EosFrame(samples_total=samples_total, chunks_total=seq))
            yield FinalPiece(pending.take() + metrics + eos)
        finally:
            await self._finish(stream, outcome)

    async def _finish(self, stream: _Stream, outcome: str) -> None:
        timing = stream.timing
        try:
            aclose = getattr(stream.pieces, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            stream.admission.release()
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

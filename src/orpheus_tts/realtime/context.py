"""One realtime context: text in, segments out, their audio sent in text order, pipelined.

Three stages, each bounded:

- the **segmenter** cuts the text as it arrives (and after the buffer delay,
  the complete words that have waited that long);
- the **dispatcher** starts a segment's synthesis once it is cut and the
  segment before it is complete, with at most ``pipeline_segments`` segments
  received and not yet sent, so the next one is being synthesized while the
  current one is sent and heard; the first one has the engine to itself, and
  each request says exactly how much of the context's audio its listener
  still has to hear (``playback_lead_s``), which is what the worker schedules
  it by;
- the **sender** relays each segment's audio, in order, re-encoded to the
  context's output format, into the socket's :class:`Outbox` (which waits while
  the client is behind: backpressure).

A segment that fails ends the context with ``error`` (never silently missing
words). :meth:`Context.cancel` stops all three at once: the engine work of
every segment in synthesis is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from orpheus_tts.engines.segmenter import Segmenter
from orpheus_tts.protocol import (
    SAMPLE_RATE_HZ,
    ChunkFrame,
    EosFrame,
    ErrorCode,
    ErrorFrame,
    Frame,
    ServiceError,
    TTSRequest,
    WordsFrame,
)
from orpheus_tts.realtime.formats import OutputEncoder, OutputFormat
from orpheus_tts.realtime.limits import RealtimeLimits
from orpheus_tts.realtime.messages import Start, audio_message, error_message
from orpheus_tts.realtime.outbox import Outbox

__all__ = ["Context", "Openings", "SynthesizeSegment"]

logger = logging.getLogger(__name__)

SynthesizeSegment = Callable[[TTSRequest], Awaitable[AsyncIterator[Frame]]]
"""Start one segment's synthesis: the v1 frames of its stream (ending with ``eos`` or ``error``).

Raises :class:`~orpheus_tts.protocol.ServiceError` for a failure before audio.
The caller closes the iterator (``aclose``) when done or cancelled."""

SEGMENT_FRAMES_BUFFERED = 8
"""Frames of one segment held between its synthesis and the sender."""


OPENING_SEGMENTS = 2
"""A context is starting from its first text until this many of its segments are sent: the opening
and the segment that must follow it before the opening's audio has played."""


class Openings:
    """The contexts of one server that are starting (see :data:`OPENING_SEGMENTS`), across its sockets.

    A context cuts its first segment at an opening clause ("Sure,") only while at most
    ``RealtimeLimits.opening_max_others`` others are starting. Alone, that brings its first audio
    forward and its next segment is ready long before the opening has played; with many contexts
    starting at once on a busy engine, every opening's next segment is due within a fraction of a
    second and some cannot be, so then the first segment is the whole first sentence.
    """

    def __init__(self) -> None:
        self._starting: set[object] = set()

    @property
    def starting(self) -> int:
        return len(self._starting)

    def begin(self, context: object) -> None:
        self._starting.add(context)

    def done(self, context: object) -> None:
        self._starting.discard(context)


@dataclass(frozen=True)
class _Mark:
    """A ``flush`` or an ``end`` in the stream of segments."""

    kind: str


@dataclass(frozen=True)
class _Failed:
    code: ErrorCode | str
    message: str


class _Job:
    """One segment in synthesis: its frames land in a bounded queue for the sender."""

    def __init__(self, synthesize: SynthesizeSegment, request: TTSRequest) -> None:
        self.frames: asyncio.Queue[Frame | _Failed] = asyncio.Queue(SEGMENT_FRAMES_BUFFERED)
        self.complete = asyncio.Event()
        """Set when the segment's stream has ended (all its audio received, or it failed): the next
        segment may start, and the audio before it is known to the sample."""
        self.received_s = 0.0
        """Seconds of audio of the segment received so far."""
        self.task = asyncio.get_running_loop().create_task(self._run(synthesize, request))

    async def _run(self, synthesize: SynthesizeSegment, request: TTSRequest) -> None:
        try:
            await self._relay(synthesize, request)
        finally:
            self.complete.set()

    async def _relay(self, synthesize: SynthesizeSegment, request: TTSRequest) -> None:
        try:
            stream = await synthesize(request)
        except ServiceError as exc:
            await self.frames.put(_Failed(exc.code, exc.message))
            return
        except Exception as exc:
            logger.exception("a realtime segment failed to start")
            await self.frames.put(_Failed(ErrorCode.INTERNAL, f"synthesis failed: {exc}"))
            return
        try:
            async for frame in stream:
                if isinstance(frame, ChunkFrame):
                    self.received_s += frame.samples / SAMPLE_RATE_HZ
                await self.frames.put(frame)
                if isinstance(frame, (EosFrame, ErrorFrame)):
                    return
            await self.frames.put(_Failed(ErrorCode.WORKER_LOST, "the segment's stream ended without eos"))
        except Exception as exc:
            logger.exception("a realtime segment failed mid-stream")
            await self.frames.put(_Failed(ErrorCode.ENGINE_ERROR, f"synthesis failed: {exc}"))
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()


class Context:
    """A context of a realtime session; see the module docstring."""

    def __init__(
        self,
        start: Start,
        fmt: OutputFormat,
        limits: RealtimeLimits,
        outbox: Outbox,
        synthesize: SynthesizeSegment,
        on_finished: Callable[[Context], None],
        openings: Openings | None = None,
    ) -> None:
        self.id = start.context_id
        self.start = start
        self.format = fmt
        self.limits = limits
        self.samples_total = 0
        """Output samples sent so far."""
        self._outbox = outbox
        self._synthesize = synthesize
        self._on_finished = on_finished
        self._segmenter = Segmenter(first_clause_min_words=limits.opening_min_words or None)
        self._openings = Openings() if openings is None else openings
        self._segments_sent = 0
        self._work: asyncio.Queue[str | _Mark] = asyncio.Queue()
        self._queued_chars = 0
        self._jobs: asyncio.Queue[_Job | _Mark] = asyncio.Queue()
        self._slots = asyncio.Semaphore(limits.pipeline_segments)
        self._live: set[_Job] = set()
        self._seq = 0
        self._ended = False
        self._finished = False
        self._timer: asyncio.TimerHandle | None = None
        self._unsent = 0
        """Segments and marks received and not yet fully sent."""
        self.outcome: str | None = None
        """How the context ended (``done``, ``cancelled``, ``error``, ``closed``: the socket went away)."""
        self.first_text_at: float | None = None
        """When its first text arrived (loop time)."""
        self.first_audio_after_s: float | None = None
        """Seconds from its first text to its first audio sent."""
        self._plays_from: float | None = None
        """When the context's first audio was sent (its listener started playing then, at the soonest)."""
        self._sent_s = 0.0
        """Seconds of audio of the segments sent completely."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._dispatch()), loop.create_task(self._send())]

    @property
    def busy(self) -> bool:
        """Whether the context has audio to produce or send."""
        return self._unsent > 0

    # ------------------------------------------------------------------ client messages

    def feed(self, text: str) -> None:
        if self._ended:
            self._reject("the context has ended; start a new one")
            return
        if self._segmenter.buffered_chars + self._queued_chars + len(text) > self.limits.max_buffered_chars:
            self.fail(
                ErrorCode.TEXT_TOO_LONG,
                f"more than {self.limits.max_buffered_chars} characters buffered and not yet synthesized",
            )
            return
        if self.first_text_at is None and text.strip():
            self.first_text_at = asyncio.get_running_loop().time()
            self._openings.begin(self)
        if not self._segmenter.opened and self.limits.opening_min_words:
            others = self._openings.starting - 1
            cut = others <= self.limits.opening_max_others
            self._segmenter.first_clause_min_words = self.limits.opening_min_words if cut else None
        self._enqueue(self._segmenter.feed(text))
        self._arm_timer()

    def flush(self) -> None:
        if self._ended:
            self._reject("the context has ended; start a new one")
            return
        self._enqueue(self._segmenter.flush())
        self._enqueue([_Mark("flushed")])

    def end(self) -> None:
        if self._ended:
            self._reject("the context has already ended")
            return
        self._ended = True
        self._cancel_timer()
        self._enqueue(self._segmenter.end())
        self._enqueue([_Mark("done")])

    def cancel(self) -> None:
        """Barge-in: stop everything; ``cancelled`` is the context's last message."""
        if self._finish("cancelled"):
            self._outbox.purge(self.id)
            self._outbox.put({"type": "cancelled", "context_id": self.id})

    def fail(self, code: ErrorCode | str, message: str) -> None:
        """End the context with ``error``; nothing of it follows."""
        if self._finish("error"):
            self._outbox.purge(self.id)
            self._outbox.put(error_message(code, message, self.id))

    def close(self) -> None:
        """Stop without a message (the socket is gone)."""
        self._finish("closed")

    # ------------------------------------------------------------------ internals

    def _reject(self, message: str) -> None:
        self._outbox.put(error_message(ErrorCode.INVALID_REQUEST, message, self.id))

    def _enqueue(self, items: list[str] | list[_Mark]) -> None:
        for item in items:
            if isinstance(item, str):
                self._queued_chars += len(item)
            self._unsent += 1
            self._work.put_nowait(item)

    def _arm_timer(self) -> None:
        self._cancel_timer()
        if self._segmenter.has_words:
            self._timer = asyncio.get_running_loop().call_later(self.limits.buffer_delay_s, self._on_delay)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_delay(self) -> None:
        self._timer = None
        if not self._finished and not self._ended:
            self._enqueue(self._segmenter.flush_words())

    def _request(self, text: str) -> TTSRequest:
        return TTSRequest(
            text=text,
            voice=self.start.voice,
            params=dict(self.start.params),
            timestamps=self.start.timestamps,
            playback_lead_s=round(self.lead_s(), 3),
        )

    def lead_s(self) -> float:
        """Seconds of this context's audio its listener has not heard yet, at the soonest.

        Audio already received for segments in synthesis counts (it is sent
        next); what a listener buffers beyond real time does not, so this errs
        on the early side. A segment is requested with it (``playback_lead_s``),
        so the worker schedules the segment by when it will be heard.
        """
        if self._plays_from is None:
            return 0.0
        held = self._sent_s + sum(job.received_s for job in self._live)
        return max(0.0, self._plays_from + held - asyncio.get_running_loop().time())

    async def _dispatch(self) -> None:
        while True:
            item = await self._work.get()
            if isinstance(item, _Mark):
                self._jobs.put_nowait(item)
                if item.kind == "done":
                    return
                continue
            await self._slots.acquire()
            self._queued_chars -= len(item)
            job = _Job(self._synthesize, self._request(item))
            self._live.add(job)
            self._jobs.put_nowait(job)
            # The next segment starts once this one is complete. Its request then carries the exact
            # audio still unheard: requested at this one's first chunk, it would say only that chunk
            # (0.2 s where the segment has 3 s), and the worker would serve it as urgent ahead of
            # segments that are. The first segment also gets the engine to itself.
            await job.complete.wait()

    async def _send(self) -> None:
        while True:
            item = await self._jobs.get()
            if isinstance(item, _Mark):
                if item.kind == "done":
                    self._outbox.put({"type": "done", "context_id": self.id, "samples_total": self.samples_total})
                    self._finish("done")
                    return
                self._outbox.put({"type": "flushed", "context_id": self.id})
                self._unsent -= 1
                continue
            try:
                ok = await self._send_segment(item)
            finally:
                self._live.discard(item)
                self._sent_s += item.received_s
                self._slots.release()
            if not ok:
                return
            self._unsent -= 1
            self._segments_sent += 1
            if self._segments_sent >= OPENING_SEGMENTS:
                self._openings.done(self)

    async def _send_segment(self, job: _Job) -> bool:
        """Relay one segment's audio; False if it failed (the context has ended)."""
        encoder = OutputEncoder(self.format)
        offset_s = self.samples_total / self.format.rate_hz
        while True:
            frame = await job.frames.get()
            if isinstance(frame, ChunkFrame):
                await self._send_audio(encoder.encode(frame.pcm), encoder)
            elif isinstance(frame, WordsFrame):
                words = [
                    {**w, "start_s": round(w["start_s"] + offset_s, 6), "end_s": round(w["end_s"] + offset_s, 6)}
                    for w in frame.words
                ]
                await self._outbox.put_audio({"type": "words", "context_id": self.id, "words": words})
            elif isinstance(frame, EosFrame):
                await self._send_audio(encoder.finish(), encoder)
                return True
            elif isinstance(frame, (ErrorFrame, _Failed)):
                self.fail(frame.code, frame.message)
                return False

    async def _send_audio(self, data: bytes, encoder: OutputEncoder) -> None:
        if not data:
            return
        samples = encoder.samples(data)
        if self._plays_from is None:
            self._plays_from = asyncio.get_running_loop().time()
            if self.first_text_at is not None:
                self.first_audio_after_s = self._plays_from - self.first_text_at
        message = audio_message(self.id, self._seq, data, samples)
        self._seq += 1
        self.samples_total += samples
        await self._outbox.put_audio(message)

    def _finish(self, outcome: str) -> bool:
        """Stop every task of the context; False if it had already finished."""
        if self._finished:
            return False
        self._finished = True
        self.outcome = outcome
        self._openings.done(self)
        self._cancel_timer()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for job in self._live:
            job.task.cancel()
        self._live.clear()
        self._unsent = 0
        self._on_finished(self)
        return True

"""Typed events: what :meth:`OrpheusTTS.stream_events` and a realtime session yield.

``stream()`` yields bytes only, as the user guide says; these are for callers
that also want word timings (captions, lip sync) and the server's metrics::

    async for event in tts.stream_events("Hello world.", timestamps=True):
        if isinstance(event, Audio):
            play(event.data)
        elif isinstance(event, Words):
            for w in event.words:
                print(w.word, w.start_s, w.end_s)
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any

from orpheus_tts.protocol import ChunkFrame, EosFrame, ErrorFrame, MetricsFrame, WordsFrame
from orpheus_tts.routing import Router, RoutingError

__all__ = ["Audio", "Cancelled", "Done", "Event", "Flushed", "Metrics", "Word", "Words"]


@dataclass(frozen=True)
class Word:
    """When one word is spoken."""

    word: str
    """As written in the text."""
    start_s: float
    """Seconds from the first sample of the stream (or realtime context) to the word's first sample."""
    end_s: float
    """Seconds from the first sample to the sample after the word."""


@dataclass(frozen=True)
class Audio:
    """The next piece of audio."""

    data: bytes
    """Raw audio: s16le PCM at 24 kHz for v1; in the realtime ``output_format`` for realtime."""
    samples: int
    """Samples in ``data``."""
    context_id: str | None = None
    """The realtime context it belongs to (``None`` for v1)."""


@dataclass(frozen=True)
class Words:
    """Word timings; they come before the audio that says them."""

    words: tuple[Word, ...]
    context_id: str | None = None


@dataclass(frozen=True)
class Metrics:
    """Timing and load facts from the server (``ttfb_ms``, ``rtf``, ``queue_ms``…)."""

    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Flushed:
    """Realtime: every audio of the text sent before the matching ``flush()`` has arrived."""

    context_id: str


@dataclass(frozen=True)
class Done:
    """Realtime: the context is complete (after ``end()``); ``samples_total`` samples were sent."""

    context_id: str
    samples_total: int


@dataclass(frozen=True)
class Cancelled:
    """Realtime: the context was cancelled; no audio of it follows."""

    context_id: str


Event = Audio | Words | Metrics | Flushed | Done | Cancelled


def words_of(raw: Any) -> tuple[Word, ...]:
    return tuple(Word(str(w["word"]), float(w["start_s"]), float(w["end_s"])) for w in raw)


async def v1_events(router: Router, headers: Mapping[str, str], body: dict[str, Any]) -> AsyncGenerator[Event, None]:
    """The events of one v1 stream; errors are translated as ``stream()`` translates them."""
    from orpheus_tts.sdk.client import _from_error_frame, _translate

    try:
        routed = await router.open(body, headers)
    except RoutingError as exc:
        raise _translate(exc) from exc
    try:
        while True:
            try:
                frames = await routed.next_frames()
            except RoutingError as exc:
                raise _translate(exc) from exc
            for frame in frames:
                if isinstance(frame, ChunkFrame):
                    if frame.pcm:
                        yield Audio(frame.pcm, frame.samples)
                elif isinstance(frame, WordsFrame):
                    yield Words(words_of(frame.words))
                elif isinstance(frame, MetricsFrame):
                    yield Metrics(dict(frame.values))
                elif isinstance(frame, EosFrame):
                    return
                elif isinstance(frame, ErrorFrame):
                    raise _from_error_frame(frame)
    finally:
        await routed.aclose()

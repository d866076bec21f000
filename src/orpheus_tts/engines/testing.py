"""A deterministic engine for tests, benchmarks and fault drills (``--engine test``).

It speaks no words: each text segment becomes a tone whose pitch and length
derive from the segment, so every received stream can be checked byte for byte
against :func:`render`. A per-audio-second compute cost makes it behave like a
real engine under load; like the embedded engine it computes a piece only when
asked for it, and its :attr:`ToneEngine.journal` lists the pieces in the order
their computation started, so a test can read the schedule. Fault knobs (delays, stalls, crashes, errors) are
request parameters that exist only when the engine is built with
``faults=True``; they are never on by default.

Word timings: built with ``word_timings=True`` the engine reports them
(:meth:`ToneEngine.synthesize_timed`), spreading each segment's words evenly
over its tone; by default it declares that it cannot.
"""

from __future__ import annotations

import asyncio
import os
import signal
import zlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from orpheus_tts.engines.base import (
    DEFAULT_VOICE_ALIASES,
    EngineError,
    ParamSpec,
    TimedPiece,
    Voice,
    VoiceCatalog,
    WordTiming,
    close_iterator,
    pieces_of,
)
from orpheus_tts.engines.text import split_segments
from orpheus_tts.protocol import SAMPLE_RATE_HZ

__all__ = ["PieceStarted", "ToneEngine", "render"]

SAMPLES_PER_CHAR = 240
"""Each character of text becomes 10 ms of tone."""
DEFAULT_PIECE_SAMPLES = 2400
"""The engine yields 100 ms pieces."""
TONE_AMPLITUDE = 0.3
JOURNAL_PIECES = 100_000
"""Most pieces :attr:`ToneEngine.journal` remembers (the oldest are forgotten first)."""


@dataclass(frozen=True)
class PieceStarted:
    """One piece whose computation started."""

    text: str
    """The request's whole text."""
    index: int
    """The piece's place in its stream (0 is the first)."""


_VOICES = [
    Voice("tone", "en-US", "Test tone: a sine per segment, for routing and load tests"),
    Voice("tone-low", "en-US", "Test tone an octave lower"),
]

_BASE_SPECS = [
    ParamSpec("speed", "float", 1.0, 0.25, 4.0, "Playback speed: higher is shorter audio"),
    ParamSpec("temperature", "float", None, 0.0, 2.0, "Accepted for compatibility; no effect", effective=False),
    ParamSpec("top_p", "float", None, 0.0, 1.0, "Accepted for compatibility; no effect", effective=False),
    ParamSpec("top_k", "int", None, 0, None, "Accepted for compatibility; no effect", effective=False),
    ParamSpec("max_tokens", "int", None, 1, None, "Accepted for compatibility; no effect", effective=False),
    ParamSpec(
        "seed",
        "int",
        None,
        0,
        None,
        "Accepted for compatibility; output is always deterministic",
        effective=False,
    ),
]

_FAULT_SPECS = [
    ParamSpec("fault_first_delay_ms", "float", 0.0, 0.0, 600_000.0, "Delay before the first piece"),
    ParamSpec("fault_piece_delay_ms", "float", 0.0, 0.0, 600_000.0, "Delay before every piece"),
    ParamSpec("fault_stall_after", "int", -1, -1, None, "Hang forever after this many pieces"),
    ParamSpec("fault_error_after", "int", -1, -1, None, "Raise an engine error after this many pieces"),
    ParamSpec("fault_crash_after", "int", -1, -1, None, "Kill the whole process after this many pieces"),
]


def _tone(segment: str, voice: str, speed: float) -> NDArray[np.int16]:
    samples = max(1, round(len(segment) * SAMPLES_PER_CHAR / speed))
    freq = 200.0 + zlib.crc32(segment.encode("utf-8")) % 600
    if voice == "tone-low":
        freq /= 2
    t = np.arange(samples, dtype=np.float64) / SAMPLE_RATE_HZ
    wave = TONE_AMPLITUDE * np.sin(2 * np.pi * freq * t)
    out: NDArray[np.int16] = (wave * 32767).round().astype("<i2")
    return out


def render(text: str, voice: str = "tone", speed: float = 1.0) -> bytes:
    """The exact PCM the engine produces for ``text``: what a test compares against."""
    return b"".join(_tone(s, voice, speed).tobytes() for s in split_segments(text))


class ToneEngine:
    """Deterministic tone engine; see the module docstring."""

    name = "test"

    def __init__(
        self,
        capacity: int = 4,
        compute_s_per_audio_s: float = 0.0,
        piece_samples: int = DEFAULT_PIECE_SAMPLES,
        faults: bool = False,
        voice_aliases: dict[str, str] | None = None,
        word_timings: bool = False,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.compute_s_per_audio_s = compute_s_per_audio_s
        self.piece_samples = piece_samples
        self.faults = faults
        self.word_timings = word_timings
        """Whether :func:`~orpheus_tts.engines.base.supports_timestamps` says this engine reports word timings."""
        aliases = {a: "tone" for a in DEFAULT_VOICE_ALIASES} if voice_aliases is None else voice_aliases
        self.catalog = VoiceCatalog(voices=list(_VOICES), default="tone", aliases=aliases)
        self.journal: deque[PieceStarted] = deque(maxlen=JOURNAL_PIECES)
        """Pieces in the order their computation started."""

    def param_specs(self) -> list[ParamSpec]:
        return _BASE_SPECS + (_FAULT_SPECS if self.faults else [])

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def synthesize(self, text: str, voice: str, params: dict[str, Any]) -> AsyncIterator[bytes]:
        timed = self.synthesize_timed(text, voice, params)
        try:
            async for piece in timed:
                yield piece.pcm
        finally:
            await close_iterator(timed)

    async def synthesize_pieces(
        self, text: str, voice: str, params: dict[str, Any], *, timed: bool = False
    ) -> AsyncIterator[TimedPiece]:
        """The pieces of :meth:`synthesize_timed` (words only if ``timed``), the last one marked ``last``.

        A subclass that overrides :meth:`synthesize` gets that method's audio, its pieces unmarked.
        """
        if timed:
            pieces = self.synthesize_timed(text, voice, params)
        else:
            pieces = pieces_of(self, ToneEngine, text, voice, params, self._marked(text, voice, params))
        try:
            async for piece in pieces:
                yield piece
        finally:
            await close_iterator(pieces)

    async def _marked(self, text: str, voice: str, params: dict[str, Any]) -> AsyncIterator[TimedPiece]:
        """The pieces of :meth:`synthesize_timed` without their words."""
        timed = self.synthesize_timed(text, voice, params)
        try:
            async for piece in timed:
                yield TimedPiece(piece.pcm, last=piece.last)
        finally:
            await close_iterator(timed)

    async def synthesize_timed(self, text: str, voice: str, params: dict[str, Any]) -> AsyncIterator[TimedPiece]:
        """The audio of :meth:`synthesize`; each segment's words spread evenly over its tone."""
        speed = float(params.get("speed") or 1.0)
        first_delay = float(params.get("fault_first_delay_ms") or 0.0) / 1000
        piece_delay = float(params.get("fault_piece_delay_ms") or 0.0) / 1000
        stall_after = int(params.get("fault_stall_after", -1))
        error_after = int(params.get("fault_error_after", -1))
        crash_after = int(params.get("fault_crash_after", -1))
        if first_delay:
            await asyncio.sleep(first_delay)
        emitted = 0
        position = 0
        segments = split_segments(text)
        for index, segment in enumerate(segments):
            pcm = _tone(segment, voice, speed)
            words = segment.split()
            step = len(pcm) / max(1, len(words))
            timings = tuple(
                WordTiming(
                    w,
                    (position + round(i * step)) / SAMPLE_RATE_HZ,
                    (position + round((i + 1) * step)) / SAMPLE_RATE_HZ,
                )
                for i, w in enumerate(words)
            )
            position += len(pcm)
            for start in range(0, len(pcm), self.piece_samples):
                if emitted == stall_after:
                    await asyncio.Event().wait()
                if emitted == error_after:
                    raise EngineError(f"injected engine error after {emitted} pieces")
                if emitted == crash_after:
                    os.kill(os.getpid(), signal.SIGKILL)
                piece = pcm[start : start + self.piece_samples]
                self.journal.append(PieceStarted(text, emitted))
                cost = self.compute_s_per_audio_s * len(piece) / SAMPLE_RATE_HZ + piece_delay
                # Always yield control, so a fast engine still lets other streams run.
                await asyncio.sleep(cost)
                emitted += 1
                last = index == len(segments) - 1 and start + self.piece_samples >= len(pcm)
                yield TimedPiece(piece.tobytes(), timings if start == 0 else (), last=last)

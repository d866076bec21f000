"""Audio tokens to SNAC frames: slot check, resynchronisation, counters.

The k-th audio token of a frame belongs to slot ``k mod 7`` and carries code
``id - 128266 - 4096 * slot`` (0…4095; code 0 is a real code). The slot the
model *meant* is ``(id - 128266) div 4096``; when it differs from the expected
slot the stream has slipped phase. The parser then drops the incomplete frame
and restarts at the next slot-0 token, instead of decoding garbage or shifting
every later slot. Every discarded token is counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

from orpheus_tts.engines.orpheus.prompt import (
    AUDIO_TOKEN_BASE,
    AUDIO_TOKEN_END,
    CODES_PER_SLOT,
    END_OF_AI,
    END_OF_SPEECH,
    PAD,
    SLOTS_PER_FRAME,
    START_OF_SPEECH,
)

__all__ = ["STOP_TOKENS", "FrameParser", "ParserCounters", "frames_to_levels"]

STOP_TOKENS = frozenset({END_OF_SPEECH, END_OF_AI})
"""Tokens that end the audio of a segment."""
_IGNORED_CONTROL = frozenset({START_OF_SPEECH, PAD})


@dataclass
class ParserCounters:
    """What the parser did with the tokens it saw."""

    tokens: int = 0
    """Tokens seen, of every kind."""
    audio_tokens: int = 0
    """Audio tokens accepted into frames (complete or not)."""
    frames: int = 0
    """Complete frames produced."""
    invalid: int = 0
    """Tokens that are neither audio nor a known control token (text, out-of-range ids)."""
    dropped: int = 0
    """Valid audio tokens discarded to resynchronise (the partial frame and the slip)."""
    resynced: int = 0
    """Phase slips detected and recovered from."""
    control: int = 0
    """Control tokens skipped (start of speech, padding)."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def add(self, other: ParserCounters) -> None:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)


class FrameParser:
    """Turns one segment's token ids into complete 7-code frames."""

    def __init__(self) -> None:
        self.counters = ParserCounters()
        self.ended = False
        """True once a stop token was seen; later tokens are ignored."""
        self._partial: list[int] = []
        self._hunting = False

    def feed(self, token_ids: Iterable[int]) -> list[tuple[int, ...]]:
        """The frames completed by ``token_ids``, in order."""
        frames: list[tuple[int, ...]] = []
        counters = self.counters
        for tid in token_ids:
            if self.ended:
                break
            counters.tokens += 1
            if tid in STOP_TOKENS:
                self.ended = True
                break
            if not AUDIO_TOKEN_BASE <= tid < AUDIO_TOKEN_END:
                if tid in _IGNORED_CONTROL:
                    counters.control += 1
                else:
                    counters.invalid += 1
                continue
            slot, code = divmod(tid - AUDIO_TOKEN_BASE, CODES_PER_SLOT)
            if slot == len(self._partial):
                self._hunting = False
                self._partial.append(code)
                counters.audio_tokens += 1
                if len(self._partial) == SLOTS_PER_FRAME:
                    frames.append(tuple(self._partial))
                    self._partial.clear()
                    counters.frames += 1
                continue
            if not self._hunting:
                counters.resynced += 1
                counters.dropped += len(self._partial)
                counters.audio_tokens -= len(self._partial)
                self._partial.clear()
                self._hunting = True
            if slot == 0:
                self._hunting = False
                self._partial.append(code)
                counters.audio_tokens += 1
            else:
                counters.dropped += 1
        return frames

    @property
    def pending_tokens(self) -> int:
        """Audio tokens of the incomplete frame (discarded if the stream ends now)."""
        return len(self._partial)

    def finish(self) -> None:
        """End of stream: an incomplete last frame cannot be decoded and is counted as dropped."""
        self.counters.dropped += len(self._partial)
        self.counters.audio_tokens -= len(self._partial)
        self._partial.clear()
        self.ended = True


def frames_to_levels(frames: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """SNAC's three code levels for frames of shape ``(..., n, 7)``.

    Frame i: slot 0 → L0[i]; slots 1, 4 → L1[2i], L1[2i+1]; slots 2, 3, 5, 6 →
    L2[4i … 4i+3]. Leading dimensions (a batch) are kept.
    """
    lead = frames.shape[:-2]
    n = frames.shape[-2]
    level0 = frames[..., 0]
    level1 = frames[..., [1, 4]].reshape(*lead, 2 * n)
    level2 = frames[..., [2, 3, 5, 6]].reshape(*lead, 4 * n)
    return level0, level1, level2

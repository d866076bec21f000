"""Crossfades at the seams between separately generated text segments.

Each segment is its own generation, so the waveform jumps where one ends and
the next begins (an audible click). The last ``overlap`` samples of each
segment are held back and overlap-added with the first samples of the next,
with equal-power (sine/cosine) fades. Within a segment audio passes through
unchanged, delayed by at most ``overlap`` samples; the stream's own end is
emitted untouched.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["DEFAULT_CROSSFADE_S", "Crossfader"]

DEFAULT_CROSSFADE_S = 0.02
"""Overlap at each seam, in seconds (480 samples at 24 kHz)."""

_EMPTY: NDArray[np.float32] = np.zeros(0, dtype=np.float32)


class Crossfader:
    """Streams float audio through, crossfading at segment boundaries."""

    def __init__(self, overlap_samples: int) -> None:
        if overlap_samples < 0:
            raise ValueError("overlap_samples must not be negative")
        self.overlap = overlap_samples
        self._held: NDArray[np.float32] = _EMPTY
        self._at_seam = False
        self.segment_samples = 0
        """Samples pushed in the current segment."""
        self.total_samples = 0
        """Samples pushed in all segments."""

    def push(self, audio: NDArray[np.float32]) -> NDArray[np.float32]:
        """Take the next piece of the current segment; return what can be emitted now."""
        if audio.size == 0:
            return _EMPTY
        self.segment_samples += audio.size
        self.total_samples += audio.size
        if self._at_seam:
            audio = self._blend(audio)
            self._at_seam = False
        else:
            audio = np.concatenate([self._held, audio]) if self._held.size else audio
        if self.overlap == 0:
            return audio.astype(np.float32, copy=False)
        cut = max(0, audio.size - self.overlap)
        self._held = audio[cut:].astype(np.float32, copy=True)
        return audio[:cut].astype(np.float32, copy=False)

    def end_segment(self) -> None:
        """The current segment is complete; the next piece starts a new one."""
        self._at_seam = self._held.size > 0
        self.segment_samples = 0

    def finish(self) -> NDArray[np.float32]:
        """The end of the stream: everything still held."""
        held, self._held = self._held, _EMPTY
        self._at_seam = False
        return held

    def _blend(self, audio: NDArray[np.float32]) -> NDArray[np.float32]:
        held = self._held
        n = min(held.size, audio.size)
        t = (np.arange(n, dtype=np.float64) + 0.5) / n
        fade_out = np.cos(0.5 * np.pi * t)
        fade_in = np.sin(0.5 * np.pi * t)
        mixed = held[held.size - n :] * fade_out + audio[:n] * fade_in
        self._held = _EMPTY
        return np.concatenate([held[: held.size - n], mixed, audio[n:]]).astype(np.float32)

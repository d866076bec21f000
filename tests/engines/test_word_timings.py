"""Word timings: the embedded engine says when each word is spoken, exact to the 24 kHz sample."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from orpheus_tts.engines.base import TimedPiece, WordTiming, supports_timestamps
from orpheus_tts.engines.embedded import VOICE_ID, PiperEngine
from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.engines.timings import PhonemeSpan, align_words, rescale, text_words
from orpheus_tts.protocol import SAMPLE_RATE_HZ

TEXT = "Dr. Smith paid 3.50 dollars for a cup of the best coffee in town. It was worth it."
PAUSED = "The first part ends here. After the pause comes the rest."
PAUSE_S = 1.0


@pytest.fixture(scope="module")
def engine() -> Iterator[PiperEngine]:
    engine = PiperEngine(capacity=1)
    asyncio.run(engine.start())
    yield engine
    asyncio.run(engine.close())


def _timed(engine: PiperEngine, text: str, **params: Any) -> tuple[bytes, list[WordTiming]]:
    async def run() -> list[TimedPiece]:
        return [p async for p in engine.synthesize_timed(text, VOICE_ID, params)]

    pieces = asyncio.run(run())
    return b"".join(p.pcm for p in pieces), [w for p in pieces for w in p.words]


def _rms(pcm: np.ndarray[Any, Any], start_s: float, end_s: float) -> float:
    part = pcm[round(start_s * SAMPLE_RATE_HZ) : round(end_s * SAMPLE_RATE_HZ)].astype(np.float64)
    return float(np.sqrt(np.mean(part**2))) if part.size else 0.0


def test_words_match_the_text_in_order_monotonic_and_inside_the_audio(engine: PiperEngine) -> None:
    pcm, words = _timed(engine, TEXT, seed=1)
    assert [w.word for w in words] == text_words(TEXT)
    duration = len(pcm) / 2 / SAMPLE_RATE_HZ
    previous_end = 0.0
    for w in words:
        assert previous_end <= w.start_s < w.end_s <= duration, w
        # Exact to the sample: every time is a whole number of 24 kHz samples.
        assert w.start_s * SAMPLE_RATE_HZ == pytest.approx(round(w.start_s * SAMPLE_RATE_HZ), abs=1e-6)
        previous_end = w.end_s


def test_the_audio_is_the_same_with_and_without_timings(engine: PiperEngine) -> None:
    timed, _ = _timed(engine, TEXT, seed=7)

    async def plain() -> bytes:
        return b"".join([p async for p in engine.synthesize(TEXT, VOICE_ID, {"seed": 7})])

    assert asyncio.run(plain()) == timed


def test_a_known_pause_falls_between_the_right_words(engine: PiperEngine) -> None:
    pcm_bytes, words = _timed(engine, PAUSED, seed=3, sentence_silence_s=PAUSE_S)
    pcm = np.frombuffer(pcm_bytes, dtype="<i2")
    by_word = {w.word: w for w in words}
    before, after = by_word["here."], by_word["After"]
    assert after.start_s - before.end_s >= PAUSE_S
    # The gap between the two words is silent; the words themselves are not.
    assert _rms(pcm, before.end_s + 0.05, after.start_s - 0.05) < 50
    for w in words:
        assert _rms(pcm, w.start_s, w.end_s) > 300, w
    # No other pair of neighbours is that far apart.
    gaps = [b.start_s - a.end_s for a, b in itertools.pairwise(words) if a is not before]
    assert max(gaps) < PAUSE_S


def test_speed_scales_the_timings(engine: PiperEngine) -> None:
    _, normal = _timed(engine, PAUSED, seed=5, sentence_silence_s=0.0)
    _, fast = _timed(engine, PAUSED, seed=5, sentence_silence_s=0.0, speed=2.0)
    assert fast[-1].end_s < normal[-1].end_s * 0.75


def test_alignment_survives_merged_and_expanded_words() -> None:
    # espeak says "of the" as one phoneme word and "3.50" as three: matching by phoneme letters copes.
    table = {"of": "ʌv", "the": "ðə", "3.50": "θɹiː pɔɪnt faɪv zɪɹoʊ", "cup": "kʌp"}
    spoken = "kʌp ʌvðə θɹiː pɔɪnt faɪv zɪɹoʊ"
    spans = [PhonemeSpan(ch, 10 * i, 10 * i + 10) for i, ch in enumerate(spoken)]
    words = align_words(["cup", "of", "the", "3.50"], spans, lambda w: list(table[w]))
    assert [(w.word, w.start, w.end) for w in words] == [
        ("cup", 0, 30),
        ("of", 40, 60),
        ("the", 60, 80),
        ("3.50", 90, 10 * len(spoken)),
    ]


def test_rescale_maps_to_the_nearest_sample_and_clamps() -> None:
    assert rescale(22050, 22050, 24000, 10**6) == 24000
    assert rescale(11025, 22050, 24000, 10**6) == 12000
    assert rescale(1, 22050, 24000, 10**6) == 1
    assert rescale(10**6, 22050, 24000, 500) == 500


def test_engines_declare_whether_they_report_timings(engine: PiperEngine) -> None:
    assert supports_timestamps(engine)
    assert not supports_timestamps(ToneEngine())
    assert supports_timestamps(ToneEngine(word_timings=True))

"""Word timings from phoneme durations: which samples of a segment say which word.

A Piper voice reports how many samples each phoneme id takes. espeak-ng's
phonemes do not map one to one onto the words of the text (``3.50`` is three
spoken words, ``Dr.`` becomes its own sentence, ``of the`` is one phoneme
word), so the words are aligned by their phonemes: each written word is
phonemized on its own, and its phoneme letters are matched against the letters
of the whole segment with :class:`difflib.SequenceMatcher`. Stress marks and
spaces are ignored on both sides, so merged and re-stressed words still match.

Times are sample indices here; callers turn them into seconds at the rate the
audio is delivered in.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["PhonemeSpan", "WordSpan", "align_words", "phoneme_spans", "rescale", "text_words"]

_STRESS_MARKS = frozenset("ˈˌ")
_IGNORED_PHONEMES = frozenset(" .,;:!?-'\"()…—–") | _STRESS_MARKS
"""Phonemes that carry no letters: word breaks, stress marks, punctuation."""


@dataclass(frozen=True)
class PhonemeSpan:
    """One phoneme and the samples it takes, in the segment's audio."""

    phoneme: str
    start: int
    """First sample (inclusive)."""
    end: int
    """Sample after the last one (exclusive)."""


@dataclass(frozen=True)
class WordSpan:
    """One written word and the samples that say it."""

    word: str
    start: int
    """First sample (inclusive)."""
    end: int
    """Sample after the last one (exclusive)."""


def text_words(text: str) -> list[str]:
    """The words of ``text`` as written (split at whitespace); tokens without a letter or digit are skipped."""
    return [token for token in text.split() if any(ch.isalnum() for ch in token)]


def phoneme_spans(
    phonemes: Sequence[str],
    samples_per_id: Sequence[int],
    id_map: Mapping[str, Sequence[int]],
    *,
    offset: int = 0,
    bos: str = "^",
    pad: str = "_",
) -> list[PhonemeSpan]:
    """Sample spans of ``phonemes``, walking the ids as Piper builds them.

    Piper's ids are ``BOS PAD (phoneme PAD)* EOS``; a phoneme missing from the
    map has no ids and takes no time. Each phoneme owns its trailing pad.
    """
    bounds = [offset]
    for count in samples_per_id:
        bounds.append(bounds[-1] + int(count))
    index = len(id_map.get(bos, ())) + len(id_map.get(pad, ()))
    pad_len = len(id_map.get(pad, ()))
    spans: list[PhonemeSpan] = []
    for phoneme in phonemes:
        ids = id_map.get(phoneme)
        if not ids:
            continue
        start = min(index, len(bounds) - 1)
        index += len(ids) + pad_len
        spans.append(PhonemeSpan(phoneme, bounds[start], bounds[min(index, len(bounds) - 1)]))
    return spans


def align_words(
    words: Sequence[str],
    spans: Sequence[PhonemeSpan],
    phonemize_word: Callable[[str], Sequence[str]],
) -> list[WordSpan]:
    """The sample span of each of ``words`` within ``spans`` (the segment's phonemes, in order).

    Every word gets a span; spans are in text order and do not overlap. A word
    none of whose phonemes can be found (rare: a symbol espeak reads in a way
    it does not read alone) gets the time between its neighbours.
    """
    # A stress mark before a word's first letter takes time in which the word is already heard.
    letters: list[PhonemeSpan] = []
    lead_start: int | None = None
    for span in spans:
        if span.phoneme in _STRESS_MARKS:
            lead_start = span.start if lead_start is None else lead_start
            continue
        if span.phoneme not in _IGNORED_PHONEMES:
            start = span.start if lead_start is None else lead_start
            letters.append(PhonemeSpan(span.phoneme, start, span.end))
        lead_start = None
    expected: list[str] = []
    owner: list[int] = []
    for i, word in enumerate(words):
        for phoneme in phonemize_word(word):
            if phoneme not in _IGNORED_PHONEMES:
                expected.append(phoneme)
                owner.append(i)
    first: list[int | None] = [None] * len(words)
    last: list[int | None] = [None] * len(words)
    matcher = difflib.SequenceMatcher(None, expected, [s.phoneme for s in letters], autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            i, j = owner[block.a + k], block.b + k
            if first[i] is None:
                first[i] = j
            last[i] = j
    result: list[WordSpan] = []
    cursor = letters[0].start if letters else (spans[0].start if spans else 0)
    audio_end = letters[-1].end if letters else cursor
    for i, word in enumerate(words):
        f, la = first[i], last[i]
        if f is None or la is None:
            following = next((first[k] for k in range(i + 1, len(words)) if first[k] is not None), None)
            end = letters[following].start if following is not None else audio_end
            start = cursor
        else:
            start, end = letters[f].start, letters[la].end
        start = max(start, cursor)
        end = max(end, start)
        result.append(WordSpan(word, start, end))
        cursor = end
    return result


def rescale(index: int, from_hz: int, to_hz: int, limit: int) -> int:
    """Sample ``index`` at ``from_hz`` as the nearest sample at ``to_hz``, at most ``limit``."""
    if from_hz == to_hz:
        return min(index, limit)
    return min(limit, (index * to_hz + from_hz // 2) // from_hz)

"""Text segmentation: split long text into sentences, and long sentences at clauses.

Engines synthesize segment by segment so the first audio is ready after the
first sentence, not after the whole text; asked to, the first sentence is cut
after its first clause, so the first audio is ready sooner still. Cuts fall
only at sentence ends and clause boundaries (where a speaker pauses anyway),
so each segment is spoken with its natural prosody.
"""

from __future__ import annotations

import re

__all__ = [
    "DEFAULT_FIRST_CLAUSE_MIN_WORDS",
    "DEFAULT_MAX_SEGMENT_CHARS",
    "FIRST_CLAUSE_MIN_REST_WORDS",
    "ends_sentence",
    "split_segments",
]

DEFAULT_MAX_SEGMENT_CHARS = 300
"""A sentence longer than this is split at clause boundaries, then at spaces."""
DEFAULT_FIRST_CLAUSE_MIN_WORDS = 3
"""A first clause cut off for a fast first audio has at least this many words.

Shorter is possible (a one-word opening such as "Sure," is said alone in a
third of its sentence's time, and the realtime path cuts there), but for the
whole text of a v1 request three words keep the worker ahead under a burst:
every stream's first segment must also last long enough for the scheduler
to reach its second one, and 16 streams started at once on 2 cores ran dry
with one-word openings and not with three (``docs/scheduling.md``)."""
FIRST_CLAUSE_MIN_REST_WORDS = 3
"""The rest of a sentence whose first clause is cut off has at least this many words (and no fewer than
the clause's own minimum), so the cut never leaves a fragment."""

# A sentence ends at . ! ? … (and closing quotes/brackets after them) followed by
# whitespace, unless the dot belongs to a common abbreviation or an initial.
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "inc",
        "ltd",
        "co",
        "no",
        "fig",
        "approx",
        "dept",
        "est",
        "mt",
    ]
)
_SENTENCE_END = re.compile(r"""([.!?…]+["'”’)\]]*)\s+""")
_CLAUSE_END = re.compile(r"""([,;:—–]["'”’)\]]*)\s+""")


def split_segments(
    text: str, max_chars: int = DEFAULT_MAX_SEGMENT_CHARS, *, first_clause_min_words: int | None = None
) -> list[str]:
    """Split ``text`` into speakable segments of at most ``max_chars`` characters.

    Paragraph breaks and sentence ends always split; an over-long sentence is
    split at commas, semicolons and dashes, and as a last resort at spaces.
    With ``first_clause_min_words``, the first segment is also cut at its
    first clause boundary with at least that many words before it and at
    least that many (and :data:`FIRST_CLAUSE_MIN_REST_WORDS`) after it.
    No text is dropped: joining the segments with spaces gives the words back.
    """
    if max_chars < 1:
        # A zero budget would never shrink the remainder in _fit: refuse it instead of looping.
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    if first_clause_min_words is not None and first_clause_min_words < 1:
        raise ValueError(f"first_clause_min_words must be >= 1, got {first_clause_min_words}")
    segments: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        for sentence in _sentences(" ".join(paragraph.split())):
            segments.extend(_fit(sentence, max_chars))
    segments = [s for s in segments if s]
    if first_clause_min_words is not None and segments:
        segments[:1] = _first_clause(segments[0], first_clause_min_words)
    return segments


def ends_sentence(segment: str) -> bool:
    """Whether ``segment`` ends a sentence (rather than a clause, or mid-clause)."""
    return re.search(r"""[.!?…]+["'”’)\]]*$""", segment.rstrip()) is not None


def _first_clause(segment: str, min_words: int) -> list[str]:
    """``segment`` cut after its first clause of at least ``min_words`` words, if the rest is long enough."""
    rest_words = max(min_words, FIRST_CLAUSE_MIN_REST_WORDS)
    for match in _CLAUSE_END.finditer(segment):
        head, tail = segment[: match.end(1)], segment[match.end() :]
        if len(head.split()) >= min_words:
            return [head, tail] if len(tail.split()) >= rest_words else [segment]
    return [segment]


def _sentences(paragraph: str) -> list[str]:
    out: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(paragraph):
        candidate = paragraph[start : match.end(1)]
        last_word = candidate.rsplit(maxsplit=1)[-1].rstrip(".").lower() if candidate.split() else ""
        if match.group(1).startswith(".") and (last_word in _ABBREVIATIONS or len(last_word) == 1):
            continue
        out.append(candidate.strip())
        start = match.end()
    tail = paragraph[start:].strip()
    if tail:
        out.append(tail)
    return out


def _fit(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    pieces: list[str] = []
    start = 0
    for match in _CLAUSE_END.finditer(sentence):
        pieces.append(sentence[start : match.end(1)])
        start = match.end()
    pieces.append(sentence[start:])
    out: list[str] = []
    current = ""
    for piece in pieces:
        joined = f"{current} {piece}".strip()
        if len(joined) <= max_chars:
            current = joined
            continue
        if current:
            out.append(current)
        current = piece
        while len(current) > max_chars:
            cut = current.rfind(" ", 0, max_chars + 1)
            if cut <= 0:
                cut = max_chars
            out.append(current[:cut].strip())
            current = current[cut:].strip()
    if current:
        out.append(current)
    return out

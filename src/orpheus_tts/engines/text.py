"""Text segmentation: split long text into sentences, and long sentences at clauses.

Engines synthesize segment by segment so the first audio is ready after the
first sentence, not after the whole text.
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_MAX_SEGMENT_CHARS", "split_segments"]

DEFAULT_MAX_SEGMENT_CHARS = 300
"""A sentence longer than this is split at clause boundaries, then at spaces."""

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


def split_segments(text: str, max_chars: int = DEFAULT_MAX_SEGMENT_CHARS) -> list[str]:
    """Split ``text`` into speakable segments of at most ``max_chars`` characters.

    Paragraph breaks and sentence ends always split; an over-long sentence is
    split at commas, semicolons and dashes, and as a last resort at spaces.
    No text is dropped: joining the segments with spaces gives the words back.
    """
    if max_chars < 1:
        # A zero budget would never shrink the remainder in _fit: refuse it instead of looping.
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    segments: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        for sentence in _sentences(" ".join(paragraph.split())):
            segments.extend(_fit(sentence, max_chars))
    return [s for s in segments if s]


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

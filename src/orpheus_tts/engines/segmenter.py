"""Incremental segmentation: text arrives in pieces (an LLM's tokens), segments leave as soon as they are sure.

:class:`Segmenter` applies the rules of :func:`~orpheus_tts.engines.text.split_segments`
(the same sentence ends, abbreviations, paragraph breaks and length cap; it
calls the same functions) to a growing buffer, and hands out a segment as soon
as nothing that can still arrive would change where it ends::

    segmenter = Segmenter()
    for token in tokens:
        for segment in segmenter.feed(token):
            synthesize(segment)
    for segment in segmenter.end():
        synthesize(segment)

A sentence end counts once the whitespace after it has arrived (so ``3.50``
and ``Dr. Smith`` are never cut: the character after the dot decides). With
``clause_min_words`` set (the realtime default), a clause boundary (``,`` ``;``
``:`` or a dash, then whitespace) also ends a segment once the segment has that
many words, so a long sentence starts playing before it is finished; and with
``first_clause_min_words`` (realtime default: 1) the very first segment ends at
the first clause boundary after that many words, so an opening such as
"Sure," is spoken while the LLM is still writing the rest of its sentence
(in realtime, waiting for the sentence end costs the time the LLM takes to
write it, not only its synthesis). Words are
never split: :meth:`Segmenter.flush_words` (what a buffer delay calls) keeps a
last word that may still be growing; only :meth:`Segmenter.flush` and
:meth:`Segmenter.end` hand out everything.

With ``clause_min_words=None`` and ``first_clause_min_words=None`` the segments of ``feed(text)`` then ``end()``
are exactly ``split_segments(text)``, however the text was cut into pieces.
"""

from __future__ import annotations

import re

from orpheus_tts.engines.text import _CLAUSE_END, DEFAULT_MAX_SEGMENT_CHARS, _fit, _sentences, split_segments

__all__ = ["DEFAULT_CLAUSE_MIN_WORDS", "DEFAULT_OPENING_MIN_WORDS", "Segmenter"]

DEFAULT_CLAUSE_MIN_WORDS = 5
"""A clause boundary ends a realtime segment once the segment has at least this many words."""
DEFAULT_OPENING_MIN_WORDS = 1
"""A clause boundary ends the first realtime segment once it has at least this many words."""

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTINEL = "\x00"
"""Stands for text that has not arrived yet: it keeps the last sentence open."""


class Segmenter:
    """Cuts a text that arrives piece by piece into speakable segments; see the module docstring."""

    def __init__(
        self,
        *,
        max_chars: int = DEFAULT_MAX_SEGMENT_CHARS,
        clause_min_words: int | None = DEFAULT_CLAUSE_MIN_WORDS,
        first_clause_min_words: int | None = DEFAULT_OPENING_MIN_WORDS,
    ) -> None:
        if max_chars < 1:
            raise ValueError(f"max_chars must be >= 1, got {max_chars}")
        if clause_min_words is not None and clause_min_words < 1:
            raise ValueError(f"clause_min_words must be >= 1, got {clause_min_words}")
        if first_clause_min_words is not None and first_clause_min_words < 1:
            raise ValueError(f"first_clause_min_words must be >= 1, got {first_clause_min_words}")
        self.max_chars = max_chars
        self.clause_min_words = clause_min_words
        self.first_clause_min_words = first_clause_min_words
        self._pending = ""
        self._ended = False
        self._opened = False
        """Whether a segment has been handed out (the first one may end at an earlier clause)."""

    @property
    def buffered_chars(self) -> int:
        """Characters received and not yet handed out as a segment (whitespace included)."""
        return len(self._pending)

    @property
    def opened(self) -> bool:
        """Whether a segment has been handed out: ``first_clause_min_words`` no longer matters."""
        return self._opened

    @property
    def has_words(self) -> bool:
        """Whether the buffer holds anything to say."""
        return bool(self._pending.strip())

    def feed(self, text: str) -> list[str]:
        """Add ``text``; the segments that are now complete, in order."""
        if self._ended:
            raise ValueError("the segmenter has ended")
        self._pending += text
        parts = _PARAGRAPH_BREAK.split(self._pending)
        out: list[str] = []
        for paragraph in parts[:-1]:
            for segment in split_segments(paragraph, self.max_chars) if paragraph.strip() else []:
                out += [piece.strip() for piece in self._pieces(segment, complete=True) if piece.strip()]
        out += self._open_paragraph(parts[-1])
        return out

    def _pieces(self, sentence: str, *, complete: bool) -> list[str]:
        """``sentence`` cut at the clause boundaries the rules allow; of an open sentence, the last piece
        is what stays buffered."""
        pieces = [sentence]
        if not self._opened and self.first_clause_min_words:
            pieces = _opening(sentence, self.first_clause_min_words)
        if self.clause_min_words:
            pieces = pieces[:-1] + _clauses(pieces[-1], self.clause_min_words)
        if complete or len(pieces) > 1:
            self._opened = True
        return pieces

    def _handed_out(self, segments: list[str]) -> list[str]:
        if segments:
            self._opened = True
        return segments

    def flush_words(self) -> list[str]:
        """Everything buffered up to its last complete word (a word is complete once whitespace follows it)."""
        cut = max(self._pending.rfind(" "), self._pending.rfind("\n"), self._pending.rfind("\t"))
        if cut < 0:
            return []
        head, self._pending = self._pending[:cut], self._pending[cut + 1 :]
        return self._handed_out(split_segments(head, self.max_chars) if head.strip() else [])

    def flush(self) -> list[str]:
        """Everything buffered, even mid-sentence or mid-word."""
        head, self._pending = self._pending, ""
        return self._handed_out(split_segments(head, self.max_chars) if head.strip() else [])

    def end(self) -> list[str]:
        """The rest of the text; :meth:`feed` is refused afterwards."""
        out = self.flush()
        self._ended = True
        return out

    def _open_paragraph(self, raw: str) -> list[str]:
        """Complete segments of the last (still open) paragraph; what remains stays buffered."""
        trailing = raw[len(raw.rstrip()) :]
        probe = " ".join(raw.split())
        # The sentinel stands for what is still to come: glued to the last word when no
        # whitespace has followed it yet, so that word's punctuation cannot end a sentence.
        probe = f"{probe} {_SENTINEL}" if trailing and probe else probe + _SENTINEL
        sentences = _sentences(probe)
        out: list[str] = []
        for sentence in sentences[:-1]:
            out += self._split_complete(sentence)
        tail = sentences[-1] if sentences else _SENTINEL
        ready, tail = self._split_open(tail)
        out += ready
        tail = tail.replace(_SENTINEL, "").rstrip()
        self._pending = tail + trailing if tail else ""
        return out

    def _split_complete(self, sentence: str) -> list[str]:
        pieces = self._pieces(sentence, complete=True)
        return [fitted for piece in pieces for fitted in _fit(piece, self.max_chars) if fitted]

    def _split_open(self, tail: str) -> tuple[list[str], str]:
        """Segments that can leave from the unfinished sentence ``tail``, and what stays."""
        pieces = self._pieces(tail, complete=False)
        out, tail = pieces[:-1], pieces[-1]
        if len(tail.replace(_SENTINEL, "")) > self.max_chars:
            fitted = _fit(tail, self.max_chars)
            out += fitted[:-1]
            tail = fitted[-1]
        return [s for s in out if s], tail


def _opening(sentence: str, min_words: int) -> list[str]:
    """``sentence`` cut after its first clause boundary that closes at least ``min_words`` words."""
    for match in _CLAUSE_END.finditer(sentence):
        head = sentence[: match.end(1)]
        if len(head.split()) >= min_words:
            return [head.strip(), sentence[match.end() :]]
    return [sentence]


def _clauses(sentence: str, min_words: int) -> list[str]:
    """``sentence`` cut after every clause boundary that closes at least ``min_words`` words."""
    out: list[str] = []
    start = 0
    for match in _CLAUSE_END.finditer(sentence):
        head = sentence[start : match.end(1)]
        if len(head.split()) >= min_words:
            out.append(head.strip())
            start = match.end()
    out.append(sentence[start:].strip())
    return out

"""The incremental segmenter: the batch rules, applied as text arrives, never splitting a word."""

from __future__ import annotations

import random

import pytest

from orpheus_tts.engines.segmenter import Segmenter
from orpheus_tts.engines.text import split_segments

TEXTS = [
    "Hello world. This is Dr. Smith speaking! It costs 3.50 dollars, e.g. a coffee. Really?",
    "First paragraph, with a clause.\n\nSecond paragraph: it has a colon; and a semicolon. The end",
    "A very long sentence that goes on, and on, and on, well past the limit of characters, "
    "until the segmenter has to cut it at its clauses or, failing that, at its spaces somewhere",
    '"Quoted." (Bracketed!) Mr. and Mrs. Jones went to St. Louis... Then, at 10.30 p.m. they left.',
    "   leading spaces\nand a single newline   ",
]


def _chunks(text: str, rng: random.Random) -> list[str]:
    out, i = [], 0
    while i < len(text):
        n = rng.randint(1, 6)
        out.append(text[i : i + n])
        i += n
    return out


def _run(segmenter: Segmenter, pieces: list[str]) -> list[str]:
    out: list[str] = []
    for piece in pieces:
        out += segmenter.feed(piece)
    return out + segmenter.end()


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("max_chars", [40, 300])
def test_batch_rules_give_split_segments_however_the_text_arrives(text: str, max_chars: int) -> None:
    expected = split_segments(text, max_chars)
    rng = random.Random(len(text) + max_chars)
    for pieces in ([text], list(text), *(_chunks(text, rng) for _ in range(5))):
        assert (
            _run(Segmenter(max_chars=max_chars, clause_min_words=None, first_clause_min_words=None), pieces) == expected
        )


@pytest.mark.parametrize("text", TEXTS)
def test_realtime_rules_do_not_depend_on_how_the_text_arrives_and_keep_every_word(text: str) -> None:
    whole = _run(Segmenter(), [text])
    assert " ".join(whole).split() == text.split()
    rng = random.Random(len(text))
    for pieces in (list(text), *(_chunks(text, rng) for _ in range(5))):
        assert _run(Segmenter(), pieces) == whole


def test_a_sentence_leaves_once_the_whitespace_after_its_end_arrives() -> None:
    s = Segmenter()
    assert s.feed("Hello there.") == []
    assert s.feed(" And") == ["Hello there."]
    assert s.buffered_chars == len("And")


@pytest.mark.parametrize(
    ("first", "second", "segment"),
    [
        ("It costs 3.", "50 dollars. ", "It costs 3.50 dollars."),
        ("Ask Dr. ", "Smith now. ", "Ask Dr. Smith now."),
        ("Bring snacks, e.g. ", "fruit. ", "Bring snacks, e.g. fruit."),
        ("Version 2", ".1 is out. ", "Version 2.1 is out."),
    ],
)
def test_numbers_and_abbreviations_are_not_sentence_ends(first: str, second: str, segment: str) -> None:
    s = Segmenter(clause_min_words=None, first_clause_min_words=None)
    assert s.feed(first) == []
    assert s.feed(second) == [segment]


def test_a_clause_boundary_ends_a_segment_only_after_enough_words() -> None:
    s = Segmenter(clause_min_words=5, first_clause_min_words=None)
    assert s.feed("Well, yes, ") == []
    assert s.feed("I think that is right, ") == ["Well, yes, I think that is right,"]
    assert s.feed("3,500 people agree") == []  # a comma inside a number is no boundary
    assert s.end() == ["3,500 people agree"]


def test_the_opening_clause_leaves_alone_as_soon_as_its_boundary_is_sure() -> None:
    s = Segmenter()
    assert s.feed("Sure,") == []  # "Sure,5" could still come: a boundary needs the whitespace
    assert s.feed(" I can") == ["Sure,"]
    assert s.feed(" help, ") == []  # later clauses need DEFAULT_CLAUSE_MIN_WORDS words
    assert s.feed("I promise. Well, ") == ["I can help, I promise."]  # only the first segment
    assert s.end() == ["Well,"]


def test_an_opening_that_is_a_whole_sentence_or_paragraph_opens_the_text() -> None:
    s = Segmenter()
    assert s.feed("Hello. Yes, ") == ["Hello."]
    assert s.feed("right") == []
    assert s.end() == ["Yes, right"]
    t = Segmenter()
    assert t.feed("Well, yes.\n\nNo, ") == ["Well,", "yes."]
    assert t.end() == ["No,"]


def test_flush_words_keeps_a_word_that_may_still_grow() -> None:
    s = Segmenter()
    s.feed("The answer is forty")
    assert s.flush_words() == ["The answer is"]
    s.feed("-two and")
    assert s.flush_words() == ["forty-two"]
    assert s.flush() == ["and"]
    assert not s.has_words


def test_flush_hands_out_everything_and_end_refuses_more_text() -> None:
    s = Segmenter()
    s.feed("Half a sent")
    assert s.flush() == ["Half a sent"]
    assert s.end() == []
    with pytest.raises(ValueError, match="ended"):
        s.feed("more")


def test_an_overlong_open_sentence_is_cut_at_spaces_as_it_grows() -> None:
    s = Segmenter(max_chars=20, clause_min_words=None)
    out = []
    for word in ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]:
        out += s.feed(word + " ")
    out += s.end()
    assert all(len(segment) <= 20 for segment in out)
    assert " ".join(out) == "one two three four five six seven eight nine ten"
    assert len(out) > 2


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        Segmenter(max_chars=0)
    with pytest.raises(ValueError, match="clause_min_words"):
        Segmenter(clause_min_words=0)
    with pytest.raises(ValueError, match="first_clause_min_words"):
        Segmenter(first_clause_min_words=0)

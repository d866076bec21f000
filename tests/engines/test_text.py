"""Text segmentation: sentences, abbreviations, clause splits, and nothing lost."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orpheus_tts.engines.text import (
    DEFAULT_FIRST_CLAUSE_MIN_WORDS,
    DEFAULT_MAX_SEGMENT_CHARS,
    FIRST_CLAUSE_MIN_REST_WORDS,
    ends_sentence,
    split_segments,
)


def test_splits_at_sentence_ends() -> None:
    text = "The sun rose. Birds sang! Did you hear them? Yes… they were loud."
    assert split_segments(text) == [
        "The sun rose.",
        "Birds sang!",
        "Did you hear them?",
        "Yes…",
        "they were loud.",
    ]


def test_keeps_abbreviations_and_initials_inside_a_sentence() -> None:
    text = "Mr. Smith met Dr. Jones, e.g. at noon. J. R. Tolkien wrote books. It ended."
    assert split_segments(text) == [
        "Mr. Smith met Dr. Jones, e.g. at noon.",
        "J. R. Tolkien wrote books.",
        "It ended.",
    ]


def test_closing_quotes_stay_with_their_sentence() -> None:
    assert split_segments('He said "stop." Then he left.') == ['He said "stop."', "Then he left."]


def test_paragraph_break_splits_even_without_punctuation() -> None:
    assert split_segments("First line without a stop\n\n  second paragraph") == [
        "First line without a stop",
        "second paragraph",
    ]


def test_whitespace_is_collapsed_and_empty_text_gives_nothing() -> None:
    assert split_segments("  one\n two\tthree  ") == ["one two three"]
    assert split_segments("") == []
    assert split_segments(" \n\n \t ") == []


def test_long_sentence_is_split_at_clauses_first() -> None:
    clause = "the quick brown fox jumped over the fence"
    sentence = ", ".join([clause] * 12) + "."
    assert len(sentence) > DEFAULT_MAX_SEGMENT_CHARS
    segments = split_segments(sentence, max_chars=100)
    assert len(segments) > 1
    assert all(len(s) <= 100 for s in segments)
    # Every cut fell after a comma, never inside a clause.
    assert all(s.endswith((",", ".")) for s in segments)
    assert " ".join(segments) == sentence


def test_long_sentence_without_clauses_is_split_at_spaces() -> None:
    sentence = " ".join(["word"] * 50)
    segments = split_segments(sentence, max_chars=30)
    assert all(0 < len(s) <= 30 for s in segments)
    assert " ".join(segments) == sentence


@pytest.mark.timeout(10)
def test_rejects_a_limit_below_one_character() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        split_segments("Some text.", max_chars=0)


_words = st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=12)
_punct = st.sampled_from(["", "", "", ".", ",", "!", "?", ";", ":", "…", '."', "—", " Mr.", " e.g."])
_separators = st.sampled_from([" ", " ", " ", "  ", "\n", "\n\n", "\t"])


@st.composite
def _texts(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.tuples(_words, _punct, _separators), max_size=60))
    return "".join(w + p + s for w, p, s in parts)


@settings(max_examples=300, deadline=None)
@given(text=_texts(), max_chars=st.integers(min_value=1, max_value=120))
def test_no_characters_are_lost_and_limits_hold(text: str, max_chars: int) -> None:
    segments = split_segments(text, max_chars=max_chars)
    assert "".join("".join(s.split()) for s in segments) == "".join(text.split())
    assert all(0 < len(s) <= max_chars for s in segments)
    assert all(s == s.strip() for s in segments)


@settings(max_examples=300, deadline=None)
@given(text=_texts())
def test_words_survive_when_none_is_longer_than_the_limit(text: str) -> None:
    segments = split_segments(text, max_chars=40)
    assert " ".join(segments).split() == text.split()


def test_the_first_sentence_can_be_cut_after_its_first_clause() -> None:
    text = "When the storm finally passed, the villagers came out to see the damage. Then they went home."
    assert split_segments(text, first_clause_min_words=3) == [
        "When the storm finally passed,",
        "the villagers came out to see the damage.",
        "Then they went home.",
    ]
    assert split_segments(text)[0] == "When the storm finally passed, the villagers came out to see the damage."


def test_a_first_clause_too_short_on_either_side_is_not_cut() -> None:
    assert split_segments("Yes, I think so. More.", first_clause_min_words=3) == ["Yes, I think so.", "More."]
    assert split_segments("Well, it rained all day, and we stayed home.", first_clause_min_words=3) == [
        "Well, it rained all day,",
        "and we stayed home.",
    ]
    assert split_segments("We stayed at home all day, sadly.", first_clause_min_words=3) == [
        "We stayed at home all day, sadly."
    ]
    assert split_segments("No clause boundary here at all.", first_clause_min_words=3) == [
        "No clause boundary here at all."
    ]
    with pytest.raises(ValueError, match="first_clause_min_words"):
        split_segments("Some text.", first_clause_min_words=0)


def test_a_one_word_opening_can_be_cut_off_but_never_leaves_a_fragment() -> None:
    text = "Sure, I can help you with that. Bye."
    assert split_segments(text, first_clause_min_words=DEFAULT_FIRST_CLAUSE_MIN_WORDS) == [
        "Sure, I can help you with that.",
        "Bye.",
    ]
    assert split_segments(text, first_clause_min_words=1) == [
        "Sure,",
        "I can help you with that.",
        "Bye.",
    ]
    assert split_segments("Yes, of course.", first_clause_min_words=1) == ["Yes, of course."]
    assert split_segments("Sure: 3.50 dollars, paid today.", first_clause_min_words=1) == [
        "Sure:",
        "3.50 dollars, paid today.",
    ]


def test_ends_sentence_tells_sentence_ends_from_clause_cuts() -> None:
    assert ends_sentence("The sun rose.")
    assert ends_sentence('He said "stop."')
    assert ends_sentence("Really?!")
    assert not ends_sentence("When the storm passed,")
    assert not ends_sentence("a sentence cut at a space")


@settings(max_examples=300, deadline=None)
@given(text=_texts(), min_words=st.integers(min_value=1, max_value=5))
def test_a_first_clause_cut_loses_nothing_and_only_falls_at_a_clause(text: str, min_words: int) -> None:
    plain = split_segments(text, max_chars=40)
    cut = split_segments(text, max_chars=40, first_clause_min_words=min_words)
    assert " ".join(cut).split() == text.split()
    assert cut[1:] == plain[1:] or (cut[0] + " " + cut[1] == plain[0] and cut[2:] == plain[1:])
    if len(cut) > len(plain):
        assert cut[0][-1] in ",;:—–\"'”’)]", "cut only at a clause boundary"
        assert len(cut[0].split()) >= min_words
        assert len(cut[1].split()) >= max(min_words, FIRST_CLAUSE_MIN_REST_WORDS)

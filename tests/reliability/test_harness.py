"""The harness's verdicts are exact: each acceptable ending, and each unacceptable one, is told apart."""

from __future__ import annotations

import pytest

from orpheus_tts.sdk import RemoteProtocolError, StreamError
from tests.reliability.harness import COMPLETE, CUT, REFUSED, Received, verdict

EXPECTED = bytes(range(200)) * 10


def received(audio: bytes, error: BaseException | None = None) -> Received:
    return Received("text", EXPECTED, audio=audio, error=error)


def test_the_three_acceptable_endings() -> None:
    assert verdict(received(EXPECTED)) == COMPLETE
    assert verdict(received(b"", StreamError("overloaded", "full"))) == REFUSED
    assert verdict(received(EXPECTED[:10], StreamError("worker_lost", "gone", retryable=True))) == CUT
    assert verdict(received(EXPECTED[:10], RemoteProtocolError("the stream broke"))) == CUT


@pytest.mark.parametrize(
    ("audio", "error", "why"),
    [
        (EXPECTED, StreamError("worker_lost", "gone"), "the whole audio, then"),
        (EXPECTED[:10], None, "ended without an error"),
        (EXPECTED[1:11], StreamError("worker_lost", "gone"), "not a prefix"),
        (EXPECTED + b"\x00\x00", None, "not a prefix"),
        (EXPECTED[:10], ValueError("what"), "undocumented error"),
        (b"", StreamError("made_up", "?"), "undocumented error"),
    ],
)
def test_every_other_ending_fails(audio: bytes, error: BaseException | None, why: str) -> None:
    with pytest.raises(AssertionError, match=why):
        verdict(received(audio, error))

"""Token ids → SNAC frames: slot arithmetic, code 0, resynchronisation, counters, level layout."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from orpheus_tts.engines.orpheus.prompt import END_OF_SPEECH, PAD, START_OF_SPEECH
from orpheus_tts.engines.orpheus.tokens import FrameParser, frames_to_levels

FRAME = (0, 1, 4095, 7, 100, 2048, 3)
# Hand-computed: 128266 + 4096 * slot + code.
FRAME_IDS = [128266, 132363, 140553, 140561, 144750, 150794, 152845]


def ids_of(frame: tuple[int, ...]) -> list[int]:
    return [128266 + 4096 * slot + code for slot, code in enumerate(frame)]


def test_slot_arithmetic_matches_hand_computed_ids() -> None:
    assert ids_of(FRAME) == FRAME_IDS
    parser = FrameParser()
    assert parser.feed(FRAME_IDS) == [FRAME]
    assert parser.counters.frames == 1
    assert parser.counters.audio_tokens == 7


def test_code_zero_is_kept_in_every_slot() -> None:
    zeros = tuple([0] * 7)
    parser = FrameParser()
    frames = parser.feed(ids_of(zeros) + ids_of(FRAME))
    assert frames == [zeros, FRAME], "a code-0 token advances the slot like any other"
    assert parser.counters.dropped == 0


def test_level_redistribution_matches_hand_computed_vectors() -> None:
    frames = np.array([FRAME, (10, 11, 12, 13, 14, 15, 16)], dtype=np.int64)
    level0, level1, level2 = frames_to_levels(frames)
    assert level0.tolist() == [0, 10]
    assert level1.tolist() == [1, 100, 11, 14]
    assert level2.tolist() == [4095, 7, 2048, 3, 12, 13, 15, 16]
    batched = frames_to_levels(np.stack([frames, frames[::-1]]))
    assert batched[1].shape == (2, 4)
    assert batched[2][1].tolist() == [12, 13, 15, 16, 4095, 7, 2048, 3]


def test_frames_split_across_feeds() -> None:
    parser = FrameParser()
    stream = ids_of(FRAME) * 3
    out = []
    for cut in (3, 5, 1, 12):
        out += parser.feed(stream[:cut])
        stream = stream[cut:]
    out += parser.feed(stream)
    assert out == [FRAME] * 3


def test_resync_after_a_dropped_token() -> None:
    a, b, c = FRAME, (5, 6, 7, 8, 9, 10, 11), (1, 2, 3, 4, 5, 6, 7)
    tokens = ids_of(a) + ids_of(b)[:3] + ids_of(b)[4:] + ids_of(c)  # slot 3 of b is lost
    parser = FrameParser()
    assert parser.feed(tokens) == [a, c], "the broken frame is dropped, the next one is whole"
    assert parser.counters.resynced == 1
    # b's first 3 tokens (kept until the slip) and its remaining slots 4, 5, 6 are discarded.
    assert parser.counters.dropped == 6
    assert parser.counters.audio_tokens == 14


def test_resync_when_a_frame_restarts_early() -> None:
    a, b = FRAME, (9, 9, 9, 9, 9, 9, 9)
    tokens = ids_of(a)[:4] + ids_of(b)  # the model restarted at slot 0 mid-frame
    parser = FrameParser()
    assert parser.feed(tokens) == [b]
    assert (parser.counters.resynced, parser.counters.dropped) == (1, 4)


def test_reference_code_range_bug_is_not_copied() -> None:
    # 128266 + 4096 * 1 + 4096 would be "code 4096 in slot 1" to the reference; it is slot 2, code 0.
    parser = FrameParser()
    parser.feed([128266, 128266 + 4096 + 4096])
    assert parser.counters.resynced == 1


def test_invalid_and_control_tokens_are_counted_not_decoded() -> None:
    parser = FrameParser()
    tokens = [START_OF_SPEECH, 42, *FRAME_IDS[:2], PAD, 156_938, *FRAME_IDS[2:], 156_939]
    assert parser.feed(tokens) == [FRAME]
    assert parser.counters.invalid == 3, "text id 42 and the two ids past the audio range"
    assert parser.counters.control == 2
    assert parser.counters.dropped == 0


def test_stop_token_ends_the_stream_and_incomplete_tail_is_counted() -> None:
    parser = FrameParser()
    frames = parser.feed(FRAME_IDS + FRAME_IDS[:3] + [END_OF_SPEECH] + FRAME_IDS)
    assert frames == [FRAME]
    assert parser.ended
    parser.finish()
    assert parser.counters.dropped == 3
    assert parser.counters.audio_tokens == 7


def test_counters_as_dict_and_add() -> None:
    one, two = FrameParser(), FrameParser()
    one.feed(FRAME_IDS)
    two.feed([1, *FRAME_IDS])
    one.counters.add(two.counters)
    totals = one.counters.as_dict()
    assert totals["frames"] == 2
    assert totals["invalid"] == 1
    assert totals["tokens"] == 15
    assert set(totals) >= {"dropped", "resynced", "invalid", "frames"}


@settings(max_examples=60, deadline=None)
@given(
    frames=st.lists(st.tuples(*[st.integers(0, 4095)] * 7), min_size=1, max_size=12),
    lost=st.integers(0, 10_000),
)
def test_losing_any_one_token_costs_at_most_one_frame(frames: list[tuple[int, ...]], lost: int) -> None:
    tokens = [t for f in frames for t in ids_of(f)]
    del tokens[lost % len(tokens)]
    out = FrameParser().feed(tokens)
    assert len(out) >= len(frames) - 1
    remaining = iter(frames)
    assert all(f in remaining for f in out), "every output frame is a real frame, in order"


@settings(max_examples=40, deadline=None)
@given(frames=st.lists(st.tuples(*[st.integers(0, 4095)] * 7), max_size=10), chunk=st.integers(1, 20))
def test_roundtrip_in_any_chunking(frames: list[tuple[int, ...]], chunk: int) -> None:
    tokens = [t for f in frames for t in ids_of(f)]
    parser = FrameParser()
    out = []
    for i in range(0, len(tokens), chunk):
        out += parser.feed(tokens[i : i + chunk])
    assert out == frames
    assert parser.counters.dropped == parser.counters.resynced == 0

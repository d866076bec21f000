"""Protocol v1: frame encoding, the tolerant streaming decoder, request validation."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orpheus_tts.protocol import (
    ChunkFrame,
    ChunkLine,
    EosFrame,
    ErrorCode,
    ErrorFrame,
    Frame,
    FrameDecoder,
    MetricsFrame,
    ProtocolError,
    RequestError,
    StreamTracker,
    chunk_line,
    encode_frame,
    parse_request,
)

pcm_st = st.binary(max_size=64).map(lambda b: b[: len(b) - len(b) % 2])
frame_st = st.one_of(
    st.builds(ChunkFrame, seq=st.integers(0, 10**6), pcm=pcm_st),
    st.builds(
        MetricsFrame,
        st.dictionaries(st.sampled_from(["queue_ms", "rtf", "worker"]), st.one_of(st.integers(), st.text(max_size=8))),
    ),
    st.builds(EosFrame, samples_total=st.integers(0, 10**9), chunks_total=st.integers(0, 10**6)),
    st.builds(
        ErrorFrame,
        code=st.sampled_from([c.value for c in ErrorCode]),
        message=st.text(max_size=40),
        retryable=st.booleans(),
    ),
)


@given(frames=st.lists(frame_st, max_size=12), cuts=st.lists(st.integers(0, 10_000), max_size=8))
@settings(max_examples=200, deadline=None)
def test_round_trip_survives_any_byte_split(frames: list[Frame], cuts: list[int]) -> None:
    data = b"".join(encode_frame(f) for f in frames)
    points = sorted({c % (len(data) + 1) for c in cuts})
    decoder = FrameDecoder()
    out = []
    last = 0
    for point in [*points, len(data)]:
        out.extend(decoder.feed(data[last:point]))
        last = point
    out.extend(decoder.close())
    assert out == frames


@given(frames=st.lists(frame_st, max_size=6))
def test_crlf_and_blank_lines_are_tolerated(frames: list[Frame]) -> None:
    data = b"\r\n\r\n".join(encode_frame(f).rstrip(b"\n") for f in frames) + b"\r\n"
    assert FrameDecoder().feed(b"\n  \n" + data) == frames


def test_unknown_types_and_fields_are_ignored() -> None:
    lines = [
        b'{"type":"heartbeat","at":1}',
        b'{"type":"chunk","seq":0,"audio":"AAA=","samples":1,"extra":{"a":1}}',
        b'{"type":"eos","samples_total":1,"chunks_total":1,"note":"bye"}',
    ]
    # "AAA=" decodes to two bytes: one sample
    frames = FrameDecoder().feed(b"\n".join(lines) + b"\n")
    assert frames == [ChunkFrame(0, b"\x00\x00"), EosFrame(1, 1)]


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[1,2]",
        b'{"type":"chunk","seq":0}',
        b'{"type":"chunk","seq":"0","audio":""}',
        b'{"type":"chunk","seq":0,"audio":"@@@"}',
        b'{"type":"chunk","seq":0,"audio":"AA=="}',
        b'{"type":"chunk","seq":0,"audio":"AAA=","samples":5}',
        b'{"type":"eos"}',
        b'{"type":"error"}',
    ],
)
def test_malformed_frames_raise(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(line + b"\n")


def test_overlong_line_raises_without_waiting_for_newline() -> None:
    decoder = FrameDecoder(max_line_bytes=100)
    with pytest.raises(ProtocolError):
        decoder.feed(b'{"type":"metrics","pad":"' + b"x" * 200)


@given(garbage=st.binary(max_size=300))
@settings(max_examples=300)
def test_garbage_never_crashes_decoder(garbage: bytes) -> None:
    decoder = FrameDecoder(max_line_bytes=1000)
    try:
        decoder.feed(garbage)
        decoder.close()
    except ProtocolError:
        pass


def test_chunk_encoding_is_plain_json() -> None:
    line = encode_frame(ChunkFrame(3, b"\x01\x00\x02\x00"))
    obj = json.loads(line)
    assert obj == {
        "type": "chunk",
        "seq": 3,
        "samples": 2,
        "audio": base64.b64encode(b"\x01\x00\x02\x00").decode(),
    }


def test_tracker_enforces_rules() -> None:
    tracker = StreamTracker()
    tracker.observe(ChunkFrame(0, b"\x00\x00"))
    with pytest.raises(ProtocolError, match="seq 2"):
        tracker.observe(ChunkFrame(2, b"\x00\x00"))
    tracker = StreamTracker()
    tracker.observe(ChunkFrame(0, b"\x00\x00"))
    with pytest.raises(ProtocolError, match="eos declares"):
        tracker.observe(EosFrame(samples_total=5, chunks_total=1))
    tracker = StreamTracker()
    tracker.observe(EosFrame(0, 0))
    assert tracker.complete
    with pytest.raises(ProtocolError, match="after the end"):
        tracker.observe(MetricsFrame({}))


def test_parse_request_splits_params() -> None:
    req = parse_request(b'{"text":"hi","voice":"alloy","timeout_s":5,"temperature":0.4}', max_text_chars=10)
    assert (req.text, req.voice, req.timeout_s, req.params) == ("hi", "alloy", 5.0, {"temperature": 0.4})
    assert parse_request(req.to_json(), max_text_chars=10) == req


def test_playback_lead_is_a_protocol_field_of_seconds_at_least_zero() -> None:
    req = parse_request({"text": "hi", "playback_lead_s": 2.5}, max_text_chars=10)
    assert (req.playback_lead_s, req.params) == (2.5, {})
    assert parse_request(req.to_json(), max_text_chars=10) == req
    assert parse_request({"text": "hi", "playback_lead_s": None}, max_text_chars=10).playback_lead_s == 0.0
    for bad in (-1, "2", True, [1]):
        with pytest.raises(RequestError, match="playback_lead_s"):
            parse_request({"text": "hi", "playback_lead_s": bad}, max_text_chars=10)


def test_parse_request_limits() -> None:
    with pytest.raises(RequestError) as info:
        parse_request({"text": "x" * 11}, max_text_chars=10)
    assert info.value.code is ErrorCode.TEXT_TOO_LONG
    assert info.value.http_status == 413


@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.text(),
        st.lists(st.integers()),
        st.dictionaries(st.text(max_size=5), st.one_of(st.none(), st.integers(), st.text())),
    )
)
def test_parse_request_never_crashes(value: object) -> None:
    try:
        req = parse_request(value, max_text_chars=100)
    except RequestError as exc:
        assert exc.code in (ErrorCode.INVALID_REQUEST, ErrorCode.TEXT_TOO_LONG)
    else:
        assert req.text.strip()


def test_error_codes_map_to_statuses() -> None:
    assert ErrorCode.UNKNOWN_VOICE.http_status == 404
    assert ErrorCode.RATE_LIMITED.http_status == 429
    assert ErrorCode.OVERLOADED.retryable
    assert not ErrorCode.INVALID_REQUEST.retryable
    assert ErrorCode.parse("never-heard-of-it") is ErrorCode.INTERNAL


# --------------------------------------------------------------------------- chunks kept as lines


@given(frames=st.lists(frame_st, max_size=12), cuts=st.lists(st.integers(0, 10_000), max_size=8))
@settings(max_examples=200, deadline=None)
def test_lazy_decoder_gives_the_same_frames_and_relays_the_same_bytes(frames: list[Frame], cuts: list[int]) -> None:
    data = b"".join(encode_frame(f) for f in frames)
    points = sorted({c % (len(data) + 1) for c in cuts})
    decoder = FrameDecoder(keep_lines=True)
    out = []
    last = 0
    for point in [*points, len(data)]:
        out.extend(decoder.feed(data[last:point]))
        last = point
    out.extend(decoder.close())
    assert all(isinstance(f, ChunkLine) for f in out if isinstance(f, ChunkFrame))
    assert out == frames
    assert b"".join(encode_frame(f) for f in out) == data  # chunks relayed byte for byte


def test_a_chunk_line_is_not_decoded_until_its_audio_is_asked_for() -> None:
    line = encode_frame(ChunkFrame(7, b"\x01\x00\x02\x00"))
    frame = chunk_line(line.rstrip(b"\n"))
    assert frame is not None
    assert (frame.seq, frame.samples, frame.line) == (7, 2, line)
    assert "pcm" not in vars(frame)
    assert frame.pcm == b"\x01\x00\x02\x00"
    assert "pcm" in vars(frame)  # decoded once, then kept


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"chunk","seq":0,"samples":2,"audio":"AQACAA"}',  # no padding: not a multiple of 4
        b'{"type":"chunk","seq":0,"samples":2,"audio":"AQ*CAA=="}',  # outside the alphabet
        b'{"type":"chunk","seq":0,"samples":3,"audio":"AQACAA=="}',  # 2 samples declared as 3
        b'{"type":"chunk","seq":0,"samples":1,"audio":"AQ=A"}',  # padding in the middle
    ],
)
def test_a_canonical_chunk_with_bad_audio_breaks_the_stream(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        FrameDecoder(keep_lines=True).feed(line + b"\n")
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(line + b"\n")  # the full decoder agrees


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"chunk","seq":0,"audio":"AQACAA==","samples":2}',  # other key order
        b'{"type":"chunk","seq":0,"samples":2,"audio":"AQACAA==","extra":1}',  # an unknown field
        b'{"type": "chunk", "seq": 0, "samples": 2, "audio": "AQACAA=="}',  # spaces
        b'{"type":"chunk","seq":00,"samples":2,"audio":"AQACAA=="}',  # not JSON: a leading zero
    ],
)
def test_any_other_chunk_shape_is_decoded_in_full(line: bytes) -> None:
    assert chunk_line(line) is None
    try:
        expected = FrameDecoder().feed(line + b"\n")
    except ProtocolError:
        with pytest.raises(ProtocolError):
            FrameDecoder(keep_lines=True).feed(line + b"\n")
    else:
        assert FrameDecoder(keep_lines=True).feed(line + b"\n") == expected


# --------------------------------------------------------------------------- other frames kept as lines


@pytest.mark.parametrize(
    "line",
    [
        b'{"type": "metrics", "queue_ms": 0.5, "worker": "w-\xc3\xa9", "new_field": [1, 2]}',  # spaces, UTF-8, extra
        b'{"chunks_total":0,"type":"eos","samples_total":0,"note":"later keys"}',  # other key order, extra
        b'{"type":"error", "code":"overloaded", "message":"busy \\u2014 later", "retryable":1}',  # an escape
        b'{"type":"words","words":[{"word":"hi","start_s":0,"end_s":0.25}]}',
    ],
    ids=["metrics", "eos", "error", "words"],
)
def test_a_proxys_decoder_relays_every_other_frame_as_the_line_it_came_in(line: bytes) -> None:
    kept = FrameDecoder(keep_lines=True).feed(line + b"\r\n")
    decoded = FrameDecoder().feed(line + b"\n")
    assert kept == decoded  # the same frame, checked the same way
    assert [encode_frame(frame) for frame in kept] == [line + b"\n"]  # not encoded again
    assert encode_frame(decoded[0]) != line + b"\n"  # without the line, the frame is encoded afresh


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"metrics","rtf":NaN}',
        b'{"type":"metrics","rtf":-Infinity}',
        b'{"type":"eos","samples_total":0,"chunks_total":0,"x":Infinity}',
        b'{"type":"error","code":"internal","message":"\xe9"}',  # Latin-1, not UTF-8
        '{"type":"eos","samples_total":0,"chunks_total":0}'.encode("utf-16-le"),
    ],
    ids=["nan", "infinity", "infinity-in-eos", "latin-1", "utf-16"],
)
def test_a_line_that_is_not_strict_utf8_json_breaks_the_stream(line: bytes) -> None:
    for decoder in (FrameDecoder(), FrameDecoder(keep_lines=True)):
        with pytest.raises(ProtocolError):
            decoder.feed(line + b"\n")

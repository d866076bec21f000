"""Fuzzing: the NDJSON decoder and stream rules under hostile bytes, request validation over real HTTP.

``tests/test_protocol.py`` covers round trips under any byte split, CRLF and
blank lines, malformed single lines and random garbage. Added here: a bad
line *inside* a valid stream (what came before it is delivered, nothing after
it is), overlong lines fed in small pieces (the error comes before the buffer
passes the limit by more than one piece), the exact line-length boundary,
and the stream rules that catch duplicated, dropped or reordered chunks.
Then real servers: random JSON bodies and random bytes against a worker and a
gateway (never a 500, never a hang, and any 200 carries exactly the engine's
audio). Schemathesis drives both OpenAPI schemas in ``test_schemathesis.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orpheus_tts.engines.base import UnknownVoiceError
from orpheus_tts.engines.testing import ToneEngine, render
from orpheus_tts.protocol import (
    ChunkFrame,
    EosFrame,
    ErrorFrame,
    Frame,
    FrameDecoder,
    MetricsFrame,
    ProtocolError,
    StreamTracker,
    encode_frame,
)
from orpheus_tts.worker.config import WorkerConfig

REQUEST_TIMEOUT_S = 10.0
"""No answer (or no end of stream) within this is a hang."""
DOCUMENTED_5XX = {503: {"overloaded", "no_workers"}, 504: {"deadline_exceeded"}}
"""Server-side statuses the protocol documents for valid requests (a tiny ``timeout_s`` is a 504)."""

# ------------------------------------------------------------------ decoder and stream rules

pcm_st = st.binary(min_size=2, max_size=64).map(lambda b: b[: len(b) - len(b) % 2])
metrics_st = st.builds(MetricsFrame, st.dictionaries(st.sampled_from(["queue_ms", "rtf"]), st.integers(0, 10**6)))


@st.composite
def valid_streams(draw: st.DrawFn) -> list[Frame]:
    """A stream as a worker sends it: metrics, chunks with seq 0..n-1, metrics, then eos."""
    chunks = [ChunkFrame(seq, pcm) for seq, pcm in enumerate(draw(st.lists(pcm_st, max_size=8)))]
    eos = EosFrame(samples_total=sum(c.samples for c in chunks), chunks_total=len(chunks))
    return [draw(metrics_st), *chunks, draw(metrics_st), eos]


bad_lines_st = st.one_of(
    st.text(max_size=40).map(lambda s: "#" + s.replace("\n", " ")),  # never JSON
    st.one_of(st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=3)).map(json.dumps),
    st.sampled_from(
        [
            '{"type":"chunk","seq":0}',
            '{"type":"chunk","seq":-1,"audio":""}',
            '{"type":"chunk","seq":0,"audio":"AA=="}',
            '{"type":"chunk","seq":0,"audio":"!!!!"}',
            '{"type":"eos","samples_total":"1","chunks_total":0}',
            '{"type":"error","code":5}',
            '{"type":"chunk","seq":0,"audio":"AAA=","samples":9}',
        ]
    ),
).map(lambda s: s.encode("utf-8"))


def _feed_split(data: bytes, cuts: list[int]) -> tuple[list[Frame], ProtocolError | None]:
    """Feed ``data`` to a decoder cut at ``cuts``: the frames delivered, and the error that stopped it."""
    decoder = FrameDecoder()
    out: list[Frame] = []
    points = sorted({c % (len(data) + 1) for c in cuts})
    last = 0
    try:
        for point in [*points, len(data)]:
            out.extend(decoder.feed(data[last:point]))
            last = point
        out.extend(decoder.close())
    except ProtocolError as exc:
        return out, exc
    return out, None


@given(stream=valid_streams(), bad=bad_lines_st, at=st.integers(0, 20), cuts=st.lists(st.integers(0, 5000)))
@settings(max_examples=300, deadline=None)
def test_a_bad_line_inside_a_stream_stops_it_and_nothing_after_is_delivered(
    stream: list[Frame], bad: bytes, at: int, cuts: list[int]
) -> None:
    at %= len(stream) + 1
    lines = [encode_frame(f) for f in stream]
    data = b"".join(lines[:at]) + bad + b"\n" + b"".join(lines[at:])
    delivered, error = _feed_split(data, cuts)
    assert error is not None, "a bad line went unnoticed"
    # Frames that arrived in the same read as the bad line may be lost with it: never more, never others.
    assert delivered == stream[: len(delivered)]
    assert len(delivered) <= at


def _feed_pieces(decoder: FrameDecoder, data: bytes, piece: int, fed: list[int]) -> None:
    """Feed ``data`` ``piece`` bytes at a time, then close; ``fed`` records each piece that was taken."""
    for start in range(0, len(data), piece):
        decoder.feed(data[start : start + piece])
        fed.append(min(piece, len(data) - start))
    decoder.close()


@given(
    limit=st.integers(64, 4096),
    over=st.integers(1, 10_000),
    piece=st.integers(1, 700),
    newline=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_an_overlong_line_fails_before_the_buffer_outgrows_the_limit_by_one_piece(
    limit: int, over: int, piece: int, newline: bool
) -> None:
    line = b'{"type":"metrics","pad":"' + b"x" * (limit + over) + b'"}' + (b"\n" if newline else b"")
    decoder = FrameDecoder(max_line_bytes=limit)
    fed: list[int] = []
    with pytest.raises(ProtocolError, match="longer than"):
        _feed_pieces(decoder, line, piece, fed)
    fed_total = sum(fed)
    assert fed_total <= limit + piece, "the decoder buffered more than one piece past its limit"


@given(limit=st.integers(40, 2000))
def test_a_line_of_exactly_the_limit_is_accepted_and_one_more_byte_is_not(limit: int) -> None:
    def frame_of(size: int) -> bytes:
        return b'{"type":"metrics","pad":"' + b"x" * (size - 27) + b'"}'

    exact = frame_of(limit)
    assert len(exact) == limit
    assert FrameDecoder(max_line_bytes=limit).feed(exact + b"\n") == [MetricsFrame({"pad": "x" * (limit - 27)})]
    with pytest.raises(ProtocolError):
        FrameDecoder(max_line_bytes=limit).feed(frame_of(limit + 1) + b"\n")


def _observe_all(frames: list[Frame]) -> StreamTracker:
    tracker = StreamTracker()
    for frame in frames:
        tracker.observe(frame)
    return tracker


MUTATIONS = ["duplicate", "drop", "swap", "short_eos", "after_end"]


@given(stream=valid_streams(), mutation=st.sampled_from(MUTATIONS), index=st.integers(0, 100))
@settings(max_examples=300, deadline=None)
def test_duplicated_dropped_or_reordered_chunks_never_pass_as_a_complete_stream(
    stream: list[Frame], mutation: str, index: int
) -> None:
    assert _observe_all(stream).complete
    chunks = [i for i, f in enumerate(stream) if isinstance(f, ChunkFrame)]
    bad = list(stream)
    if mutation == "after_end":
        bad.append(ChunkFrame(len(chunks), b"\x00\x00"))
    elif mutation == "short_eos":
        eos = bad[-1]
        assert isinstance(eos, EosFrame)
        bad[-1] = EosFrame(eos.samples_total + 1 + index % 5, eos.chunks_total)
    elif not chunks or (mutation == "swap" and len(chunks) < 2):
        return  # nothing to mutate in an empty stream
    elif mutation == "duplicate":
        i = chunks[index % len(chunks)]
        bad.insert(i + 1, bad[i])
    elif mutation == "drop":
        del bad[chunks[index % len(chunks)]]
    else:
        i = index % (len(chunks) - 1)
        bad[chunks[i]], bad[chunks[i + 1]] = bad[chunks[i + 1]], bad[chunks[i]]
    with pytest.raises(ProtocolError):  # a dropped last chunk shows only at eos: still an error
        _observe_all(bad)


# ------------------------------------------------------------------ request validation over HTTP

CATALOG = ToneEngine().catalog
"""The voices of the fuzzed worker's engine (the tone engine's defaults), to resolve what a 200 used."""


json_st = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
body_st = st.fixed_dictionaries(
    {},
    optional={
        "text": st.text(max_size=60) | st.just("Hello there. How are you?") | json_st,
        "voice": st.sampled_from([None, "", "tone", "tone-low", "alloy", "nobody"]) | json_st,
        "timeout_s": st.floats(min_value=1e-6, max_value=1e6) | json_st,
        "speed": st.floats(min_value=0.1, max_value=5.0) | json_st,
        "temperature": st.floats(min_value=-1, max_value=3) | json_st,
        "top_k": st.integers(-5, 10**12) | json_st,
        "seed": st.integers(-5, 10**20) | json_st,
    },
).flatmap(
    lambda known: st.dictionaries(st.text(max_size=10), json_st, max_size=2).map(lambda extra: {**extra, **known})
)


def _check_answer(body: Any, response: httpx.Response) -> None:
    """What any answer to a fuzzed body must look like; raises AssertionError."""
    status = response.status_code
    if status != 200:
        error = response.json()["error"]
        assert status < 500 or error["code"] in DOCUMENTED_5XX.get(status, ()), (status, error, body)
        assert isinstance(error["message"], str)
        assert error["message"]
        return
    assert isinstance(body, dict)
    decoder, tracker = FrameDecoder(), StreamTracker()
    audio = b""
    for frame in decoder.feed(response.content) + decoder.close():
        tracker.observe(frame)
        if isinstance(frame, ChunkFrame):
            audio += frame.pcm
    assert tracker.ended is not None, "a 200 stream that never ended"
    voice = CATALOG.resolve(body.get("voice") or None)
    expected = render(body["text"], voice, float(body.get("speed") or 1.0))
    if isinstance(tracker.ended, ErrorFrame):
        assert tracker.ended.code == "deadline_exceeded", tracker.ended
        assert expected.startswith(audio)
    else:
        assert audio == expected


@pytest.mark.parametrize("target", ["worker", "gateway"])
@given(body=st.one_of(body_st, json_st))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_json_bodies_never_500_and_never_hang(fuzz_servers: dict[str, str], target: str, body: Any) -> None:
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        response = client.post(f"{fuzz_servers[target]}/v1/tts/stream", json=body)
    try:
        _check_answer(body, response)
    except UnknownVoiceError:
        pytest.fail(f"200 for a voice the engine does not know: {body!r}")


@pytest.mark.parametrize("target", ["worker", "gateway"])
@given(raw=st.binary(max_size=512) | st.text(max_size=200).map(lambda s: s.encode("utf-8")))
@settings(max_examples=100, deadline=None)
def test_random_bytes_are_a_clean_400(fuzz_servers: dict[str, str], target: str, raw: bytes) -> None:
    try:
        json.loads(raw)
    except ValueError:
        pass
    else:
        return  # valid JSON: the case above
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        response = client.post(
            f"{fuzz_servers[target]}/v1/tts/stream", content=raw, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


def test_an_oversized_body_is_a_413_not_a_crash(fuzz_servers: dict[str, str]) -> None:
    big = json.dumps({"text": "x" * (WorkerConfig().max_body_bytes + 1)})
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        for url in fuzz_servers.values():
            response = client.post(f"{url}/v1/tts/stream", content=big, headers={"content-type": "application/json"})
            assert response.status_code == 413
            assert response.json()["error"]["code"] == "body_too_large"


# ------------------------------------------------------------------ OpenAPI schemas


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolves(document: dict[str, Any], ref: str) -> bool:
    """Whether a local ``$ref`` (a JSON pointer from the document root) names something."""
    if not ref.startswith("#/"):
        return False
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_every_ref_in_the_gateway_schema_resolves(fuzz_servers: dict[str, str]) -> None:
    """The speech body is a pydantic schema; its ``$defs`` once stayed nested, so ``#/$defs/VoiceRef``
    named nothing from the root and schemathesis could generate no body (fixed in ce1bfcd)."""
    document = httpx.get(f"{fuzz_servers['gateway']}/openapi.json", timeout=REQUEST_TIMEOUT_S).json()
    broken = sorted({ref for ref in _refs(document) if not _resolves(document, ref)})
    assert not broken, f"unresolvable $ref: {broken}"


def test_every_ref_in_the_worker_schema_resolves(fuzz_servers: dict[str, str]) -> None:
    document = httpx.get(f"{fuzz_servers['worker']}/openapi.json", timeout=REQUEST_TIMEOUT_S).json()
    assert all(_resolves(document, ref) for ref in _refs(document))

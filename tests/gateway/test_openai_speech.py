"""OpenAI-compatible speech: request validation and translation, and the official ``openai`` client end to end.

The server here is a tiny real app on a loopback port that mounts the module
the way the gateway does, over a fake PCM source (a sine whose length follows
the text and the ``speed`` parameter), so every format is checked by decoding
what the official client received.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import numpy as np
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orpheus_tts.encoding import AUDIO_FORMATS, media_type
from orpheus_tts.gateway.auth import Authenticator
from orpheus_tts.gateway.keys import KeyLimits, sha256_hex
from orpheus_tts.gateway.openai_speech import (
    SSE_MEDIA_TYPE,
    SpeechRequestError,
    openai_error_body,
    openai_error_response,
    parse_speech_request,
    pcm_from_frames,
    speech_stream,
    to_tts_request,
    to_v1_body,
)
from orpheus_tts.protocol import (
    SAMPLE_RATE_HZ,
    ChunkFrame,
    EosFrame,
    ErrorCode,
    ErrorFrame,
    Frame,
    MetricsFrame,
    ServiceError,
    TTSRequest,
)
from orpheus_tts.serving.streaming import PreparedStream, PreparedStreamResponse
from tests.eventually import eventually_sync
from tests.servers import run_server
from tests.test_encoding import DURATION_SLACK_S, decode_audio, dominant_hz

# The formats that OpenAI's client accepts: the same six as AUDIO_FORMATS.
OpenAIFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]

KEY = "sk-openai-compat-test"
TONE_HZ = 440.0
MAX_TEXT_CHARS = 300
BASE_S = 0.4
SECONDS_PER_CHAR = 0.02
CHUNK_S = 0.1
TEXT = "The quick brown fox jumps over the lazy dog."


def expected_seconds(text: str, speed: float = 1.0) -> float:
    return (BASE_S + SECONDS_PER_CHAR * len(text)) / speed


# --------------------------------------------------------------------------- the test server


@dataclass
class FakeSource:
    """A sine-wave 'engine': knobs for pacing and failures, and events the tests wait on."""

    chunk_delay_s: float = 0.0
    fail_after_chunks: int | None = None
    requests: list[TTSRequest] = field(default_factory=list)
    finished: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)

    async def __call__(self, tts: TTSRequest) -> AsyncIterator[bytes]:
        self.requests.append(tts)
        speed = float(tts.params.get("speed", 1.0))
        total = round(expected_seconds(tts.text, speed) * SAMPLE_RATE_HZ)
        t = np.arange(total) / SAMPLE_RATE_HZ
        pcm = (np.sin(2 * np.pi * TONE_HZ * t) * 0.3 * 32767).astype("<i2").tobytes()
        step = round(CHUNK_S * SAMPLE_RATE_HZ) * 2
        try:
            for index, start in enumerate(range(0, len(pcm), step)):
                if self.fail_after_chunks is not None and index == self.fail_after_chunks:
                    raise ServiceError(ErrorCode.ENGINE_ERROR, "the engine failed midway")
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                yield pcm[start : start + step]
            self.finished.set()
        finally:
            self.closed.set()


def speech_app(auth: Authenticator, source: Callable[[TTSRequest], AsyncIterator[bytes]]) -> Starlette:
    """``POST /v1/audio/speech`` mounted as the gateway mounts it: auth, parse, translate, quota, stream."""

    async def speech(request: Request) -> Response:
        try:
            identity = auth.authenticate(request.headers)
            speech_request = parse_speech_request(await request.body(), max_text_chars=MAX_TEXT_CHARS)
            tts = to_tts_request(speech_request)
        except ServiceError as exc:
            return openai_error_response(exc)

        async def prepare() -> PreparedStream:
            lease = auth.acquire(identity)

            async def pcm() -> AsyncIterator[bytes]:
                try:
                    async for chunk in source(tts):
                        yield chunk
                finally:
                    lease.release()

            return speech_stream(speech_request, pcm())

        return PreparedStreamResponse(prepare, error_body=openai_error_body)

    return Starlette(routes=[Route("/v1/audio/speech", speech, methods=["POST"])])


@dataclass
class Server:
    url: str
    source: FakeSource
    auth: Authenticator

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=30)


@contextlib.contextmanager
def serve(source: FakeSource | None = None, limits: KeyLimits | None = None) -> Iterator[Server]:
    source = source or FakeSource()
    auth = Authenticator([("test-key", sha256_hex(KEY), limits or KeyLimits())])
    with run_server(speech_app(auth, source)) as url:
        yield Server(url, source, auth)


@pytest.fixture
def server() -> Iterator[Server]:
    with serve() as running:
        yield running


@pytest.fixture
def slow_server() -> Iterator[Server]:
    """Audio comes 0.1 s per 0.1 s chunk, i.e. in real time, as a live engine's would."""
    with serve(FakeSource(chunk_delay_s=CHUNK_S)) as running:
        yield running


def check_audio(data: bytes, fmt: str, seconds: float) -> None:
    samples, rate = decode_audio(data, fmt)
    assert seconds - 0.01 <= len(samples) / rate <= seconds + DURATION_SLACK_S
    assert dominant_hz(samples, rate) == pytest.approx(TONE_HZ, abs=3)


# --------------------------------------------------------------------------- the official client


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_openai_client_create_every_format(server: Server, fmt: OpenAIFormat) -> None:
    with server.client() as client:
        response = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format=fmt)
        data = response.content
        assert response.response.headers["content-type"] == media_type(fmt)
    check_audio(data, fmt, expected_seconds(TEXT))
    assert server.source.requests[0].voice == "alloy"  # engines resolve OpenAI's names themselves


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_openai_client_streaming_response_every_format(slow_server: Server, fmt: OpenAIFormat) -> None:
    pieces: list[bytes] = []
    done_at_first_piece: bool | None = None
    with slow_server.client() as client:
        with client.audio.speech.with_streaming_response.create(
            model="gpt-4o-mini-tts", voice={"id": "tara"}, input=TEXT, response_format=fmt
        ) as response:
            assert response.headers["content-type"] == media_type(fmt)
            for piece in response.iter_bytes():
                if done_at_first_piece is None:
                    done_at_first_piece = slow_server.source.finished.is_set()
                pieces.append(piece)
    assert done_at_first_piece is False, "the first audio must arrive while synthesis is still running"
    assert len(pieces) >= 3
    check_audio(b"".join(pieces), fmt, expected_seconds(TEXT))
    assert slow_server.source.requests[0].voice == "tara"


def test_speed_reaches_the_engine(server: Server) -> None:
    with server.client() as client:
        data = client.audio.speech.create(
            model="tts-1", voice="echo", input=TEXT, response_format="wav", speed=2.0
        ).content
    assert server.source.requests[0].params == {"speed": 2.0}
    check_audio(data, "wav", expected_seconds(TEXT, speed=2.0))


def test_extra_body_parameters_pass_to_the_engine(server: Server) -> None:
    with server.client() as client:
        client.audio.speech.create(
            model="orpheus",
            voice="leah",
            input=TEXT,
            response_format="pcm",
            instructions="Speak cheerfully.",
            extra_body={"temperature": 0.4, "seed": 7},
        ).read()
    request = server.source.requests[0]
    assert (request.voice, request.params) == ("leah", {"temperature": 0.4, "seed": 7})


def sse_events(response: Any) -> list[dict[str, Any]]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            events.append(json.loads(line[len("data: ") :]))
        else:
            assert line == "", f"unexpected SSE line {line!r}"
    return events


@pytest.mark.parametrize("fmt", ["mp3", "pcm", "opus"])
def test_openai_client_sse_stream(slow_server: Server, fmt: OpenAIFormat) -> None:
    with slow_server.client() as client:
        with client.audio.speech.with_streaming_response.create(
            model="gpt-4o-mini-tts", voice="nova", input=TEXT, response_format=fmt, stream_format="sse"
        ) as response:
            assert response.headers["content-type"].startswith(SSE_MEDIA_TYPE)
            events = sse_events(response)
    *deltas, done = events
    assert len(deltas) >= 3
    assert {e["type"] for e in deltas} == {"speech.audio.delta"}
    check_audio(b"".join(base64.b64decode(e["audio"]) for e in deltas), fmt, expected_seconds(TEXT))
    assert done["type"] == "speech.audio.done"
    usage = done["usage"]
    assert usage["input_tokens"] == usage["total_tokens"] == len(TEXT)
    assert usage["audio_seconds"] == pytest.approx(expected_seconds(TEXT), abs=0.001)


# --------------------------------------------------------------------------- errors, OpenAI's shape


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


@pytest.mark.parametrize(
    ("kwargs", "status", "param", "code"),
    [
        ({"response_format": "ogg"}, 400, "response_format", "invalid_request"),
        ({"speed": 5.0}, 400, "speed", "invalid_request"),
        ({"speed": 0.1}, 400, "speed", "invalid_request"),
        ({"input": "   "}, 400, "input", "invalid_request"),
        ({"input": "x" * (MAX_TEXT_CHARS + 1)}, 413, "input", "text_too_long"),
        ({"stream_format": "ndjson"}, 400, "stream_format", "invalid_request"),
        ({"voice": {"name": "tara"}}, 400, "voice", "invalid_request"),
        ({"extra_body": {"text": "hi"}}, 400, "text", "invalid_request"),
    ],
)
def test_openai_client_sees_errors_in_openai_shape(
    server: Server, kwargs: dict[str, Any], status: int, param: str, code: str
) -> None:
    args: dict[str, Any] = {"model": "tts-1", "voice": "alloy", "input": TEXT, **kwargs}
    with server.client() as client, pytest.raises(openai.APIStatusError) as info:
        client.audio.speech.create(**args)
    if status == 400:
        assert isinstance(info.value, openai.BadRequestError)
    assert info.value.status_code == status
    error = error_of(info.value)
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")
    assert error["message"]
    assert server.source.requests == [], "nothing may reach the engine"


def test_wrong_key_is_authentication_error(server: Server) -> None:
    with server.client("sk-wrong") as client, pytest.raises(openai.AuthenticationError) as info:
        client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT)
    assert info.value.response.headers["www-authenticate"] == "Bearer"
    error = error_of(info.value)
    assert (error["code"], error["type"]) == ("unauthorized", "authentication_error")


def test_raw_http_errors(server: Server) -> None:
    url, key = f"{server.url}/v1/audio/speech", {"X-API-Key": KEY}
    bad_json = httpx.post(url, content=b"{nope", headers=key)
    not_object = httpx.post(url, json=["model", "input"], headers=key)
    no_model = httpx.post(url, json={"input": "hi"}, headers=key)
    no_key = httpx.post(url, json={"model": "m", "input": "hi"})
    assert (bad_json.status_code, bad_json.json()["error"]["code"]) == (400, "invalid_request")
    assert not_object.status_code == 400
    assert (no_model.status_code, no_model.json()["error"]["param"]) == (400, "model")
    assert no_key.status_code == 401
    assert no_key.json()["error"]["message"].startswith("missing API key")


def test_concurrency_quota_is_rate_limit_error_and_released_after_the_stream() -> None:
    with serve(FakeSource(chunk_delay_s=CHUNK_S), KeyLimits(max_concurrent_streams=1)) as srv:
        with srv.client() as client:
            with client.audio.speech.with_streaming_response.create(
                model="tts-1", voice="alloy", input=TEXT, response_format="pcm"
            ) as held:
                pieces = held.iter_bytes()  # held in a name: a dropped iterator closes the response
                next(pieces)
                with pytest.raises(openai.RateLimitError) as info:
                    client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT)
            # Closing the held stream early must give its slot back.
            assert eventually_sync(lambda: srv.auth.streams_open("test-key") == 0, within_s=2.0)
            client.audio.speech.create(model="tts-1", voice="alloy", input="Again.", response_format="pcm").read()
    assert info.value.response.headers["retry-after"] == "1"
    error = error_of(info.value)
    assert (error["code"], error["type"]) == ("rate_limited", "rate_limit_error")


def test_requests_per_minute_quota() -> None:
    with serve(limits=KeyLimits(requests_per_minute=2)) as srv, srv.client() as client:
        for _ in range(2):
            client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", response_format="pcm").read()
        with pytest.raises(openai.RateLimitError) as info:
            client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.")
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 60


# --------------------------------------------------------------------------- failures and disconnects


def test_audio_stream_failing_midway_is_cut_not_truncated() -> None:
    """A file that ends early would look whole: the response must break instead."""
    with serve(FakeSource(fail_after_chunks=3)) as srv:
        received = bytearray()
        with httpx.stream(
            "POST",
            f"{srv.url}/v1/audio/speech",
            json={"model": "tts-1", "input": TEXT, "response_format": "wav"},
            headers={"Authorization": f"Bearer {KEY}"},
        ) as response:
            assert response.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):  # noqa: PT012
                for piece in response.iter_bytes():
                    received += piece
        assert srv.source.closed.wait(2)
    assert 0 < len(received) < expected_seconds(TEXT) * SAMPLE_RATE_HZ * 2


def test_sse_stream_failing_midway_ends_with_an_error_event() -> None:
    with serve(FakeSource(fail_after_chunks=3)) as srv, srv.client() as client:
        with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=TEXT, response_format="pcm", stream_format="sse"
        ) as response:
            events = sse_events(response)
    *deltas, last = events
    assert [e["type"] for e in deltas] == ["speech.audio.delta"] * 3
    assert last["type"] == "error"
    assert last["error"]["code"] == "engine_error"
    assert last["error"]["type"] == "server_error"
    assert "speech.audio.done" not in [e["type"] for e in events]


def test_client_disconnect_stops_the_source(slow_server: Server) -> None:
    with slow_server.client() as client:
        with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input="x" * 250, response_format="mp3"
        ) as response:
            next(response.iter_bytes())
    started = time.monotonic()
    assert slow_server.source.closed.wait(2.0), "the source must be closed when the client leaves"
    assert not slow_server.source.finished.is_set()
    assert time.monotonic() - started < 2.0
    assert eventually_sync(lambda: slow_server.auth.streams_open("test-key") == 0, within_s=2.0)


# --------------------------------------------------------------------------- translation (units)


def parse(body: dict[str, Any]) -> Any:
    return parse_speech_request(json.dumps(body).encode(), max_text_chars=MAX_TEXT_CHARS)


def test_translation_to_v1() -> None:
    plain = parse({"model": "tts-1", "input": "Hello.", "voice": "alloy"})
    assert (plain.response_format, plain.stream_format, plain.speed) == ("mp3", "audio", 1.0)
    assert to_v1_body(plain) == {"text": "Hello.", "voice": "alloy"}
    assert to_v1_body(plain, voice_map={"alloy": None}) == {"text": "Hello.", "voice": None}
    assert to_v1_body(plain, voice_map={"alloy": "tara"})["voice"] == "tara"
    custom = parse({"model": "m", "input": "Hi.", "voice": {"id": "tara"}, "speed": 0.5, "stream": True})
    assert to_v1_body(custom) == {"text": "Hi.", "voice": "tara", "speed": 0.5}
    no_voice = parse({"model": "m", "input": "Hi.", "speed": 1, "seed": 3, "timeout_s": 5})
    assert to_v1_body(no_voice) == {"text": "Hi.", "voice": None, "seed": 3, "timeout_s": 5}
    tts = to_tts_request(no_voice)
    assert (tts.text, tts.voice, tts.timeout_s, tts.params) == ("Hi.", None, 5.0, {"seed": 3})


def test_instructions_are_accepted_and_not_sent_to_the_engine() -> None:
    request = parse({"model": "gpt-4o-mini-tts", "input": "Hi.", "instructions": "Whisper."})
    assert request.instructions == "Whisper."
    assert "instructions" not in to_v1_body(request)


@pytest.mark.parametrize(
    ("body", "param", "status"),
    [
        ({"input": "Hi."}, "model", 400),
        ({"model": "", "input": "Hi."}, "model", 400),
        ({"model": 3, "input": "Hi."}, "model", 400),
        ({"model": "m"}, "input", 400),
        ({"model": "m", "input": ""}, "input", 400),
        ({"model": "m", "input": 42}, "input", 400),
        ({"model": "m", "input": "Hi.", "voice": 7}, "voice", 400),
        ({"model": "m", "input": "Hi.", "voice": {"id": ""}}, "voice", 400),
        ({"model": "m", "input": "Hi.", "response_format": "MP3"}, "response_format", 400),
        ({"model": "m", "input": "Hi.", "speed": "fast"}, "speed", 400),
        ({"model": "m", "input": "Hi.", "speed": True}, "speed", 400),
        ({"model": "m", "input": "Hi.", "speed": 4.01}, "speed", 400),
        ({"model": "m", "input": "Hi.", "instructions": 1}, "instructions", 400),
        ({"model": "m", "input": "Hi.", "text": "Hi."}, "text", 400),
        ({"model": "m", "input": "y" * (MAX_TEXT_CHARS + 1)}, "input", 413),
    ],
)
def test_invalid_requests(body: dict[str, Any], param: str, status: int) -> None:
    with pytest.raises(SpeechRequestError) as info:
        parse(body)
    assert (info.value.param, info.value.http_status) == (param, status)
    assert openai_error_body(info.value)["error"]["param"] == param


def test_nan_speed_is_refused() -> None:
    with pytest.raises(SpeechRequestError) as info:
        parse_speech_request(b'{"model": "m", "input": "Hi.", "speed": NaN}', max_text_chars=100)
    assert info.value.param == "speed"


def test_error_body_types_follow_openai() -> None:
    def kind(code: ErrorCode) -> str:
        return str(openai_error_body(ServiceError(code, "m"))["error"]["type"])

    assert kind(ErrorCode.INVALID_REQUEST) == "invalid_request_error"
    assert kind(ErrorCode.UNKNOWN_VOICE) == "invalid_request_error"
    assert kind(ErrorCode.UNAUTHORIZED) == "authentication_error"
    assert kind(ErrorCode.RATE_LIMITED) == "rate_limit_error"
    assert kind(ErrorCode.NO_WORKERS) == "server_error"
    assert kind(ErrorCode.DEADLINE_EXCEEDED) == "server_error"
    assert openai_error_body(ServiceError(ErrorCode.UNKNOWN_VOICE, "no"))["error"]["param"] == "voice"
    assert openai_error_body(ServiceError(ErrorCode.INTERNAL, "no"))["error"]["param"] is None
    response = openai_error_response(ServiceError(ErrorCode.OVERLOADED, "busy", retry_after_s=2.5))
    assert (response.status_code, response.headers["retry-after"]) == (503, "3")
    assert json.loads(bytes(response.body)) == {
        "error": {"message": "busy", "type": "server_error", "param": None, "code": "overloaded"}
    }


async def frames_of(*frames: Frame, closed: list[bool]) -> AsyncIterator[Frame]:
    try:
        for frame in frames:
            yield frame
    finally:
        closed.append(True)


async def test_pcm_from_frames() -> None:
    closed: list[bool] = []
    frames = frames_of(
        MetricsFrame({"queue_ms": 1}),
        ChunkFrame(0, b"\x01\x00"),
        ChunkFrame(1, b"\x02\x00"),
        EosFrame(2, 2),
        ChunkFrame(2, b"\x03\x00"),
        closed=closed,
    )
    assert [pcm async for pcm in pcm_from_frames(frames)] == [b"\x01\x00", b"\x02\x00"]
    assert closed == [True]


@pytest.mark.parametrize(
    ("tail", "code"),
    [
        ((ErrorFrame("deadline_exceeded", "too slow"),), ErrorCode.DEADLINE_EXCEEDED),
        ((ErrorFrame("something_new", "?"),), ErrorCode.INTERNAL),
        ((), ErrorCode.WORKER_LOST),
    ],
)
async def test_pcm_from_frames_raises_for_a_failed_or_cut_stream(tail: tuple[Frame, ...], code: ErrorCode) -> None:
    closed: list[bool] = []
    received = []
    with pytest.raises(ServiceError) as info:  # noqa: PT012
        async for pcm in pcm_from_frames(frames_of(ChunkFrame(0, b"\x01\x00"), *tail, closed=closed)):
            received.append(pcm)
    assert received == [b"\x01\x00"]
    assert info.value.code is code
    assert closed == [True]


class Upstream:
    """An open upstream: closing it is observable even if nobody read from it."""

    def __init__(self, *items: Any) -> None:
        self.items = list(items)
        self.closed = False

    def __aiter__(self) -> Upstream:
        return self

    async def __anext__(self) -> Any:
        if not self.items:
            raise StopAsyncIteration
        return self.items.pop(0)

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.parametrize("stream_format", ["audio", "sse"])
@pytest.mark.parametrize("through_frames", [False, True])
async def test_a_body_closed_before_its_first_piece_still_closes_the_upstream(
    stream_format: str, through_frames: bool
) -> None:
    """The client may leave while the headers are sent, before the body's first piece is asked for."""
    request = parse({"model": "m", "input": "Hi.", "stream_format": stream_format})
    if through_frames:
        upstream = Upstream(ChunkFrame(0, b"\x01\x00"), EosFrame(1, 1))
        body = speech_stream(request, pcm_from_frames(upstream)).body
    else:
        upstream = Upstream(b"\x01\x00")
        body = speech_stream(request, upstream).body
    await body.aclose()  # type: ignore[attr-defined]
    assert upstream.closed


@pytest.mark.parametrize("stream_format", ["audio", "sse"])
async def test_a_finished_body_closes_the_upstream(stream_format: str) -> None:
    upstream = Upstream(ChunkFrame(0, b"\x01\x00" * 2400), EosFrame(1, 2400))
    request = parse({"model": "m", "input": "Hi.", "stream_format": stream_format, "response_format": "wav"})
    body = speech_stream(request, pcm_from_frames(upstream)).body
    pieces = [piece async for piece in body]
    assert pieces
    assert upstream.closed

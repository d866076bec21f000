"""OpenAI-compatible ``POST /v1/audio/speech``: request model, translation to v1, responses.

The route is thin (the app mounts it)::

    request = parse_speech_request(body, max_text_chars=config.max_text_chars)
    tts = to_tts_request(request)                   # a protocol v1 request
    frames = ...                                    # the v1 frames a worker answers ``tts`` with
    prepared = speech_stream(request, pcm_from_frames(frames))  # PreparedStream: body, media type

Every error is OpenAI's JSON shape, ``{"error": {"message", "type", "param",
"code"}}`` (:func:`openai_error_body`), with our protocol's error code as
``code`` and its HTTP status.

Fields: ``model`` (required, any string: ``tts-1``, ``gpt-4o-mini-tts``,
``orpheus``… one gateway serves whatever its workers run), ``input``
(required, non-empty, at most the gateway's text cap), ``voice`` (a name or
``{"id": ...}``, passed on as the v1 ``voice``; engines answer OpenAI's
built-in names such as ``alloy`` with their default voice unless they have one by that name),
``response_format`` (``mp3`` default, ``opus``, ``aac``, ``flac``, ``wav``,
``pcm``), ``speed`` (0.25–4.0, passed to the engine as ``speed`` when it is
not 1.0), ``stream_format`` (``audio`` default, or ``sse``) and
``instructions`` (accepted and ignored: no engine here follows free-form
style instructions). Any other key is a generation parameter passed on to
the engine like in v1 (``temperature``, ``seed``…), where an unknown one is a
400 that names it; ``stream`` (sent by some clients with ``sse``) is ignored.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from types import MappingProxyType
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import JSONResponse

from orpheus_tts.encoding import AUDIO_FORMATS, create_encoder, media_type
from orpheus_tts.protocol import (
    SAMPLE_RATE_HZ,
    SAMPLE_WIDTH_BYTES,
    ChunkFrame,
    EosFrame,
    ErrorCode,
    ErrorFrame,
    Frame,
    RequestError,
    ServiceError,
    TTSRequest,
    parse_request,
)
from orpheus_tts.serving.streaming import PreparedStream
from orpheus_tts.validation import (
    DEFAULT_MAX_JSON_DEPTH,
    BodyValueError,
    check_body_values,
    check_speakable,
    decode_json_body,
)

__all__ = [
    "DEFAULT_VOICE_MAP",
    "MAX_SPEED",
    "MIN_SPEED",
    "SSE_MEDIA_TYPE",
    "SpeechRequest",
    "SpeechRequestError",
    "VoiceRef",
    "encode_audio_stream",
    "openai_error_body",
    "openai_error_response",
    "parse_speech_request",
    "pcm_from_frames",
    "speech_sse_stream",
    "speech_stream",
    "to_tts_request",
    "to_v1_body",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

MIN_SPEED = 0.25
"""Slowest ``speed`` OpenAI accepts."""
MAX_SPEED = 4.0
"""Fastest ``speed`` OpenAI accepts."""
SSE_MEDIA_TYPE = "text/event-stream"

DEFAULT_VOICE_MAP: Mapping[str, str | None] = MappingProxyType({})
"""Voice names rewritten before routing (``None``: the engine's default). Empty by default:
engines resolve OpenAI's built-in names (``alloy``…) to their default voice themselves."""

_IGNORED_EXTRA_KEYS = frozenset({"stream"})
_FORBIDDEN_EXTRA_KEYS = frozenset({"text"})


class VoiceRef(BaseModel):
    """OpenAI's custom-voice form, ``{"id": "voice_1234"}``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: str = Field(min_length=1)


class SpeechRequest(BaseModel):
    """A ``POST /v1/audio/speech`` body; see the module docstring for each field."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    input: str
    voice: str | VoiceRef | None = None
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=MIN_SPEED, le=MAX_SPEED)
    stream_format: Literal["audio", "sse"] = "audio"
    instructions: str | None = None

    @property
    def voice_name(self) -> str | None:
        return self.voice.id if isinstance(self.voice, VoiceRef) else self.voice

    @property
    def extra_params(self) -> dict[str, Any]:
        """Keys beyond OpenAI's, passed to the engine as generation parameters."""
        extra = self.model_extra or {}
        return {k: v for k, v in extra.items() if k not in _IGNORED_EXTRA_KEYS}


class SpeechRequestError(RequestError):
    """A request OpenAI's API would refuse; ``param`` names the field at fault."""

    def __init__(self, message: str, param: str | None = None, code: ErrorCode = ErrorCode.INVALID_REQUEST) -> None:
        super().__init__(message, code)
        self.param = param


# --------------------------------------------------------------------------- request


def parse_speech_request(
    raw: bytes | str | Mapping[str, Any], *, max_text_chars: int, max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
) -> SpeechRequest:
    """Validate a body (bytes, text or decoded JSON); raises :class:`SpeechRequestError`.

    ``input`` longer than ``max_text_chars`` is 413 ``text_too_long``, as on v1;
    the values no engine can take are refused as on v1 too
    (:mod:`orpheus_tts.validation`), with ``param`` naming the field.
    """
    try:
        if isinstance(raw, (bytes, bytearray, str)):
            data = decode_json_body(raw, max_json_depth)
        else:
            data = raw
            check_body_values(data, max_json_depth)
    except BodyValueError as exc:
        raise SpeechRequestError(exc.message, exc.field) from exc
    if not isinstance(data, Mapping):
        raise SpeechRequestError("body must be a JSON object")
    try:
        request = SpeechRequest.model_validate(dict(data))
    except ValidationError as exc:
        raise _from_validation(exc) from exc
    if not request.input.strip():
        raise SpeechRequestError("'input' is empty or only whitespace", "input")
    try:
        check_speakable(request.input, "input")
    except BodyValueError as exc:
        raise SpeechRequestError(exc.message, exc.field) from exc
    if len(request.input) > max_text_chars:
        raise SpeechRequestError(
            f"'input' has {len(request.input)} characters; the limit is {max_text_chars}",
            "input",
            ErrorCode.TEXT_TOO_LONG,
        )
    for key in request.extra_params:
        if key in _FORBIDDEN_EXTRA_KEYS:
            raise SpeechRequestError(f"unknown field {key!r}: the text to speak goes in 'input'", key)
    return request


def _from_validation(exc: ValidationError) -> SpeechRequestError:
    error = exc.errors()[0]
    loc = [str(part) for part in error.get("loc", ())]
    # A union (voice) reports each alternative; name the field, not the branch.
    param = loc[0] if loc else None
    kind = error.get("type", "")
    if kind == "missing":
        message = f"missing required field {param!r}"
    elif param == "voice":
        message = '\'voice\' must be a voice name or an object {"id": "..."}'
    elif param == "response_format":
        message = f"'response_format' must be one of {', '.join(AUDIO_FORMATS)}"
    elif param == "stream_format":
        message = "'stream_format' must be 'audio' or 'sse'"
    elif param == "speed" and kind in ("greater_than_equal", "less_than_equal"):
        message = f"'speed' must be between {MIN_SPEED} and {MAX_SPEED}"
    else:
        message = f"'{'.'.join(loc) or 'body'}': {error.get('msg', 'invalid value')}"
    return SpeechRequestError(message, param)


def to_v1_body(request: SpeechRequest, *, voice_map: Mapping[str, str | None] = DEFAULT_VOICE_MAP) -> dict[str, Any]:
    """The protocol v1 body (``POST /v1/tts/stream``) that asks for the same speech.

    ``voice_map`` rewrites voice names (``None``: the engine's default voice);
    names it does not list pass through unchanged.
    """
    voice = request.voice_name
    if voice is not None and voice in voice_map:
        voice = voice_map[voice]
    body: dict[str, Any] = {**request.extra_params, "text": request.input, "voice": voice}
    if request.speed != 1.0:
        body["speed"] = request.speed
    return body


def to_tts_request(request: SpeechRequest, *, voice_map: Mapping[str, str | None] = DEFAULT_VOICE_MAP) -> TTSRequest:
    """:func:`to_v1_body` as a validated :class:`~orpheus_tts.protocol.TTSRequest`.

    Raises :class:`SpeechRequestError` when an extra key breaks v1's rules
    (e.g. a non-numeric ``timeout_s``).
    """
    try:
        return parse_request(to_v1_body(request, voice_map=voice_map), max_text_chars=len(request.input))
    except ServiceError as exc:
        raise SpeechRequestError(exc.message, None, exc.code) from exc


# --------------------------------------------------------------------------- responses


def pcm_from_frames(frames: AsyncIterator[Frame]) -> AsyncIterator[bytes]:
    """The PCM of a v1 frame stream, for :func:`speech_stream`.

    Chunks are yielded in order and metrics frames skipped; an ``error`` frame
    raises its :class:`~orpheus_tts.protocol.ServiceError`, and a stream that
    ends without ``eos`` raises ``worker_lost``. Closing the result closes
    ``frames``, even if it was never iterated.
    """
    return _Closing(_pcm_from_frames(frames), frames)


async def _pcm_from_frames(frames: AsyncIterator[Frame]) -> AsyncGenerator[bytes, None]:
    try:
        async for frame in frames:
            if isinstance(frame, ChunkFrame):
                yield frame.pcm
            elif isinstance(frame, EosFrame):
                return
            elif isinstance(frame, ErrorFrame):
                raise ServiceError(ErrorCode.parse(frame.code), frame.message, retryable=frame.retryable)
        raise ServiceError(ErrorCode.WORKER_LOST, "the stream ended without eos")
    finally:
        await _aclose(frames)


class _Closing(Generic[_T]):
    """An async iterator whose ``aclose()`` also closes the iterator it reads from.

    An async generator that never started does not run its ``finally`` when
    closed, so a response body that is closed before its first piece (the
    client left while the headers were being sent) would otherwise leave the
    upstream stream open.
    """

    def __init__(self, inner: AsyncGenerator[_T, None], source: AsyncIterator[Any]) -> None:
        self._inner = inner
        self._source = source

    def __aiter__(self) -> _Closing[_T]:
        return self

    async def __anext__(self) -> _T:
        return await self._inner.__anext__()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            await _aclose(self._source)


def speech_stream(request: SpeechRequest, pcm: AsyncIterator[bytes]) -> PreparedStream:
    """The response for ``request`` over ``pcm``: encoded audio, or SSE events.

    ``pcm`` yields s16le 24 kHz mono chunks and raises a
    :class:`~orpheus_tts.protocol.ServiceError` if synthesis fails midway; it is
    closed when the response ends, however it ends.
    """
    fmt = request.response_format
    if request.stream_format == "sse":
        body = speech_sse_stream(pcm, fmt, input_chars=len(request.input))
        return PreparedStream(body=body, media_type=SSE_MEDIA_TYPE)
    return PreparedStream(body=encode_audio_stream(pcm, fmt), media_type=media_type(fmt))


def encode_audio_stream(pcm: AsyncIterator[bytes], fmt: str) -> AsyncIterator[bytes]:
    """``pcm`` encoded as ``fmt``, each piece as soon as the encoder emits it.

    If ``pcm`` raises, so does this, without the encoder's tail: the HTTP
    response is then cut short, so a client never takes a truncated file for a
    whole one. Closing the result closes ``pcm``.
    """
    return _Closing(_encoded(pcm, fmt), pcm)


async def _encoded(pcm: AsyncIterator[bytes], fmt: str) -> AsyncGenerator[bytes, None]:
    encoder = create_encoder(fmt)
    finished = False
    try:
        async for chunk in pcm:
            data = encoder.encode(chunk)
            if data:
                yield data
        finished = True
        tail = encoder.finish()
        if tail:
            yield tail
    finally:
        if not finished:
            encoder.close()
        await _aclose(pcm)


def speech_sse_stream(pcm: AsyncIterator[bytes], fmt: str, *, input_chars: int) -> AsyncIterator[bytes]:
    """Server-sent events: ``speech.audio.delta`` per encoded piece, then ``speech.audio.done``.

    Each delta's ``audio`` is base64 of the next bytes of a ``fmt`` file. If
    ``pcm`` fails midway, the last event is ``{"type": "error", "error":
    {...}}`` (OpenAI's error object) and no ``speech.audio.done`` is sent.
    Closing the result closes ``pcm``.
    """
    return _Closing(_sse_events(pcm, fmt, input_chars), pcm)


async def _sse_events(pcm: AsyncIterator[bytes], fmt: str, input_chars: int) -> AsyncGenerator[bytes, None]:
    encoder = create_encoder(fmt)
    samples = 0
    finished = False
    try:
        try:
            async for chunk in pcm:
                samples += len(chunk) // SAMPLE_WIDTH_BYTES
                data = encoder.encode(chunk)
                if data:
                    yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")})
            finished = True
            tail = encoder.finish()
        except ServiceError as exc:
            yield _sse({"type": "error", **openai_error_body(exc)})
            return
        except Exception:
            logger.exception("speech stream failed")
            yield _sse({"type": "error", **openai_error_body(ServiceError(ErrorCode.INTERNAL, "internal error"))})
            return
        if tail:
            yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(tail).decode("ascii")})
        yield _sse({"type": "speech.audio.done", "usage": _usage(input_chars, samples)})
    finally:
        if not finished:
            encoder.close()
        await _aclose(pcm)


def _usage(input_chars: int, samples: int) -> dict[str, Any]:
    # OpenAI's usage counts billing tokens, which no engine here has; the
    # token fields say what we do count (input characters), and two extra
    # fields carry the real figures.
    return {
        "input_tokens": input_chars,
        "output_tokens": 0,
        "total_tokens": input_chars,
        "input_characters": input_chars,
        "audio_seconds": round(samples / SAMPLE_RATE_HZ, 3),
    }


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event, separators=(",", ":")).encode("utf-8") + b"\n\n"


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


# --------------------------------------------------------------------------- errors

_ERROR_TYPES = {401: "authentication_error", 429: "rate_limit_error"}
# Errors a worker answers with that can only be about one field of the OpenAI request.
_PARAM_OF_CODE = {ErrorCode.UNKNOWN_VOICE: "voice", ErrorCode.TEXT_TOO_LONG: "input"}


def openai_error_body(error: ServiceError, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error JSON for ``error``: ``{"error": {"message", "type", "param", "code"}}``.

    ``code`` is our protocol's error code; ``type`` follows OpenAI's classes
    (``invalid_request_error``, ``authentication_error``, ``rate_limit_error``,
    ``server_error``).
    """
    status = error.http_status
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    if param is None:
        param = getattr(error, "param", None) or _PARAM_OF_CODE.get(error.code)
    return {"error": {"message": error.message, "type": kind, "param": param, "code": error.code.value}}


def openai_error_response(error: ServiceError, extra_headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A JSON error response in OpenAI's shape, with ``Retry-After`` and, for 401, ``WWW-Authenticate``."""
    headers = {**error.headers(), **(extra_headers or {})}
    if error.http_status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(openai_error_body(error), status_code=error.http_status, headers=headers)

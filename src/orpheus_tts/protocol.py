"""Wire protocol v1: the one contract between the SDK, the gateway and workers.

Requests are one JSON object (:class:`TTSRequest`); a successful response is
newline-delimited JSON, one frame per line (:class:`ChunkFrame`,
:class:`MetricsFrame`, :class:`EosFrame`, :class:`ErrorFrame`). Errors before
streaming starts are plain HTTP with the body produced by :func:`error_body`.
See ``docs/protocol.md`` for the full contract.

This module is pure data: no HTTP framework, no engine, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeGuard

from orpheus_tts.validation import (
    DEFAULT_MAX_JSON_DEPTH,
    BodyValueError,
    check_body_values,
    check_speakable,
    decode_json_body,
)

__all__ = [
    "AUDIO_FORMAT",
    "CHANNELS",
    "DEFAULT_MAX_LINE_BYTES",
    "NDJSON_MEDIA_TYPE",
    "SAMPLE_RATE_HZ",
    "SAMPLE_WIDTH_BYTES",
    "ChunkFrame",
    "ChunkLine",
    "EosFrame",
    "ErrorCode",
    "ErrorFrame",
    "Frame",
    "FrameDecoder",
    "MetricsFrame",
    "ProtocolError",
    "RequestError",
    "ServiceError",
    "StreamTracker",
    "TTSRequest",
    "WordsFrame",
    "chunk_line",
    "encode_frame",
    "error_body",
    "parse_request",
]

SAMPLE_RATE_HZ = 24_000
SAMPLE_WIDTH_BYTES = 2
CHANNELS = 1
AUDIO_FORMAT = f"pcm_s16le;rate={SAMPLE_RATE_HZ};channels={CHANNELS}"
NDJSON_MEDIA_TYPE = "application/x-ndjson"

HEADER_REQUEST_ID = "X-Request-Id"
HEADER_AUDIO_FORMAT = "X-Audio-Format"
HEADER_QUEUE_DEPTH = "X-Queue-Depth"
HEADER_INFLIGHT = "X-Inflight"

DEFAULT_MAX_LINE_BYTES = 4 * 1024 * 1024
"""Longest NDJSON line a reader accepts; a longer one is a broken stream."""

RESERVED_REQUEST_KEYS = frozenset({"text", "voice", "timeout_s", "timestamps", "playback_lead_s"})


class ErrorCode(str, Enum):
    """Every error code of protocol v1, with its HTTP status and retryability."""

    INVALID_REQUEST = "invalid_request"
    UNAUTHORIZED = "unauthorized"
    UNKNOWN_VOICE = "unknown_voice"
    TEXT_TOO_LONG = "text_too_long"
    BODY_TOO_LARGE = "body_too_large"
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    NO_WORKERS = "no_workers"
    QUOTA_STORE_UNAVAILABLE = "quota_store_unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    ENGINE_ERROR = "engine_error"
    WORKER_LOST = "worker_lost"
    CANCELLED = "cancelled"
    INTERNAL = "internal"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    HEADERS_TOO_LARGE = "headers_too_large"
    REQUEST_TIMEOUT = "request_timeout"

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self]

    @property
    def retryable(self) -> bool:
        return self in _RETRYABLE

    @property
    def request_caused(self) -> bool:
        """Whether the request itself is at fault (every 4xx code): such an error never counts
        against the server that answered it, and the same request is never tried elsewhere."""
        return 400 <= self.http_status < 500 and self is not ErrorCode.CANCELLED

    @classmethod
    def parse(cls, value: object) -> ErrorCode:
        """The code named by ``value``; unknown codes map to ``INTERNAL``."""
        try:
            return cls(value)
        except ValueError:
            return cls.INTERNAL


_HTTP_STATUS = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.UNKNOWN_VOICE: 404,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.HEADERS_TOO_LARGE: 431,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.TEXT_TOO_LONG: 413,
    ErrorCode.BODY_TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.NO_WORKERS: 503,
    ErrorCode.QUOTA_STORE_UNAVAILABLE: 503,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.ENGINE_ERROR: 500,
    ErrorCode.WORKER_LOST: 502,
    ErrorCode.CANCELLED: 499,
    ErrorCode.INTERNAL: 500,
}

_RETRYABLE = frozenset(
    {
        ErrorCode.RATE_LIMITED,
        ErrorCode.OVERLOADED,
        ErrorCode.NO_WORKERS,
        ErrorCode.QUOTA_STORE_UNAVAILABLE,
        ErrorCode.WORKER_LOST,
    }
)


class ServiceError(Exception):
    """An error a server answers with: a code, a message, and an optional ``Retry-After``."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        retry_after_s: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.retryable = code.retryable if retryable is None else retryable

    @property
    def http_status(self) -> int:
        return self.code.http_status

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.retryable)

    def frame(self) -> ErrorFrame:
        return ErrorFrame(code=self.code.value, message=self.message, retryable=self.retryable)


class RequestError(ServiceError):
    """A request that is malformed: always ``invalid_request`` unless said otherwise."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.INVALID_REQUEST) -> None:
        super().__init__(code, message)


class ProtocolError(Exception):
    """A peer broke protocol v1: malformed NDJSON, a seq gap, a stream without an end."""


def error_body(code: ErrorCode | str, message: str, retryable: bool | None = None) -> dict[str, Any]:
    """The JSON body of an HTTP error response."""
    parsed = ErrorCode.parse(code) if not isinstance(code, ErrorCode) else code
    code_str = code.value if isinstance(code, ErrorCode) else str(code)
    if retryable is None:
        retryable = parsed.retryable
    return {"error": {"code": code_str, "message": message, "retryable": retryable}}


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class TTSRequest:
    """A validated ``POST /v1/tts/stream`` body."""

    text: str
    """What to say; never empty or whitespace-only."""
    voice: str | None = None
    """Voice preset or id; ``None`` means the engine's default."""
    timeout_s: float | None = None
    """Requested deadline in seconds; the server caps it."""
    params: dict[str, Any] = field(default_factory=dict)
    """Generation parameters, passed to the engine and validated there."""
    timestamps: bool = False
    """Whether to add ``words`` frames (word timings) where the engine can tell them."""
    playback_lead_s: float = 0.0
    """Seconds of audio the listener still has to play before this stream's audio (0: it waits now).

    A realtime session sends its later segments with it, so a worker schedules
    them by when they will be heard rather than as newcomers."""

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"text": self.text, "voice": self.voice}
        if self.timeout_s is not None:
            body["timeout_s"] = self.timeout_s
        if self.timestamps:
            body["timestamps"] = True
        if self.playback_lead_s:
            body["playback_lead_s"] = self.playback_lead_s
        body.update(self.params)
        return body


def parse_request(
    raw: bytes | str | Any, *, max_text_chars: int, max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
) -> TTSRequest:
    """Validate a request body (bytes, text or already-decoded JSON).

    Raises :class:`RequestError` with the protocol's code for every defect,
    including the values no engine can take (:mod:`orpheus_tts.validation`):
    nesting deeper than ``max_json_depth``, non-finite numbers, unpaired
    surrogates, and control characters or noncharacters in ``text``.
    """
    try:
        if isinstance(raw, (bytes, bytearray, str)):
            data = decode_json_body(raw, max_json_depth)
        else:
            data = raw
            check_body_values(data, max_json_depth)
    except BodyValueError as exc:
        raise RequestError(exc.message) from exc
    if not isinstance(data, dict):
        raise RequestError(f"body must be a JSON object, got {_json_type(data)}")
    text = data.get("text")
    if "text" not in data:
        raise RequestError("missing required field 'text'")
    if not isinstance(text, str):
        raise RequestError(f"'text' must be a string, got {_json_type(text)}")
    if not text.strip():
        raise RequestError("'text' is empty or only whitespace")
    if len(text) > max_text_chars:
        raise RequestError(
            f"'text' has {len(text)} characters; the limit is {max_text_chars}",
            ErrorCode.TEXT_TOO_LONG,
        )
    try:
        check_speakable(text, "text")
    except BodyValueError as exc:
        raise RequestError(exc.message) from exc
    voice = data.get("voice")
    if voice is not None and not isinstance(voice, str):
        raise RequestError(f"'voice' must be a string or null, got {_json_type(voice)}")
    if isinstance(voice, str) and not voice.strip():
        voice = None
    timeout = data.get("timeout_s")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise RequestError(f"'timeout_s' must be a number, got {_json_type(timeout)}")
        if not math.isfinite(timeout) or timeout <= 0:
            raise RequestError(f"'timeout_s' must be a positive number, got {timeout}")
        timeout = float(timeout)
    timestamps = data.get("timestamps", False)
    if timestamps is None:
        timestamps = False
    if not isinstance(timestamps, bool):
        raise RequestError(f"'timestamps' must be a boolean, got {_json_type(timestamps)}")
    lead = data.get("playback_lead_s", 0.0)
    if lead is None:
        lead = 0.0
    if isinstance(lead, bool) or not isinstance(lead, (int, float)):
        raise RequestError(f"'playback_lead_s' must be a number, got {_json_type(lead)}")
    if not math.isfinite(lead) or lead < 0:
        raise RequestError(f"'playback_lead_s' must be a number of seconds >= 0, got {lead}")
    params = {k: v for k, v in data.items() if k not in RESERVED_REQUEST_KEYS}
    return TTSRequest(
        text=text, voice=voice, timeout_s=timeout, params=params, timestamps=timestamps, playback_lead_s=float(lead)
    )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# --------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class ChunkFrame:
    """The next piece of audio: ``samples`` int16 samples in ``pcm``."""

    seq: int
    """Position in the stream, from 0, without gaps."""
    pcm: bytes
    """Raw PCM, s16le mono 24 kHz; even length."""

    @property
    def samples(self) -> int:
        return len(self.pcm) // SAMPLE_WIDTH_BYTES


def _line_field() -> Any:
    """``line``: the NDJSON line a decoded frame came in (:func:`decode_frame` with ``keep_line``), relayed
    as is. A new field for each class: ``dataclass`` writes its name and kind on the field object itself."""
    return field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class MetricsFrame:
    """Timing and load facts (``queue_ms``, ``ttfb_ms``, ``rtf``, ``queue_depth``…)."""

    values: dict[str, Any]
    line: bytes | None = _line_field()


@dataclass(frozen=True)
class EosFrame:
    """The stream is complete."""

    samples_total: int
    chunks_total: int
    line: bytes | None = _line_field()


@dataclass(frozen=True)
class ErrorFrame:
    """The stream failed; nothing follows."""

    code: str
    message: str
    retryable: bool = False
    line: bytes | None = _line_field()


@dataclass(frozen=True)
class WordsFrame:
    """Word timings: each ``{"word", "start_s", "end_s"}``, seconds from the stream's first sample."""

    words: tuple[dict[str, Any], ...]
    line: bytes | None = _line_field()


class ChunkLine(ChunkFrame):
    """A chunk frame kept as the NDJSON line it arrived in: relayed as those bytes, audio decoded on demand.

    Built only by :class:`FrameDecoder` (``keep_lines=True``) from a line whose
    shape, ``seq``, ``samples`` and base64 alphabet and length were checked, so
    decoding :attr:`pcm` later cannot fail; a proxy that only passes chunks on
    never decodes them.
    """

    def __init__(self, seq: int, samples: int, line: bytes) -> None:
        object.__setattr__(self, "seq", seq)
        object.__setattr__(self, "line", line)
        object.__setattr__(self, "_samples", samples)

    line: bytes
    """The frame's NDJSON line, with its trailing newline."""
    _samples: int

    @property
    def samples(self) -> int:
        return self._samples

    def __getattr__(self, name: str) -> Any:
        # Only for attributes not set yet: the audio, decoded (and kept) on first use.
        if name != "pcm":
            raise AttributeError(name)
        start = self.line.index(_AUDIO_KEY) + len(_AUDIO_KEY)
        pcm = base64.b64decode(self.line[start : self.line.rindex(b'"')])
        object.__setattr__(self, "pcm", pcm)
        return pcm

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ChunkFrame):
            return self.seq == other.seq and self.pcm == other.pcm
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.seq, self.pcm))

    def __repr__(self) -> str:
        return f"ChunkLine(seq={self.seq}, samples={self.samples}, line={len(self.line)} bytes)"


Frame = ChunkFrame | MetricsFrame | EosFrame | ErrorFrame | WordsFrame

_CHUNK_PREFIX = b'{"type":"chunk","seq":'
_SAMPLES_KEY = b',"samples":'
_AUDIO_KEY = b',"audio":"'
_LINE_END = b'"}'
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _is_json_int(text: bytes) -> bool:
    return text.isdigit() and (len(text) == 1 or text[0] != 0x30)  # JSON allows no leading zero


def chunk_line(line: bytes) -> ChunkLine | None:
    """The chunk in ``line`` (stripped, no newline) without decoding its audio, if it has the canonical shape.

    The shape is what :func:`encode_frame` writes: ``type``, ``seq``,
    ``samples``, ``audio``, in that order, nothing else. ``None`` for any
    other line (which the caller decodes in full); raises
    :class:`ProtocolError` for a canonical chunk whose audio is not valid
    base64 of exactly ``samples`` samples.
    """
    if not line.startswith(_CHUNK_PREFIX) or not line.endswith(_LINE_END):
        return None
    seq_end = line.find(_SAMPLES_KEY, len(_CHUNK_PREFIX))
    samples_end = line.find(_AUDIO_KEY, seq_end + 1) if seq_end > 0 else -1
    if samples_end < 0:
        return None
    seq_text, samples_text = line[len(_CHUNK_PREFIX) : seq_end], line[seq_end + len(_SAMPLES_KEY) : samples_end]
    if not (_is_json_int(seq_text) and _is_json_int(samples_text)):
        return None
    seq, samples = int(seq_text), int(samples_text)
    audio = line[samples_end + len(_AUDIO_KEY) : -len(_LINE_END)]
    body = audio.rstrip(b"=")
    if (
        len(audio) % 4
        or len(audio) - len(body) > 2
        or body.translate(None, _B64_ALPHABET)
        or (len(audio) // 4) * 3 - (len(audio) - len(body)) != samples * SAMPLE_WIDTH_BYTES
    ):
        raise ProtocolError(f"chunk {seq} audio is not base64 of {samples} samples")
    return ChunkLine(seq, samples, line + b"\n")


def encode_frame(frame: Frame) -> bytes:
    """One NDJSON line (with its trailing newline) for ``frame``."""
    if isinstance(frame, ChunkLine):
        return frame.line  # relayed as it arrived
    if isinstance(frame, ChunkFrame):
        # Hot path: base64 output needs no JSON escaping, so build the line directly.
        audio = base64.b64encode(frame.pcm).decode("ascii")
        return (f'{{"type":"chunk","seq":{frame.seq},"samples":{frame.samples},"audio":"{audio}"}}\n').encode("ascii")
    if frame.line is not None:
        return frame.line  # relayed as it arrived (decoded with ``keep_line``)
    obj: dict[str, Any]
    if isinstance(frame, MetricsFrame):
        obj = {"type": "metrics", **frame.values}
    elif isinstance(frame, WordsFrame):
        obj = {"type": "words", "words": list(frame.words)}
    elif isinstance(frame, EosFrame):
        obj = {
            "type": "eos",
            "samples_total": frame.samples_total,
            "chunks_total": frame.chunks_total,
        }
    else:
        obj = {
            "type": "error",
            "code": frame.code,
            "message": frame.message,
            "retryable": frame.retryable,
        }
    return (json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


_FRAME_JSON = json.JSONDecoder(parse_constant=_not_json)
"""Strict JSON: ``NaN`` and ``Infinity`` (which Python's ``json`` accepts by default) are refused."""


def decode_frame(line: bytes | str, *, keep_line: bool = False) -> Frame | None:
    """Decode one NDJSON line (UTF-8, strict JSON). Unknown frame types give ``None``; malformed ones raise.

    With ``keep_line`` (for a ``bytes`` line without its newline), a metrics,
    words, eos or error frame keeps the checked line as :attr:`line` (newline
    added), and :func:`encode_frame` gives those bytes back: a proxy relays it
    without encoding it again.
    """
    try:
        obj = _FRAME_JSON.decode(line if isinstance(line, str) else line.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError included
        raise ProtocolError(f"malformed NDJSON line: {exc}") from exc
    kept = bytes(line) + b"\n" if keep_line and not isinstance(line, str) else None
    if not isinstance(obj, dict):
        raise ProtocolError("NDJSON line is not a JSON object")
    kind = obj.get("type")
    if kind == "chunk":
        seq, audio = obj.get("seq"), obj.get("audio")
        if not _is_int(seq) or not isinstance(audio, str):
            raise ProtocolError("chunk frame needs integer 'seq' and string 'audio'")
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(f"chunk {seq} audio is not base64: {exc}") from exc
        if len(pcm) % SAMPLE_WIDTH_BYTES:
            raise ProtocolError(f"chunk {seq} has an odd byte length {len(pcm)}")
        declared = obj.get("samples")
        if declared is not None and declared != len(pcm) // SAMPLE_WIDTH_BYTES:
            raise ProtocolError(f"chunk {seq} declares {declared} samples, carries {len(pcm) // 2}")
        return ChunkFrame(seq=seq, pcm=pcm)
    if kind == "metrics":
        return MetricsFrame({k: v for k, v in obj.items() if k != "type"}, kept)
    if kind == "eos":
        samples_total, chunks_total = obj.get("samples_total"), obj.get("chunks_total")
        if not _is_int(samples_total) or not _is_int(chunks_total):
            raise ProtocolError("eos frame needs integer 'samples_total' and 'chunks_total'")
        return EosFrame(samples_total=samples_total, chunks_total=chunks_total, line=kept)
    if kind == "words":
        return WordsFrame(_words(obj.get("words")), kept)
    if kind == "error":
        code, message = obj.get("code"), obj.get("message", "")
        if not isinstance(code, str):
            raise ProtocolError("error frame needs a string 'code'")
        return ErrorFrame(code=code, message=str(message), retryable=bool(obj.get("retryable")), line=kept)
    return None


def _words(raw: object) -> tuple[dict[str, Any], ...]:
    if not isinstance(raw, list):
        raise ProtocolError("words frame needs a list 'words'")
    out: list[dict[str, Any]] = []
    for item in raw:
        if not isinstance(item, dict):
            raise ProtocolError("each word timing must be an object")
        word, start, end = item.get("word"), item.get("start_s"), item.get("end_s")
        if not isinstance(word, str) or not _is_seconds(start) or not _is_seconds(end):
            raise ProtocolError("a word timing needs a string 'word' and numbers 'start_s' and 'end_s'")
        out.append({"word": word, "start_s": float(start), "end_s": float(end)})
    return tuple(out)


def _is_seconds(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class FrameDecoder:
    """Incremental NDJSON decoder: feed it bytes split anywhere, get whole frames.

    Tolerates ``\\r\\n`` and blank lines and skips unknown frame types. A line
    longer than ``max_line_bytes`` or malformed JSON raises :class:`ProtocolError`.
    With ``keep_lines`` (for a proxy), every frame keeps the line it came in, to
    be relayed as those bytes: a chunk in the canonical shape becomes a
    :class:`ChunkLine` (checked, its audio not decoded: see :func:`chunk_line`),
    any other frame is decoded, checked and keeps its :attr:`line`.
    """

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, *, keep_lines: bool = False) -> None:
        self._buffer = bytearray()
        self._max_line_bytes = max_line_bytes
        self._keep_lines = keep_lines

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        self._buffer += data
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end < 0:
                break
            self._decode_line(self._buffer[start:end], frames)
            start = end + 1
        if start:
            del self._buffer[:start]
        if len(self._buffer) > self._max_line_bytes:
            raise ProtocolError(f"NDJSON line longer than {self._max_line_bytes} bytes")
        return frames

    def close(self) -> list[Frame]:
        """Decode a final line that had no trailing newline."""
        frames: list[Frame] = []
        rest = bytes(self._buffer)
        self._buffer.clear()
        self._decode_line(rest, frames)
        return frames

    def _decode_line(self, line: bytes | bytearray, out: list[Frame]) -> None:
        if len(line) > self._max_line_bytes:
            raise ProtocolError(f"NDJSON line longer than {self._max_line_bytes} bytes")
        stripped = bytes(line).strip()
        if not stripped:
            return
        frame: Frame | None = chunk_line(stripped) if self._keep_lines else None
        if frame is None:
            frame = decode_frame(stripped, keep_line=self._keep_lines)
        if frame is not None:
            out.append(frame)


class StreamTracker:
    """Checks a frame sequence against the v1 rules as it goes.

    ``observe`` raises :class:`ProtocolError` on a seq gap, a frame after the
    end, or an ``eos`` whose totals disagree with what was received.
    """

    def __init__(self) -> None:
        self.chunks = 0
        self.samples = 0
        self.ended: EosFrame | ErrorFrame | None = None

    @property
    def complete(self) -> bool:
        return isinstance(self.ended, EosFrame)

    def observe(self, frame: Frame) -> None:
        if self.ended is not None:
            raise ProtocolError("frame received after the end of the stream")
        if isinstance(frame, ChunkFrame):
            if frame.seq != self.chunks:
                raise ProtocolError(f"chunk seq {frame.seq} where {self.chunks} was expected")
            self.chunks += 1
            self.samples += frame.samples
        elif isinstance(frame, EosFrame):
            if frame.chunks_total != self.chunks or frame.samples_total != self.samples:
                raise ProtocolError(
                    f"eos declares {frame.chunks_total} chunks / {frame.samples_total} samples, "
                    f"received {self.chunks} / {self.samples}"
                )
            self.ended = frame
        elif isinstance(frame, ErrorFrame):
            self.ended = frame

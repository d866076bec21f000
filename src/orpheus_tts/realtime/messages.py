"""Realtime wire messages: what a client may send (parsed strictly) and what the server sends.

Every client message is a JSON object with a ``type``; unknown fields are
ignored. :func:`parse_client_message` raises :class:`MessageError` (with the
protocol's code and, when it can tell, the context) for every defect.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from orpheus_tts.protocol import ErrorCode

__all__ = [
    "Auth",
    "Cancel",
    "ClientMessage",
    "End",
    "Flush",
    "MessageError",
    "Start",
    "Text",
    "audio_message",
    "error_message",
    "parse_client_message",
]

MAX_CONTEXT_ID_CHARS = 128


class MessageError(Exception):
    """A client message that cannot be acted on."""

    def __init__(self, code: ErrorCode, message: str, context_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.context_id = context_id


@dataclass(frozen=True)
class Auth:
    api_key: str


@dataclass(frozen=True)
class Start:
    context_id: str
    voice: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    output_format: object = None
    """As sent; checked when the context opens."""
    timestamps: bool = False


@dataclass(frozen=True)
class Text:
    context_id: str
    text: str


@dataclass(frozen=True)
class Flush:
    context_id: str


@dataclass(frozen=True)
class End:
    context_id: str


@dataclass(frozen=True)
class Cancel:
    context_id: str


ClientMessage = Auth | Start | Text | Flush | End | Cancel
_BY_TYPE: dict[str, type[ClientMessage]] = {
    "start": Start,
    "text": Text,
    "flush": Flush,
    "end": End,
    "cancel": Cancel,
}


def parse_client_message(raw: str) -> ClientMessage:
    """The message in the JSON text ``raw``; see the module docstring."""
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise MessageError(ErrorCode.INVALID_REQUEST, f"message is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MessageError(ErrorCode.INVALID_REQUEST, "message must be a JSON object")
    kind = data.get("type")
    if kind == "auth":
        key = data.get("api_key")
        if not isinstance(key, str):
            raise MessageError(ErrorCode.UNAUTHORIZED, "'api_key' must be a string")
        return Auth(key)
    if kind not in _BY_TYPE:
        raise MessageError(ErrorCode.INVALID_REQUEST, f"unknown message type {kind!r}", _context_or_none(data))
    context_id = data.get("context_id")
    if not isinstance(context_id, str) or not context_id or len(context_id) > MAX_CONTEXT_ID_CHARS:
        raise MessageError(
            ErrorCode.INVALID_REQUEST,
            f"'{kind}' needs a 'context_id': a non-empty string of at most {MAX_CONTEXT_ID_CHARS} characters",
        )
    if kind == "text":
        text = data.get("text")
        if not isinstance(text, str):
            raise MessageError(ErrorCode.INVALID_REQUEST, "'text' must be a string", context_id)
        if "\x00" in text:
            raise MessageError(ErrorCode.INVALID_REQUEST, "'text' must not contain NUL characters", context_id)
        return Text(context_id, text)
    if kind == "start":
        return _start(data, context_id)
    return _BY_TYPE[kind](context_id)  # type: ignore[call-arg]


def _start(data: dict[str, Any], context_id: str) -> Start:
    voice = data.get("voice")
    if voice is not None and not isinstance(voice, str):
        raise MessageError(ErrorCode.INVALID_REQUEST, "'voice' must be a string or null", context_id)
    params = data.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise MessageError(ErrorCode.INVALID_REQUEST, "'params' must be an object", context_id)
    timestamps = data.get("timestamps", False)
    if not isinstance(timestamps, bool):
        raise MessageError(ErrorCode.INVALID_REQUEST, "'timestamps' must be a boolean", context_id)
    return Start(
        context_id,
        voice=voice or None,
        params=dict(params),
        output_format=data.get("output_format"),
        timestamps=timestamps,
    )


def _context_or_none(data: dict[str, Any]) -> str | None:
    context_id = data.get("context_id")
    return context_id if isinstance(context_id, str) and len(context_id) <= MAX_CONTEXT_ID_CHARS else None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def audio_message(context_id: str, seq: int, data: bytes, samples: int) -> dict[str, Any]:
    return {
        "type": "audio",
        "context_id": context_id,
        "seq": seq,
        "samples": samples,
        "audio": base64.b64encode(data).decode("ascii"),
    }


def error_message(code: ErrorCode | str, message: str, context_id: str | None = None) -> dict[str, Any]:
    parsed = code if isinstance(code, ErrorCode) else ErrorCode.parse(code)
    out: dict[str, Any] = {
        "type": "error",
        "code": code.value if isinstance(code, ErrorCode) else code,
        "message": message,
        "retryable": parsed.retryable,
    }
    if context_id is not None:
        out["context_id"] = context_id
    return out

"""The client side of the realtime protocol (``GET /v1/tts/realtime``, JSON text frames), for the plugins.

One connection carries any number of contexts (one per utterance). The
plugins send ``start``, ``text``, ``flush``, ``end`` and ``cancel`` and read
``audio``, ``words``, ``flushed``, ``done``, ``cancelled`` and ``error``
(``docs/realtime.md``). Only what the plugins share lives here: URLs, the
connection handshake, and the message shapes.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection

from orpheus_tts.protocol import ErrorCode

__all__ = [
    "REALTIME_PATH",
    "SERVER_SAMPLE_RATES_HZ",
    "RealtimeError",
    "Word",
    "audio_of",
    "connect",
    "output_format",
    "realtime_url",
    "error_of",
    "send",
    "start_fields",
    "words_of",
]

REALTIME_PATH = "/v1/tts/realtime"
SERVER_SAMPLE_RATES_HZ = (24_000, 16_000, 8_000)
"""The ``pcm_RATE`` output formats the server produces itself (resampled there with soxr)."""
DEFAULT_OPEN_TIMEOUT_S = 10.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest server message the client accepts (an ``audio`` message holds one piece of audio)."""


class RealtimeError(Exception):
    """The server answered with an ``error`` message, or the socket failed; ``code`` is protocol v1's."""

    def __init__(self, code: str, message: str, *, retryable: bool, context_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.context_id = context_id

    @property
    def http_status(self) -> int:
        return ErrorCode.parse(self.code).http_status


@dataclass(frozen=True)
class Word:
    """One word's timing, relative to its context's first sample."""

    word: str
    start_s: float
    """When the word starts, in seconds."""
    end_s: float
    """When the word ends, in seconds."""


def realtime_url(base_url: str) -> str:
    """``http(s)://host[/prefix]`` (or ``ws(s)://``) as the realtime WebSocket URL."""
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"base URL must be http(s):// or ws(s)://, got {base_url!r}")
    path = parts.path if parts.path.endswith(REALTIME_PATH) else parts.path + REALTIME_PATH
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def output_format(sample_rate: int) -> str:
    """The ``output_format`` to ask for: the rate itself where the server makes it, else 24 kHz."""
    rate = sample_rate if sample_rate in SERVER_SAMPLE_RATES_HZ else SERVER_SAMPLE_RATES_HZ[0]
    return f"pcm_{rate}"


async def connect(
    url: str, api_key: str | None, *, open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S
) -> tuple[ClientConnection, dict[str, Any]]:
    """Open the socket and wait for ``ready``; returns the connection and the ``ready`` message.

    Raises :class:`RealtimeError`: ``unauthorized`` for a refused key,
    ``worker_lost`` (retryable) when the server cannot be reached.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    try:
        ws = await websockets.connect(
            url, additional_headers=headers, open_timeout=open_timeout_s, max_size=MAX_MESSAGE_BYTES
        )
    except websockets.InvalidStatus as exc:
        status = exc.response.status_code
        code = ErrorCode.UNAUTHORIZED if status == 401 else ErrorCode.WORKER_LOST
        raise RealtimeError(code.value, f"{url} refused the upgrade with {status}", retryable=status >= 500) from exc
    except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as exc:
        raise RealtimeError(ErrorCode.WORKER_LOST.value, f"cannot connect to {url}: {exc}", retryable=True) from exc
    try:
        ready = await asyncio.wait_for(_await_ready(ws), open_timeout_s)
    except RealtimeError:
        await ws.close()
        raise
    except (asyncio.TimeoutError, websockets.WebSocketException, ValueError) as exc:
        await ws.close()
        raise RealtimeError(ErrorCode.WORKER_LOST.value, f"{url} did not say ready: {exc}", retryable=True) from exc
    return ws, ready


async def _await_ready(ws: ClientConnection) -> dict[str, Any]:
    while True:
        message = json.loads(await ws.recv())
        if not isinstance(message, dict):
            continue
        if message.get("type") == "ready":
            return message
        if message.get("type") == "error":
            raise error_of(message)


async def send(ws: ClientConnection, message_type: str, context_id: str, **fields: Any) -> None:
    """Send one client message."""
    await ws.send(json.dumps({"type": message_type, "context_id": context_id, **fields}, separators=(",", ":")))


def start_fields(voice: str | None, params: Mapping[str, Any], sample_rate: int, timestamps: bool) -> dict[str, Any]:
    """The fields of a ``start`` message."""
    fields: dict[str, Any] = {"params": dict(params), "output_format": output_format(sample_rate)}
    if voice is not None:
        fields["voice"] = voice
    if timestamps:
        fields["timestamps"] = True
    return fields


def audio_of(message: Mapping[str, Any]) -> bytes:
    """The PCM of an ``audio`` message."""
    return base64.b64decode(message.get("audio", ""))


def words_of(message: Mapping[str, Any]) -> Sequence[Word]:
    """The word timings of a ``words`` message."""
    return [
        Word(str(w["word"]), float(w["start_s"]), float(w["end_s"]))
        for w in message.get("words", [])
        if isinstance(w, Mapping) and {"word", "start_s", "end_s"} <= w.keys()
    ]


def error_of(message: Mapping[str, Any]) -> RealtimeError:
    """The exception an ``error`` message stands for."""
    code = str(message.get("code", ErrorCode.INTERNAL.value))
    return RealtimeError(
        code,
        str(message.get("message", "")),
        retryable=bool(message.get("retryable", ErrorCode.parse(code).retryable)),
        context_id=message.get("context_id"),
    )

"""Realtime sessions in the SDK: ``tts.realtime(...)`` and ``tts.stream_text(...)`` over ``/v1/tts/realtime``.

One :class:`RealtimeSession` is one WebSocket (the ``websockets`` library) and
one context on it: text goes in with :meth:`~RealtimeSession.send` as an LLM
writes it, events come out as ``async for event in session``::

    async with tts.realtime(voice="tara", timestamps=True) as session:
        await session.send("Hello there, ")
        await session.send("how are you?")
        await session.end()
        async for event in session:
            ...  # Audio, Words, Flushed, Done

The endpoint is chosen at connect (the healthy one with the lowest load
score; one that cannot be reached is skipped, since nothing was sent yet).
Once connected, a broken socket raises
:class:`~orpheus_tts.sdk.exceptions.RemoteProtocolError`: audio is never
replayed. Server errors map onto the same exceptions as ``stream()``: a
refusal before any audio (bad key, unknown voice, bad parameter) is
:class:`~orpheus_tts.sdk.exceptions.HTTPStatusError` with the code's status,
a failure after audio is :class:`~orpheus_tts.sdk.exceptions.StreamError`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

import httpx

from orpheus_tts.protocol import ErrorCode, error_body
from orpheus_tts.routing import BreakerState, Router
from orpheus_tts.sdk.events import Audio, Cancelled, Done, Event, Flushed, Words, words_of
from orpheus_tts.sdk.exceptions import (
    CircuitOpenError,
    ConnectError,
    DeadlineExceeded,
    HTTPStatusError,
    InvalidRequestError,
    OrpheusError,
    RemoteProtocolError,
    StreamError,
)

__all__ = ["REALTIME_PATH", "RealtimeSession", "stream_text"]

REALTIME_PATH = "/v1/tts/realtime"
CONTEXT_ID = "ctx-0"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest server message the client accepts."""


class RealtimeSession:
    """One realtime context on its own socket; see the module docstring."""

    def __init__(
        self,
        router: Router,
        headers: Mapping[str, str],
        *,
        voice: str | None,
        output_format: str,
        timestamps: bool,
        params: dict[str, Any],
        open_timeout_s: float,
    ) -> None:
        self._router = router
        self._headers = dict(headers)
        self._start: dict[str, Any] = {
            "type": "start",
            "context_id": CONTEXT_ID,
            "voice": voice,
            "output_format": output_format,
            "timestamps": timestamps,
            "params": params,
        }
        self._open_timeout_s = open_timeout_s
        self._ws: Any = None
        self.endpoint: str | None = None
        """The base URL the session is connected to."""
        self.ready: dict[str, Any] = {}
        """The server's ``ready`` message: session id, formats, limits."""
        self._audio_seen = False
        self._finished = False

    async def __aenter__(self) -> RealtimeSession:
        await self._connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def send(self, text: str) -> None:
        """Append ``text`` (any piece: a token, a word, a sentence)."""
        if not isinstance(text, str):
            raise InvalidRequestError(f"text must be a string, got {type(text).__name__}")
        await self._send({"type": "text", "context_id": CONTEXT_ID, "text": text})

    async def flush(self) -> None:
        """Speak what was sent so far, even mid-sentence; a :class:`Flushed` event follows its audio."""
        await self._send({"type": "flush", "context_id": CONTEXT_ID})

    async def end(self) -> None:
        """No more text: the rest is spoken, then :class:`Done` ends the events."""
        await self._send({"type": "end", "context_id": CONTEXT_ID})

    async def cancel(self) -> None:
        """Barge-in: stop now; :class:`Cancelled` ends the events and no audio follows it."""
        await self._send({"type": "cancel", "context_id": CONTEXT_ID})

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def aclose(self) -> None:
        """Close the socket (the server stops the context's work)."""
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def _connect(self) -> None:
        import websockets

        candidates = _by_preference(self._router)
        if not candidates:
            raise CircuitOpenError("no endpoint is healthy", endpoints=tuple(e.url for e in self._router.endpoints))
        last: Exception | None = None
        for base in candidates:
            url = "ws" + base.removeprefix("http") + REALTIME_PATH
            try:
                self._ws = await websockets.connect(
                    url,
                    additional_headers=self._headers,
                    open_timeout=self._open_timeout_s,
                    max_size=MAX_MESSAGE_BYTES,
                )
            except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake) as exc:
                last = exc
                continue
            self.endpoint = base
            break
        if self._ws is None:
            raise ConnectError(f"no endpoint could be reached for realtime: {last}", endpoint=candidates[-1])
        message = await self._receive()
        if message.get("type") == "error":
            await self.aclose()
            raise self._error(message)
        if message.get("type") != "ready":
            await self.aclose()
            raise RemoteProtocolError(f"expected 'ready', got {message.get('type')!r}", endpoint=self.endpoint)
        self.ready = message
        await self._send(self._start)

    async def _send(self, message: dict[str, Any]) -> None:
        import websockets

        if self._ws is None:
            raise RemoteProtocolError("the realtime session is not connected", endpoint=self.endpoint)
        try:
            await self._ws.send(json.dumps(message))
        except websockets.ConnectionClosed as exc:
            raise RemoteProtocolError(f"the realtime socket closed: {exc}", endpoint=self.endpoint) from exc

    async def _receive(self) -> dict[str, Any]:
        import websockets

        try:
            raw = await self._ws.recv()
        except websockets.ConnectionClosed as exc:
            raise RemoteProtocolError(f"the realtime socket closed: {exc}", endpoint=self.endpoint) from exc
        try:
            message = json.loads(raw)
        except ValueError as exc:
            raise RemoteProtocolError(f"malformed realtime message: {exc}", endpoint=self.endpoint) from exc
        if not isinstance(message, dict):
            raise RemoteProtocolError("realtime message is not a JSON object", endpoint=self.endpoint)
        return message

    async def _events(self) -> AsyncIterator[Event]:
        while not self._finished:
            message = await self._receive()
            kind = message.get("type")
            if message.get("context_id") not in (CONTEXT_ID, None):
                continue
            if kind == "audio":
                self._audio_seen = True
                yield Audio(base64.b64decode(message["audio"]), int(message["samples"]), CONTEXT_ID)
            elif kind == "words":
                yield Words(words_of(message["words"]), CONTEXT_ID)
            elif kind == "flushed":
                yield Flushed(CONTEXT_ID)
            elif kind == "done":
                self._finished = True
                yield Done(CONTEXT_ID, int(message["samples_total"]))
            elif kind == "cancelled":
                self._finished = True
                yield Cancelled(CONTEXT_ID)
            elif kind == "error":
                self._finished = True
                raise self._error(message)

    def _error(self, message: dict[str, Any]) -> OrpheusError:
        code = str(message.get("code"))
        text = str(message.get("message", ""))
        parsed = ErrorCode.parse(code)
        if parsed is ErrorCode.DEADLINE_EXCEEDED:
            return DeadlineExceeded(f"the server's deadline passed: {text}", endpoint=self.endpoint)
        if self._audio_seen or parsed.http_status >= 500:
            return StreamError(code, text, retryable=bool(message.get("retryable")), endpoint=self.endpoint)
        base = self.endpoint or ""
        request = httpx.Request("GET", base + REALTIME_PATH)
        response = httpx.Response(parsed.http_status, json=error_body(code, text), request=request)
        return HTTPStatusError(
            f"{parsed.http_status} {code}: {text}",
            request=request,
            response=response,
            code=code,
            service_message=text,
            endpoint=self.endpoint,
        )


def _by_preference(router: Router) -> list[str]:
    """Base URLs of the endpoints a session may connect to, best first."""
    snapshots = [s for s in router.snapshots() if s.healthy and s.breaker is not BreakerState.OPEN]
    return [s.url for s in sorted(snapshots, key=lambda s: s.score)]


async def stream_text(session: RealtimeSession, texts: AsyncIterable[str]) -> AsyncIterator[bytes]:
    """Feed ``texts`` into ``session`` (then ``end``) while yielding its audio."""

    async def feed() -> None:
        async for text in texts:
            await session.send(text)
        await session.end()

    feeder = asyncio.get_running_loop().create_task(feed())
    try:
        async for event in session:
            if feeder.done() and feeder.exception() is not None:
                raise feeder.exception()  # type: ignore[misc]
            if isinstance(event, Audio):
                yield event.data
            elif isinstance(event, Done):
                break
        await feeder
    finally:
        if not feeder.done():
            feeder.cancel()
            with contextlib.suppress(BaseException):
                await feeder

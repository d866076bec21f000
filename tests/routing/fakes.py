"""A fake v1 upstream behind ``httpx.MockTransport``: per-host behaviours, hit counts."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import httpx

from orpheus_tts.protocol import (
    ChunkFrame,
    EosFrame,
    ErrorFrame,
    Frame,
    MetricsFrame,
    encode_frame,
    error_body,
)

Behaviour = Callable[[httpx.Request], Awaitable[httpx.Response]]

PIECES = [bytes([i]) * 480 for i in range(1, 5)]
"""Four 240-sample chunks, each distinct."""
AUDIO = b"".join(PIECES)


def frames_for(pieces: Sequence[bytes] = PIECES, **metrics: Any) -> list[Frame]:
    frames: list[Frame] = [MetricsFrame({"worker": "fake", **metrics})]
    frames += [ChunkFrame(seq=i, pcm=p) for i, p in enumerate(pieces)]
    frames.append(EosFrame(samples_total=sum(len(p) // 2 for p in pieces), chunks_total=len(pieces)))
    return frames


def body_of(frames: Sequence[Frame]) -> bytes:
    return b"".join(encode_frame(f) for f in frames)


async def _trickle(parts: Sequence[bytes], delay_s: float) -> AsyncIterator[bytes]:
    for part in parts:
        if delay_s:
            await asyncio.sleep(delay_s)
        yield part


def ok(
    frames: Sequence[Frame] | None = None,
    *,
    first_delay_s: float = 0.0,
    piece_delay_s: float = 0.0,
    headers: dict[str, str] | None = None,
    raw_tail: bytes = b"",
) -> Behaviour:
    """200 with a v1 body; optional delay before the headers and between frames."""
    frames = frames_for() if frames is None else frames

    async def behave(request: httpx.Request) -> httpx.Response:
        if first_delay_s:
            await asyncio.sleep(first_delay_s)
        parts = [encode_frame(f) for f in frames] + ([raw_tail] if raw_tail else [])
        return httpx.Response(
            200,
            headers={"content-type": "application/x-ndjson", **(headers or {})},
            content=_trickle(parts, piece_delay_s),
        )

    return behave


def status(code: int, error_code: str, message: str = "nope", headers: dict[str, str] | None = None) -> Behaviour:
    async def behave(request: httpx.Request) -> httpx.Response:
        return httpx.Response(code, json=error_body(error_code, message), headers=headers)

    return behave


def raw_status(code: int, text: str) -> Behaviour:
    async def behave(request: httpx.Request) -> httpx.Response:
        return httpx.Response(code, text=text)

    return behave


def refuse() -> Behaviour:
    async def behave(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    return behave


def error_frame(code: str, after: int = 2) -> Behaviour:
    frames = [*frames_for()[: 1 + after], ErrorFrame(code, "it broke", False)]
    return ok(frames)


class Upstreams:
    """A MockTransport serving each host with its own behaviour; counts hits and cancellations."""

    def __init__(self, behaviours: dict[str, Behaviour]) -> None:
        self.behaviours = behaviours
        self.hits: Counter[str] = Counter()
        self.cancelled: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._handle)

    @staticmethod
    def url(host: str) -> str:
        return f"http://{host}"

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.hits[host] += 1
        self.requests.append(request)
        if request.url.path == "/v1/tts/stream":
            self.bodies.append(json.loads(request.content))
        try:
            return await self.behaviours[host](request)
        except asyncio.CancelledError:
            self.cancelled[host] += 1
            raise

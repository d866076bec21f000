"""Read a v1 stream over real HTTP and check it against every rule of the protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from orpheus_tts.protocol import (
    AUDIO_FORMAT,
    NDJSON_MEDIA_TYPE,
    ChunkFrame,
    ErrorFrame,
    Frame,
    FrameDecoder,
    MetricsFrame,
    StreamTracker,
)


@dataclass
class StreamResult:
    status: int
    headers: httpx.Headers
    frames: list[Frame] = field(default_factory=list)
    error_json: dict[str, Any] | None = None

    @property
    def pcm(self) -> bytes:
        return b"".join(f.pcm for f in self.frames if isinstance(f, ChunkFrame))

    @property
    def error(self) -> ErrorFrame | None:
        last = self.frames[-1] if self.frames else None
        return last if isinstance(last, ErrorFrame) else None

    @property
    def metrics(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for f in self.frames:
            if isinstance(f, MetricsFrame):
                merged.update(f.values)
        return merged


async def stream_tts(
    url: str, body: dict[str, Any], headers: dict[str, str] | None = None, timeout_s: float = 60.0
) -> StreamResult:
    """POST ``body`` to ``url``/v1/tts/stream; on 200, validate the frames as they arrive."""
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        async with client.stream("POST", f"{url}/v1/tts/stream", json=body, headers=headers) as response:
            result = StreamResult(response.status_code, response.headers)
            if response.status_code != 200:
                await response.aread()
                result.error_json = response.json()
                return result
            assert response.headers["content-type"] == NDJSON_MEDIA_TYPE
            assert response.headers["x-audio-format"] == AUDIO_FORMAT
            assert "x-request-id" in response.headers
            decoder, tracker = FrameDecoder(), StreamTracker()
            async for data in response.aiter_raw():
                for frame in decoder.feed(data):
                    tracker.observe(frame)
                    result.frames.append(frame)
            for frame in decoder.close():
                tracker.observe(frame)
                result.frames.append(frame)
            assert tracker.ended is not None, "stream ended with neither eos nor error"
            return result

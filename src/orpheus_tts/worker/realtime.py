"""The worker's realtime backend: each segment is one stream of the worker's own synthesis service.

A segment goes through the same admission, deadline and framing as a v1
request (:meth:`SynthesisService.prepare`), so realtime and v1 traffic share
the engine's slots and queue, and a cancelled context releases its slot as a
closed v1 stream does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from orpheus_tts.protocol import ErrorCode, Frame, FrameDecoder, ServiceError, TTSRequest
from orpheus_tts.realtime.limits import RealtimeLimits
from orpheus_tts.realtime.messages import Start
from orpheus_tts.realtime.websocket import RealtimeBackend
from orpheus_tts.worker.service import SynthesisService

__all__ = ["worker_backend"]


def worker_backend(
    service: SynthesisService,
    limits: RealtimeLimits,
    ready: Callable[[], bool],
    allow_origins: tuple[str, ...] = (),
) -> RealtimeBackend:
    """The realtime backend of a worker whose engine is ready once ``ready()`` is true."""

    async def synthesize(request: TTSRequest) -> AsyncIterator[Frame]:
        if not ready():
            raise ServiceError(ErrorCode.OVERLOADED, "engine is not loaded yet", retry_after_s=1)
        prepared = await service.prepare(request)
        return _frames(prepared.body)

    def validate(start: Start) -> None:
        service.validate(TTSRequest(text="-", voice=start.voice, params=start.params, timestamps=start.timestamps))

    def for_identity(_identity: Any) -> Callable[[TTSRequest], Any]:
        return synthesize

    return RealtimeBackend(
        synthesize=for_identity,
        limits=limits,
        validate=validate,
        allow_origins=allow_origins,
        metrics=service.metrics,
    )


async def _frames(body: AsyncIterator[bytes]) -> AsyncIterator[Frame]:
    decoder = FrameDecoder()
    try:
        async for data in body:
            for frame in decoder.feed(data):
                yield frame
        for frame in decoder.close():
            yield frame
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()

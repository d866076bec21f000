"""The engine's pieces as :class:`TimedPiece`, with word timings when the request asks and the engine can tell."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from orpheus_tts.engines.base import Engine, TimedPiece, supports_timestamps
from orpheus_tts.protocol import TTSRequest

__all__ = ["timed_pieces"]


async def timed_pieces(
    engine: Engine, request: TTSRequest, voice: str, params: dict[str, Any]
) -> AsyncIterator[TimedPiece]:
    """``engine``'s audio for ``request``.

    Pieces carry words only when ``request.timestamps`` is set and the engine reports them.
    """
    if request.timestamps and supports_timestamps(engine):
        timed = engine.synthesize_timed(request.text, voice, params)  # type: ignore[attr-defined]
        try:
            async for piece in timed:
                yield piece
        finally:
            await timed.aclose()
        return
    pieces = engine.synthesize(request.text, voice, params)
    try:
        async for pcm in pieces:
            yield TimedPiece(pcm)
    finally:
        aclose = getattr(pieces, "aclose", None)
        if aclose is not None:
            await aclose()

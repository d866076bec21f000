"""The engine's pieces as :class:`TimedPiece`, with word timings when the request asks and the engine can tell."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

from orpheus_tts.engines.base import Engine, PieceEngine, TimedPiece, close_iterator, supports_timestamps
from orpheus_tts.protocol import TTSRequest

__all__ = ["timed_pieces"]


async def timed_pieces(
    engine: Engine, request: TTSRequest, voice: str, params: dict[str, Any]
) -> AsyncIterator[TimedPiece]:
    """``engine``'s audio for ``request``.

    Pieces carry words only when ``request.timestamps`` is set and the engine reports them, and
    are marked ``last`` where the engine can tell (:class:`~orpheus_tts.engines.base.PieceEngine`).
    """
    timed_asked = request.timestamps and supports_timestamps(engine)
    if callable(getattr(engine, "synthesize_pieces", None)):
        marked = cast(PieceEngine, engine).synthesize_pieces(request.text, voice, params, timed=timed_asked)
        try:
            async for piece in marked:
                yield piece
        finally:
            await close_iterator(marked)
        return
    if timed_asked:
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
        await close_iterator(pieces)

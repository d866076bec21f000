"""Tone engines that count what the server did: streams started, finished, and cut off."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from orpheus_tts.engines.testing import ToneEngine


class CountingToneEngine(ToneEngine):
    """The deterministic tone engine, optionally slow to start, counting its streams.

    ``cancelled`` counts streams that ended before their last piece: what the
    engine sees when the client went away.
    """

    def __init__(self, first_delay_s: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.first_delay_s = first_delay_s
        self.started = 0
        self.completed = 0
        self.cancelled = 0

    async def synthesize(self, text: str, voice: str, params: dict[str, Any]) -> AsyncIterator[bytes]:
        self.started += 1
        finished = False
        try:
            if self.first_delay_s:
                await asyncio.sleep(self.first_delay_s)
            async for piece in super().synthesize(text, voice, params):
                yield piece
            finished = True
        finally:
            if finished:
                self.completed += 1
            else:
                self.cancelled += 1

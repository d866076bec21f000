"""PreparedStreamResponse's ASGI messages: a body's marked last piece goes out with the end of the body."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from orpheus_tts.serving.streaming import FinalPiece, PreparedStream, PreparedStreamResponse


async def _run(pieces: list[bytes]) -> tuple[list[dict[str, Any]], list[str]]:
    asked: list[str] = []

    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            asked.append("next")
            yield piece
        asked.append("end")

    async def prepare() -> PreparedStream:
        return PreparedStream(body=body(), media_type="application/x-ndjson")

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def receive() -> Any:
        await never  # the client neither sends more nor goes away

    await PreparedStreamResponse(prepare)({"type": "http", "method": "POST"}, receive, send)
    return [m for m in sent if m["type"] == "http.response.body"], asked


async def test_a_final_piece_ends_the_body_in_the_same_message() -> None:
    bodies, asked = await _run([b"a\n", FinalPiece(b"eos\n")])
    assert [(m["body"], m["more_body"]) for m in bodies] == [(b"a\n", True), (b"eos\n", False)]
    assert asked == ["next", "next"], "the body is not asked for a piece after its final one"


async def test_an_unmarked_body_ends_with_an_empty_message() -> None:
    bodies, asked = await _run([b"a\n", b"eos\n"])
    assert [(m["body"], m["more_body"]) for m in bodies] == [(b"a\n", True), (b"eos\n", True), (b"", False)]
    assert asked == ["next", "next", "end"]

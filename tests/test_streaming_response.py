"""PreparedStreamResponse: a body's marked last piece goes out with the end of the body, and on uvicorn's
connection a response costs as few writes as its pieces allow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from orpheus_tts.serving.streaming import FinalPiece, PreparedStream, PreparedStreamResponse
from tests.eventually import eventually


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


# --------------------------------------------------------------------------- on uvicorn's connection


class RecordingTransport:
    """The kernel's side of a connection, as uvicorn's protocol sees it: each ``write`` is kept, so
    the test sees how many system calls (and wakeups of the client) a response costs."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name in ("peername", "sockname") else default

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _writes_on_uvicorn(pieces: list[bytes]) -> list[bytes]:
    """The writes uvicorn's httptools protocol makes for one POST answered by a PreparedStreamResponse
    whose body yields ``pieces``."""

    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    async def prepare() -> PreparedStream:
        return PreparedStream(body=body(), media_type="application/x-ndjson")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await PreparedStreamResponse(prepare)(scope, receive, send)

    config = uvicorn.Config(app=app, lifespan="off", proxy_headers=False, log_config=None, access_log=False)
    config.load()
    protocol = HttpToolsProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(b"POST /stream HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n\r\n")
    assert await eventually(lambda: any(w.endswith(b"0\r\n\r\n") for w in transport.writes))
    protocol.connection_lost(None)
    return transport.writes


async def test_a_whole_body_marked_final_leaves_in_one_write_with_the_head() -> None:
    """A stream that reached the gateway in one read (a short sentence, a fast worker): head, the
    piece and the body's end go out in one write, as nginx sends what it read."""
    writes = await _writes_on_uvicorn([FinalPiece(b'{"type":"eos"}\n')])
    assert len(writes) == 1, writes
    head, _, body = writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"transfer-encoding: chunked" in head
    assert body == b'f\r\n{"type":"eos"}\n\r\n0\r\n\r\n'


async def test_the_head_leaves_with_the_first_piece_and_the_last_with_the_end() -> None:
    writes = await _writes_on_uvicorn([b"a\n", FinalPiece(b"b\n")])
    assert len(writes) == 2, writes
    assert writes[0].startswith(b"HTTP/1.1 200 OK")
    assert writes[0].endswith(b"\r\n\r\n2\r\na\n\r\n")
    assert writes[1] == b"2\r\nb\n\r\n0\r\n\r\n"


async def test_an_empty_body_is_one_write_too() -> None:
    writes = await _writes_on_uvicorn([])
    assert len(writes) == 1, writes
    assert writes[0].startswith(b"HTTP/1.1 200 OK")
    assert writes[0].endswith(b"\r\n\r\n0\r\n\r\n")

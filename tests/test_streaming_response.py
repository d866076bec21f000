"""PreparedStreamResponse: a body's marked last piece goes out with the end of the body, and on uvicorn's
connection a response costs as few writes as its pieces allow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
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


REQUEST = b"POST /stream HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n\r\n"
HEADERS = {"x-request-id": "r-1", "x-orpheus-queue-depth": "0"}


def _protocol(app: Any) -> tuple[HttpToolsProtocol, RecordingTransport]:
    config = uvicorn.Config(app=app, lifespan="off", proxy_headers=False, log_config=None, access_log=False)
    config.load()
    state = ServerState()
    state.default_headers = [(b"date", b"Thu, 03 Dec 2026 16:00:00 GMT"), (b"server", b"uvicorn")]
    protocol = HttpToolsProtocol(config, state, {}, asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


async def _writes_on_uvicorn(
    pieces: list[bytes], request: bytes = REQUEST, headers: dict[str, str] | None = None, *, ended: bytes = b"0\r\n\r\n"
) -> list[bytes]:
    """The writes uvicorn's httptools protocol makes for one POST answered by a PreparedStreamResponse
    whose body yields ``pieces``."""

    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    async def prepare() -> PreparedStream:
        return PreparedStream(body=body(), media_type="application/x-ndjson", headers=headers or {})

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await PreparedStreamResponse(prepare)(scope, receive, send)

    protocol, transport = _protocol(app)
    protocol.data_received(request)
    assert await eventually(lambda: any(w.endswith(ended) for w in transport.writes))
    protocol.connection_lost(None)
    return transport.writes


async def _head_uvicorn_writes(request: bytes, headers: dict[str, str]) -> tuple[bytes, bool]:
    """The head uvicorn's own ``send`` writes for a streamed response with ``headers`` (as
    PreparedStreamResponse sets them), and whether it closed the connection after the body."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        all_headers = {**headers, "content-type": "application/x-ndjson"}
        all_headers.update({"cache-control": "no-store", "x-accel-buffering": "no"})
        raw = [(k.encode(), v.encode()) for k, v in all_headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": raw})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    protocol, transport = _protocol(app)
    protocol.data_received(request)
    assert await eventually(lambda: any(w.endswith(b"0\r\n\r\n") for w in transport.writes))
    closed = transport.closed
    protocol.connection_lost(None)
    return transport.writes[0], closed


async def test_the_head_is_the_one_uvicorn_writes() -> None:
    """The head is built by the sink, so that it leaves with the first piece: byte for byte what
    uvicorn's own ``send`` writes (its date and server headers, the framing), kept alive or not."""
    closing = REQUEST.replace(b"host: localhost\r\n", b"host: localhost\r\nconnection: close\r\n")
    for request in (REQUEST, closing, REQUEST.replace(b"HTTP/1.1", b"HTTP/1.0")):
        expected, closed = await _head_uvicorn_writes(request, HEADERS)
        writes = await _writes_on_uvicorn([FinalPiece(b"x\n")], request, HEADERS)
        assert writes[0].partition(b"\r\n\r\n")[0] == expected.partition(b"\r\n\r\n")[0]
        assert (b"connection: close" in expected) is closed is (request != REQUEST)


@pytest.mark.parametrize(
    "injected",
    [{"x-request-id": "a\r\nset-cookie: b"}, {"x-a\r\nset-cookie: b\r\nx-c": "d"}],
    ids=["in-a-value", "in-a-name"],
)
async def test_a_header_with_a_line_break_never_reaches_the_wire(injected: dict[str, str]) -> None:
    """Names and values checked as uvicorn checks them: the app fails before its response starts,
    and uvicorn answers 500."""
    writes = await _writes_on_uvicorn([FinalPiece(b"x\n")], headers=injected, ended=b"Internal Server Error")
    assert writes[0].startswith(b"HTTP/1.1 500 ")
    assert not any(b"set-cookie" in w for w in writes)


class _WritesItself:
    """A body that writes itself to the sink (as the gateway's relay does), noting what the
    connection had been sent when its last piece was written."""

    def __init__(self, transport: RecordingTransport) -> None:
        self.transport = transport
        self.seen: list[bytes] = []

    def __aiter__(self) -> AsyncIterator[bytes]:
        raise AssertionError("a body that writes itself is not iterated")

    async def write_direct(self, sink: Any) -> bool:
        sink.write(b"a\n")
        sink.write(FinalPiece(b"eos\n"))
        self.seen = list(self.transport.writes)
        return True


async def test_a_final_piece_is_on_the_wire_as_soon_as_it_is_written() -> None:
    """The body's end leaves when its last piece is written (from the worker connection's read
    callback), not after the stream's bookkeeping has run and the response task resumed."""
    bodies: list[_WritesItself] = []

    async def prepare() -> PreparedStream:
        return PreparedStream(body=bodies[0], media_type="application/x-ndjson")  # type: ignore[arg-type]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await PreparedStreamResponse(prepare)(scope, receive, send)

    protocol, transport = _protocol(app)
    bodies.append(_WritesItself(transport))
    protocol.data_received(REQUEST)
    assert await eventually(lambda: bool(bodies[0].seen))
    assert bodies[0].seen[-1] == b"4\r\neos\n\r\n0\r\n\r\n"
    assert await eventually(lambda: protocol.cycle is not None and protocol.cycle.response_complete)
    protocol.connection_lost(None)


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

"""The lean HTTP/1.1 client: streams from a real worker, its pool, and faults from a test server.

A real worker shows the normal life of a stream (a whole v1 stream, a pooled
connection reused, a stream cut off that stops the worker, the connection cap).
What a worker never does (close a kept-alive connection as it is reused, cut a
chunked body, never answer, answer in something that is not HTTP, send a body
with no framing) comes from :class:`FaultServer`, a test server written here
for faults.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from orpheus_tts.engines.testing import render
from orpheus_tts.protocol import (
    AUDIO_FORMAT,
    NDJSON_MEDIA_TYPE,
    ChunkFrame,
    EosFrame,
    Frame,
    FrameDecoder,
    StreamTracker,
)
from orpheus_tts.routing import leanhttp
from orpheus_tts.routing.leanhttp import HIGH_WATER_BYTES, LeanStreamClient
from orpheus_tts.routing.transport import ResponseHeaders, ResponseTimeout, StreamResponse, TransportFailure
from orpheus_tts.worker.app import create_app
from orpheus_tts.worker.config import WorkerConfig
from tests.eventually import eventually
from tests.faultproxy import fault_proxy
from tests.routing.engines import CountingToneEngine
from tests.servers import free_port, run_server

TEXT = "The quick brown fox. It jumps over the lazy dog."
JSON_HEADERS = {"content-type": "application/json"}
TIMEOUT = httpx.Timeout(connect=5.0, read=10.0, write=5.0, pool=5.0)
BOUND_S = 5.0
"""Outer bound on a call that must end by itself: a regression fails the test instead of hanging it."""

OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


@asynccontextmanager
async def lean_client(base_url: str, **overrides: float) -> AsyncIterator[LeanStreamClient]:
    """A lean client to ``base_url``'s stream route, closed at the end of the block."""
    settings: dict[str, float] = {
        "max_connections": 4,
        "max_keepalive_connections": 4,
        "keepalive_expiry_s": 30.0,
        **overrides,
    }
    client = LeanStreamClient(
        f"{base_url}/v1/tts/stream",
        max_connections=int(settings["max_connections"]),
        max_keepalive_connections=int(settings["max_keepalive_connections"]),
        keepalive_expiry_s=settings["keepalive_expiry_s"],
    )
    try:
        yield client
    finally:
        await client.aclose()


def tts_body(text: str = TEXT, **params: object) -> bytes:
    return json.dumps({"text": text, **params}).encode("utf-8")


async def read_body(response: StreamResponse) -> bytes:
    """The rest of the body, read piece by piece to its end."""
    pieces: list[bytes] = []
    while piece := await asyncio.wait_for(response.read(), BOUND_S):
        pieces.append(piece)
    return b"".join(pieces)


async def read_into(response: StreamResponse, received: list[bytes]) -> None:
    """Read the body to its end into ``received``, keeping what came before a failure."""
    while piece := await asyncio.wait_for(response.read(), BOUND_S):
        received.append(piece)


def v1_frames(body: bytes) -> list[Frame]:
    """The body's frames, checked against the v1 rules; the stream must end in ``eos``."""
    decoder, tracker = FrameDecoder(), StreamTracker()
    frames = [*decoder.feed(body), *decoder.close()]
    for frame in frames:
        tracker.observe(frame)
    assert tracker.complete, frames[-1:]
    assert isinstance(frames[-1], EosFrame)
    return frames


def pcm_of(frames: list[Frame]) -> bytes:
    return b"".join(f.pcm for f in frames if isinstance(f, ChunkFrame))


# --------------------------------------------------------------------------- a real worker


async def test_a_stream_from_a_real_worker_is_whole() -> None:
    with run_server(create_app(CountingToneEngine(), WorkerConfig())) as url:
        async with lean_client(url) as client:
            response = await client.post(tts_body(), {**JSON_HEADERS, "X-Request-Id": "lean-1"}, TIMEOUT)
            assert response.status_code == 200
            assert response.headers["Content-Type"] == response.headers["content-type"] == NDJSON_MEDIA_TYPE
            assert response.headers["X-AUDIO-FORMAT"] == AUDIO_FORMAT
            assert response.headers["x-request-id"] == "lean-1"
            frames = v1_frames(await read_body(response))
            await response.aclose()
    assert pcm_of(frames) == render(TEXT)


async def test_a_second_request_reuses_the_pooled_connection() -> None:
    engine = CountingToneEngine()
    with run_server(create_app(engine, WorkerConfig())) as url, fault_proxy(url) as proxy:
        async with lean_client(proxy.url) as client:
            for text in ("First request.", "Second request."):
                response = await client.post(tts_body(text), JSON_HEADERS, TIMEOUT)
                assert response.status_code == 200
                assert pcm_of(v1_frames(await read_body(response))) == render(text)
                await response.aclose()
            assert client.open_connections == 1
    assert proxy.connections == 1, "a response read to its end must leave its connection for the next request"
    assert engine.completed == 2


async def test_a_response_closed_before_its_end_closes_the_connection() -> None:
    engine = CountingToneEngine(faults=True)
    with run_server(create_app(engine, WorkerConfig())) as url, fault_proxy(url) as proxy:
        async with lean_client(proxy.url) as client:
            # The worker goes silent after its first piece: only the client's close can end the stream.
            response = await client.post(tts_body(TEXT * 4, fault_stall_after=1), JSON_HEADERS, TIMEOUT)
            assert response.status_code == 200
            assert await asyncio.wait_for(response.read(), BOUND_S)
            await response.aclose()
            assert await eventually(lambda: client.open_connections == 0), "the cut-off connection stayed open"
            assert await eventually(lambda: engine.cancelled == 1), "the worker never saw the close"

            again = await client.post(tts_body(), JSON_HEADERS, TIMEOUT)
            assert pcm_of(v1_frames(await read_body(again))) == render(TEXT)
            await again.aclose()
    assert proxy.connections == 2, "the next request must come on a new connection"
    assert engine.completed == 1


async def test_at_the_connection_cap_a_second_post_waits_for_the_first() -> None:
    with run_server(create_app(CountingToneEngine(faults=True), WorkerConfig())) as url, fault_proxy(url) as proxy:
        first_done_when_second_answered: list[bool] = []
        async with lean_client(proxy.url, max_connections=1, max_keepalive_connections=1) as client:
            first = await client.post(tts_body(TEXT, fault_piece_delay_ms=20), JSON_HEADERS, TIMEOUT)

            async def second_post() -> StreamResponse:
                response = await client.post(tts_body("Second."), JSON_HEADERS, TIMEOUT)
                first_done_when_second_answered.append(first.finished)
                return response

            second = asyncio.ensure_future(second_post())
            assert pcm_of(v1_frames(await read_body(first))) == render(TEXT)
            await first.aclose()
            response = await asyncio.wait_for(second, BOUND_S)
            assert response.status_code == 200
            assert pcm_of(v1_frames(await read_body(response))) == render("Second.")
            await response.aclose()
    assert first_done_when_second_answered == [True], "the second request went out before the first's body ended"
    assert proxy.connections == 1, "the second request must wait for the one connection allowed"


async def test_at_the_connection_cap_a_post_gives_up_after_the_pool_timeout() -> None:
    with run_server(create_app(CountingToneEngine(faults=True), WorkerConfig())) as url:
        async with lean_client(url, max_connections=1, max_keepalive_connections=1) as client:
            first = await client.post(tts_body(TEXT, fault_piece_delay_ms=20), JSON_HEADERS, TIMEOUT)
            tiny_pool = httpx.Timeout(connect=5.0, read=10.0, write=5.0, pool=0.05)
            with pytest.raises(TransportFailure, match="busy"):
                await asyncio.wait_for(client.post(tts_body("Second."), JSON_HEADERS, tiny_pool), BOUND_S)
            assert pcm_of(v1_frames(await read_body(first))) == render(TEXT), "the held stream goes on"
            await first.aclose()
            assert client.open_connections == 1


# --------------------------------------------------------------------------- faults from a test server

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
Serve = Callable[["FaultServer", int, Reader, Writer], Awaitable[None]]


class FaultServer:
    """A test server, for faults: each connection (numbered from 0) is handed to ``serve``.

    ``requests`` lists, for each request read in full, the number of the
    connection it came on.
    """

    def __init__(self, serve: Serve) -> None:
        self.serve = serve
        self.connections = 0
        self.requests: list[int] = []
        self.url = ""
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        index = self.connections
        self.connections += 1
        try:
            await self.serve(self, index, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def read_request(self, index: int, reader: asyncio.StreamReader) -> bool:
        """Read one request (head and body); False when the client closed the connection instead."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        self.requests.append(index)
        return True


@asynccontextmanager
async def fault_server(serve: Serve) -> AsyncIterator[FaultServer]:
    server = FaultServer(serve)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def answer_ok(server: FaultServer, index: int, reader: Reader, writer: Writer) -> None:
    """Answer every request with a kept-alive 200 ``ok``."""
    while await server.read_request(index, reader):
        writer.write(OK)
        await writer.drain()


async def until_closed(reader: asyncio.StreamReader) -> None:
    """Wait for the client to close the connection, reading nothing into it."""
    while await reader.read(65536):
        pass


HELLO_THEN_SILENCE = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
SHORT_READ = httpx.Timeout(connect=5.0, read=0.2, write=5.0, pool=5.0)


def answering(reply: bytes) -> Serve:
    """A server that reads one request, sends ``reply`` (possibly nothing) and waits for the client to go."""

    async def serve(server: FaultServer, index: int, reader: Reader, writer: Writer) -> None:
        await server.read_request(index, reader)
        if reply:
            writer.write(reply)
            await writer.drain()
        await until_closed(reader)

    return serve


async def test_a_reused_connection_the_server_closed_is_retried_once_on_a_new_one() -> None:
    async def serve(server: FaultServer, index: int, reader: Reader, writer: Writer) -> None:
        if index == 0:
            # The first request is answered and kept alive; the next one on this connection finds
            # it closed (the server's keep-alive timeout ran out just as the client reused it).
            await server.read_request(index, reader)
            writer.write(OK)
            await writer.drain()
            await server.read_request(index, reader)
            return
        await answer_ok(server, index, reader, writer)

    async with fault_server(serve) as server:
        async with lean_client(server.url) as client:
            first = await client.post(b"{}", JSON_HEADERS, TIMEOUT)
            assert await read_body(first) == b"ok"
            assert client.open_connections == 1
            second = await asyncio.wait_for(client.post(b"{}", JSON_HEADERS, TIMEOUT), BOUND_S)
            assert second.status_code == 200
            assert await read_body(second) == b"ok"
        assert server.connections == 2
        assert server.requests == [0, 0, 1], "the second request is sent again, once, on a new connection"


async def test_a_new_connection_closed_before_any_answer_is_not_retried() -> None:
    async def serve(server: FaultServer, index: int, reader: Reader, writer: Writer) -> None:
        await server.read_request(index, reader)  # the server saw the request: sending it again repeats it

    async with fault_server(serve) as server:
        async with lean_client(server.url) as client:
            with pytest.raises(TransportFailure):
                await asyncio.wait_for(client.post(b"{}", JSON_HEADERS, TIMEOUT), BOUND_S)
            assert await eventually(lambda: client.open_connections == 0)
        assert server.connections == 1
        assert server.requests == [0]


async def test_a_chunked_body_cut_off_by_the_server_raises_transport_failure() -> None:
    async def serve(server: FaultServer, index: int, reader: Reader, writer: Writer) -> None:
        await server.read_request(index, reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nwo")
        await writer.drain()

    async with fault_server(serve) as server:
        async with lean_client(server.url) as client:
            response = await client.post(b"{}", JSON_HEADERS, TIMEOUT)
            assert response.status_code == 200
            received: list[bytes] = []
            with pytest.raises(TransportFailure):
                await read_into(response, received)
            assert b"".join(received).startswith(b"hello")
            await response.aclose()
            assert await eventually(lambda: client.open_connections == 0)


async def test_a_server_that_never_answers_raises_response_timeout() -> None:
    async with fault_server(answering(b"")) as server:
        async with lean_client(server.url) as client:
            with pytest.raises(ResponseTimeout):
                await asyncio.wait_for(client.post(b"{}", JSON_HEADERS, SHORT_READ), BOUND_S)
            assert await eventually(lambda: client.open_connections == 0), "a timed-out connection must be closed"
        assert server.requests == [0]


async def test_a_body_that_goes_silent_raises_response_timeout() -> None:
    async with fault_server(answering(HELLO_THEN_SILENCE)) as server:
        async with lean_client(server.url) as client:
            response = await client.post(b"{}", JSON_HEADERS, SHORT_READ)
            assert await asyncio.wait_for(response.read(), BOUND_S) == b"hello"
            with pytest.raises(ResponseTimeout):
                await asyncio.wait_for(response.read(), BOUND_S)
            await response.aclose()
            assert await eventually(lambda: client.open_connections == 0)


async def test_an_answer_that_is_not_http_raises_transport_failure() -> None:
    async with fault_server(answering(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")) as server:
        async with lean_client(server.url) as client:
            with pytest.raises(TransportFailure, match="not valid HTTP"):
                await asyncio.wait_for(client.post(b"{}", JSON_HEADERS, TIMEOUT), BOUND_S)
            assert await eventually(lambda: client.open_connections == 0)


async def test_a_body_without_framing_ends_at_the_close() -> None:
    async def serve(server: FaultServer, index: int, reader: Reader, writer: Writer) -> None:
        await server.read_request(index, reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nfirst,")
        await writer.drain()
        writer.write(b"second")
        await writer.drain()

    async with fault_server(serve) as server:
        async with lean_client(server.url) as client:
            response = await client.post(b"{}", JSON_HEADERS, TIMEOUT)
            assert response.status_code == 200
            assert await read_body(response) == b"first,second"
            await response.aclose()
            assert await eventually(lambda: client.open_connections == 0)


async def test_nothing_listening_raises_transport_failure() -> None:
    async with lean_client(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(TransportFailure):
            await asyncio.wait_for(client.post(b"{}", JSON_HEADERS, TIMEOUT), BOUND_S)
        assert client.open_connections == 0, "a failed connect must not hold a place in the pool"


@pytest.mark.parametrize("value", ["a\r\nx-injected: 1", "a\nx-injected: 1", "a\rb"])
async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(value: str) -> None:
    async with fault_server(answer_ok) as server:
        async with lean_client(server.url) as client:
            with pytest.raises(ValueError, match="line break"):
                await asyncio.wait_for(client.post(b"{}", {**JSON_HEADERS, "x-note": value}, TIMEOUT), BOUND_S)
            assert client.open_connections == 0
            ok = await client.post(b"{}", {**JSON_HEADERS, "x-note": "fine"}, TIMEOUT)
            assert await read_body(ok) == b"ok"
        assert server.connections == 1
        assert server.requests == [0], "the refused request must not reach the server"


def _all_in_or_paused(response: StreamResponse) -> bool:
    lean: Any = response
    return bool(lean._state == leanhttp._DONE or lean._paused)


async def test_a_body_that_ends_in_the_read_that_pauses_it_leaves_a_reading_connection() -> None:
    """Unread bytes past the high-water mark pause the socket; when that same read also ends the
    body, the connection goes back to the pool and must be read again, or the next request on it
    waits out its read timeout. Sizes around a read's 256 KiB make that read end the body."""
    sizes = [HIGH_WATER_BYTES + extra for extra in (1_000, 20_000, 50_000, 120_000)]

    async def serve(server: FaultServer, index: int, reader: Reader, writer: Writer) -> None:
        while await server.read_request(index, reader):
            size = sizes[len(server.requests) % len(sizes)]
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size + b"x" * size)
            await writer.drain()

    async with fault_server(serve) as server:
        quick = httpx.Timeout(connect=5.0, read=2.0, write=5.0, pool=5.0)
        async with lean_client(server.url, max_connections=1, max_keepalive_connections=1) as client:
            for round_ in range(2 * len(sizes)):
                response = await client.post(b"{}", JSON_HEADERS, quick)
                expected = sizes[(round_ + 1) % len(sizes)]
                assert await eventually(functools.partial(_all_in_or_paused, response))  # a slow reader: all of it came
                assert len(await read_body(response)) == expected
                await response.aclose()
    assert server.connections == 1, "every request on the one kept-alive connection"


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
THREE_CHUNKS = b"3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n0\r\n\r\n"
"""Three HTTP chunks and the body's end, sent in one write: they arrive in one read."""


async def head_then_three_chunks(server: FaultServer, index: int, reader: Reader, writer: Writer) -> None:
    await server.read_request(index, reader)
    writer.write(CHUNKED_HEAD)
    await writer.drain()
    writer.write(THREE_CHUNKS)
    await writer.drain()
    await until_closed(reader)


async def test_a_read_takes_every_chunk_that_came_in_one_piece() -> None:
    """A worker writes a frame per HTTP chunk; a relay that got them one by one would write them
    on one by one, a system call and a wakeup of its client each."""
    async with fault_server(head_then_three_chunks) as server:
        async with lean_client(server.url) as client:
            response = await client.post(b"{}", JSON_HEADERS, TIMEOUT)
            assert await asyncio.wait_for(response.read(), BOUND_S) == b"onetwothree"
            assert await asyncio.wait_for(response.read(), BOUND_S) == b""
            await response.aclose()


async def test_a_pushed_body_gets_what_one_read_brought_in_one_piece() -> None:
    async with fault_server(head_then_three_chunks) as server:
        async with lean_client(server.url) as client:
            response: Any = await client.post(b"{}", JSON_HEADERS, TIMEOUT)
            pieces: list[bytes] = []
            lost: list[Exception] = []
            response.push(pieces.append, lost.append)
            assert await eventually(lambda: b"" in pieces)
            assert pieces == [b"onetwothree", b""]
            assert not lost
            await response.aclose()


async def test_a_pushed_body_cut_mid_read_gets_the_bytes_before_the_cut_first() -> None:
    async def serve(server: FaultServer, index: int, reader: Reader, writer: Writer) -> None:
        await server.read_request(index, reader)
        writer.write(CHUNKED_HEAD)
        await writer.drain()
        writer.write(b"3\r\none\r\n3\r\ntwo\r\nnot a chunk size\r\n")
        await writer.drain()
        await until_closed(reader)

    async with fault_server(serve) as server:
        async with lean_client(server.url) as client:
            response: Any = await client.post(b"{}", JSON_HEADERS, TIMEOUT)
            events: list[object] = []
            response.push(events.append, events.append)
            assert await eventually(lambda: any(isinstance(e, Exception) for e in events))
            assert events[:-1] == [b"onetwo"]
            assert isinstance(events[-1], TransportFailure)
            assert await eventually(lambda: client.open_connections == 0)


async def test_a_post_cancelled_as_its_connection_opens_gives_its_slot_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hedge's loser (or a caller that gave up) cancelled right as the socket connects must count
    its connection once: a slot counted twice would let the pool grow past its cap."""

    async def serve(server: FaultServer, index: int, reader: Reader, writer: Writer) -> None:
        await reader.read()

    async with fault_server(serve) as server:
        async with lean_client(server.url, max_connections=2) as client:
            task: asyncio.Task[StreamResponse] | None = None
            made = leanhttp._Connection.connection_made

            def cancel_on_connect(self: leanhttp._Connection, transport: asyncio.BaseTransport) -> None:
                made(self, transport)
                assert task is not None
                task.cancel()

            monkeypatch.setattr(leanhttp._Connection, "connection_made", cancel_on_connect)
            task = asyncio.ensure_future(client.post(b"{}", JSON_HEADERS, TIMEOUT))
            with pytest.raises(asyncio.CancelledError):
                await task
            monkeypatch.setattr(leanhttp._Connection, "connection_made", made)
            assert await eventually(lambda: client.open_connections == 0)
            assert client.open_connections == 0, "nothing may take it below zero"


def test_response_headers_read_as_httpx_reads_them() -> None:
    raw = [(b"Content-Type", b"application/x-ndjson"), (b"Set-Cookie", b"a=1"), (b"set-cookie", b"b=2")]
    ours, theirs = ResponseHeaders(raw), httpx.Headers(raw)
    for name in ("content-type", "CONTENT-TYPE", "set-cookie", "Set-Cookie"):
        assert ours[name] == theirs[name]
        assert name in ours
    assert ours.get("x-missing") is None
    assert object() not in ours
    assert sorted(ours) == ["content-type", "set-cookie"]
    assert len(ours) == 2

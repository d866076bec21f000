"""The proxy benchmark's two clients: a connection per stream, or kept-alive connections reused; the text sent."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from bench.proxy_clients import TEXT, StreamCheck, open_client

from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.protocol import ChunkFrame, EosFrame, Frame, encode_frame
from orpheus_tts.worker.app import create_app
from orpheus_tts.worker.config import WorkerConfig
from tests.servers import run_server

STREAMS = 5


async def _connections(url: str, *, keep_alive: bool) -> int:
    async with open_client(4, keep_alive=keep_alive) as client:
        for _ in range(STREAMS):
            assert await client.one(url) > 0  # each stream checked whole
        return client.connections


@pytest.mark.parametrize(("keep_alive", "expected"), [(False, STREAMS), (True, 1)])
def test_the_keep_alive_client_reuses_its_connection_and_the_default_one_opens_one_per_stream(
    keep_alive: bool, expected: int
) -> None:
    with run_server(create_app(ToneEngine(), WorkerConfig())) as url:
        assert asyncio.run(_connections(url, keep_alive=keep_alive)) == expected


def _characters(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    lines = [line for line in text.splitlines() if line.startswith("orpheus_input_characters_total")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


async def _stream_once(url: str, text: str, *, keep_alive: bool) -> None:
    async with open_client(4, keep_alive=keep_alive, text=text) as client:
        assert await client.one(url) > 0


@pytest.mark.parametrize("keep_alive", [False, True])
def test_both_clients_ask_for_the_text_they_are_given(keep_alive: bool) -> None:
    text = " ".join([TEXT] * 3)  # what --repeat-text 3 asks for
    with run_server(create_app(ToneEngine(), WorkerConfig())) as url:
        before = _characters(url)
        asyncio.run(_stream_once(url, text, keep_alive=keep_alive))
        assert _characters(url) - before == len(text)


async def _one(url: str, params: dict[str, object], *, keep_alive: bool) -> float:
    async with open_client(4, keep_alive=keep_alive, params=params) as client:
        return await client.one(url)


@pytest.mark.parametrize("keep_alive", [False, True])
def test_both_clients_send_the_engine_parameters_they_are_given(keep_alive: bool) -> None:
    with run_server(create_app(ToneEngine(faults=True), WorkerConfig())) as url:
        assert asyncio.run(_one(url, {"fault_piece_delay_ms": 1.0}, keep_alive=keep_alive)) > 0
        # The worker ends the stream with an error frame after one piece: it got the parameter.
        with pytest.raises(RuntimeError, match="ended without eos"):
            asyncio.run(_one(url, {"fault_error_after": 1}, keep_alive=keep_alive))


def _body(chunks: int) -> bytes:
    frames: list[Frame] = [ChunkFrame(seq=i, pcm=b"\x01\x00" * 480) for i in range(chunks)]
    frames.append(EosFrame(samples_total=480 * chunks, chunks_total=chunks))
    return b"".join(encode_frame(f) for f in frames)


def test_the_first_chunk_is_timed_at_the_arrival_of_the_piece_that_completed_it() -> None:
    body = _body(5)
    check = StreamCheck()
    cut = body.index(b"\n") // 2  # the first chunk's line split across two pieces
    check.feed(body[:cut], check.started + 1.0)
    assert check.ttfb is None
    check.feed(body[cut:], check.started + 2.0)  # the first chunk with all the rest: not timed after their decoding
    assert check.ttfb == pytest.approx(2.0)
    assert check.complete

"""Header bombs: a request head past the limits is 431 (or a close), and memory stays flat."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.serving.local import LOOPBACK, ThreadedServer
from orpheus_tts.serving.settings import DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADER_LINE_BYTES
from orpheus_tts.worker.app import create_app
from tests.security.attacks import cli_server, header_bomb, rss_kib, send_head

BOMB_BYTES = 16 * 1024 * 1024
"""Each bomb's bound: far past any limit, small enough for a shared test machine."""
BOMBS = 4
RSS_GROWTH_LIMIT_KIB = 16 * 1024
"""Four 16 MiB bombs buffered would grow the server by 64 MiB or more."""


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with ThreadedServer(create_app(ToneEngine())) as server:
        yield server.port


def head(*lines: str, target: str = "/healthz") -> bytes:
    return "\r\n".join([f"GET {target} HTTP/1.1", f"Host: {LOOPBACK}", *lines, "", ""]).encode()


def test_header_bombs_are_refused_and_memory_stays_flat() -> None:
    with cli_server("worker", "--engine", "test") as (_, port, proc):
        before = rss_kib(proc.pid)
        with ThreadPoolExecutor(BOMBS) as pool:
            results = list(pool.map(lambda _: header_bomb(port, BOMB_BYTES), range(BOMBS)))
        after = rss_kib(proc.pid)
    for result in results:
        assert result.closed, "the server must close a connection whose head passes the limit"
        assert result.status in (431, None)
        assert result.sent_bytes < BOMB_BYTES, "refused long before the whole bomb was sent"
    assert any(r.status == 431 for r in results)
    assert after - before < RSS_GROWTH_LIMIT_KIB, f"RSS grew by {after - before} KiB"


def test_the_largest_header_line_passes_and_one_byte_more_is_431(port: int) -> None:
    overhead = len("X-Big: \r\n")
    largest = "X-Big: " + "a" * (DEFAULT_MAX_HEADER_LINE_BYTES - overhead)
    assert send_head(port, head(largest)).status == 200
    refused = send_head(port, head(largest + "a"))
    assert (refused.status, refused.closed) == (431, True)


def test_many_small_headers_past_the_total_are_431(port: int) -> None:
    count = DEFAULT_MAX_HEADER_BYTES // 100
    under = [f"X-H{i}: " + "a" * 80 for i in range(count // 2)]
    assert send_head(port, head(*under)).status == 200
    over = [f"X-H{i}: " + "a" * 80 for i in range(count * 2)]
    refused = send_head(port, head(*over))
    assert (refused.status, refused.closed) == (431, True)


def test_a_request_line_past_the_line_limit_is_431(port: int) -> None:
    target = "/healthz?" + "a" * DEFAULT_MAX_HEADER_LINE_BYTES
    assert send_head(port, head(target=target)).status == 431


def test_the_431_is_a_json_error(port: int) -> None:
    import socket

    with socket.create_connection((LOOPBACK, port)) as sock:
        sock.sendall(head("X-Big: " + "a" * (2 * DEFAULT_MAX_HEADER_LINE_BYTES)))
        raw = b""
        while piece := sock.recv(65536):
            raw += piece
    assert raw.startswith(b"HTTP/1.1 431 ")
    assert b'"code": "headers_too_large"' in raw
    assert b"connection: close" in raw.lower()

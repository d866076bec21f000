"""Slowloris: a request that arrives too slowly is cut (408, close); a long response is not."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.protocol import EosFrame, FrameDecoder
from orpheus_tts.serving.local import LOOPBACK, ThreadedServer
from orpheus_tts.serving.settings import HttpSettings
from orpheus_tts.worker.app import create_app
from orpheus_tts.worker.config import WorkerConfig
from tests.security.attacks import read_answer, slow_body, slow_headers

HTTP = HttpSettings(header_timeout_s=1.0, body_idle_timeout_s=0.5, body_timeout_s=1.5)
ATTACK_BOUND_S = 8.0
"""How long each attack may go on: far past every timeout, so a hold means no timeout."""
HANG_GUARD_S = 6.0


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with ThreadedServer(create_app(ToneEngine(faults=True), WorkerConfig(http=HTTP))) as server:
        yield server.port


def test_headers_at_a_byte_at_a_time_are_cut_at_the_header_timeout(port: int) -> None:
    held = slow_headers(port, interval_s=0.1, max_s=ATTACK_BOUND_S)
    assert (held.status, held.closed) == (408, True)
    assert held.held_s < HANG_GUARD_S


def test_a_connection_that_sends_nothing_is_closed(port: int) -> None:
    with socket.create_connection((LOOPBACK, port)) as sock:
        raw, closed = read_answer(sock, ATTACK_BOUND_S)
    assert closed
    assert raw == b""


def test_a_body_that_stops_is_cut_at_the_idle_timeout(port: int) -> None:
    held = slow_body(port, interval_s=ATTACK_BOUND_S, max_s=ATTACK_BOUND_S)
    assert (held.status, held.closed) == (408, True)
    assert held.held_s < HANG_GUARD_S


def test_a_trickled_body_is_cut_at_the_total_body_timeout(port: int) -> None:
    # 0.2 s between bytes never trips the 0.5 s idle timeout; the 1.5 s total does.
    held = slow_body(port, interval_s=0.2, max_s=ATTACK_BOUND_S)
    assert (held.status, held.closed) == (408, True)
    assert held.held_s < HANG_GUARD_S


def test_a_stream_longer_than_every_read_timeout_is_not_cut(port: int) -> None:
    # 20 pieces 0.15 s apart: about 3 s of streaming, twice the longest read timeout.
    body = {"text": "A sentence long enough for twenty pieces of audio.", "fault_piece_delay_ms": 150}
    decoder = FrameDecoder()
    frames = []
    with httpx.stream("POST", f"http://{LOOPBACK}:{port}/v1/tts/stream", json=body, timeout=30) as response:
        assert response.status_code == 200
        for data in response.iter_raw():
            frames += decoder.feed(data)
    assert isinstance(frames[-1], EosFrame)

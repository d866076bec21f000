"""The proxy benchmark's client: how it ends a stream decides whether its connections are reused."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from bench.proxy import _Client

from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.worker.app import create_app
from orpheus_tts.worker.config import WorkerConfig
from tests.servers import run_server

STREAMS = 5


async def _connections(url: str, *, keep_alive: bool) -> int:
    async with httpx.AsyncClient(timeout=30) as http:
        client = _Client(http, keep_alive=keep_alive)
        for _ in range(STREAMS):
            assert await client.one(url) > 0  # each stream checked whole
        return client.connections


@pytest.mark.parametrize(("keep_alive", "expected"), [(False, STREAMS), (True, 1)])
def test_the_client_reuses_its_connection_only_when_it_reads_each_body_to_its_end(
    keep_alive: bool, expected: int
) -> None:
    with run_server(create_app(ToneEngine(), WorkerConfig())) as url:
        assert asyncio.run(_connections(url, keep_alive=keep_alive)) == expected

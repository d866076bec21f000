"""The proxy benchmark's two clients: one connection per stream, or kept-alive connections reused."""

from __future__ import annotations

import asyncio

import pytest
from bench.proxy_clients import open_client

from orpheus_tts.engines.testing import ToneEngine
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

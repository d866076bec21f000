"""Quotas shared across gateways: a real redis-server (Debian's package) and real gateway processes.

Skipped, saying why, where redis-server is not installed (``make test`` installs it as root with apt).
Streams are held open with the test engine's ``fault_stall_after`` (the worker sends one chunk, then
nothing), so which requests overlap is decided by the test, not by timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import cast

import httpx
import pytest
import redis

from orpheus_tts.gateway.app import create_app
from orpheus_tts.gateway.auth import Authenticator
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.gateway.keys import KeyLimits, sha256_hex
from orpheus_tts.gateway.redis_quotas import KEY_PREFIX
from tests.eventually import eventually, eventually_sync
from tests.servers import free_port, run_cli, run_server

REDIS = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
)
pytestmark = pytest.mark.skipif(
    REDIS is None, reason="redis-server is not installed (Debian's redis-server; make test installs it as root)"
)

KEY = "k-shared-quota-test-key"
LIMIT = 2
LEASE_S = 2.0
HELD = {"text": "Held open after its first chunk.", "fault_stall_after": 1}
STREAMS = f"{KEY_PREFIX}shared:streams"


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    assert REDIS is not None
    port = free_port()
    cmd = [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        assert eventually_sync(lambda: _pings(client), within_s=10), "redis-server did not start"
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="module")
def store() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(scope="module")
def worker() -> Iterator[str]:
    with run_cli("worker", "--engine", "test", "--enable-test-faults", "--capacity", "64") as (url, _):
        yield url


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.toml"
    path.write_text(
        f'[[keys]]\nname = "shared"\nsha256 = "{sha256_hex(KEY)}"\nmax_concurrent_streams = {LIMIT}\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture(autouse=True)
def empty_store(store: str) -> None:
    redis.Redis.from_url(store).flushdb()


@contextlib.contextmanager
def gateway_process(worker: str, store: str, keys_file: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    args = ["gateway", "--worker", worker, "--api-keys-file", str(keys_file)]
    args += ["--quota-store", store, "--quota-lease-s", str(LEASE_S)]
    with run_cli(*args) as running:
        yield running


class Held:
    """Streams that got their first chunk and are held open until closed."""

    def __init__(self) -> None:
        self.stack = contextlib.AsyncExitStack()
        self.bodies: list[AsyncIterator[bytes]] = []
        """Kept: an abandoned body iterator is closed when collected, which would end its stream."""

    async def open(self, client: httpx.AsyncClient, url: str) -> int:
        """Start one request; its status (a 200 stays open, anything else is read and closed)."""
        response = await self.stack.enter_async_context(
            client.stream("POST", f"{url}/v1/tts/stream", json=HELD, headers={"Authorization": f"Bearer {KEY}"})
        )
        if response.status_code == 200:
            body = response.aiter_raw()
            self.bodies.append(body)
            await anext(body)  # the first chunk: the slot is taken
        else:
            await response.aread()
        return response.status_code


@contextlib.asynccontextmanager
async def held() -> AsyncIterator[tuple[Held, httpx.AsyncClient]]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        streams = Held()
        async with streams.stack:
            yield streams, client


async def test_twenty_requests_on_two_gateways_admit_exactly_the_limit(
    store: str, worker: str, keys_file: Path
) -> None:
    with gateway_process(worker, store, keys_file) as (a, _), gateway_process(worker, store, keys_file) as (b, _):
        async with held() as (streams, client):
            statuses = await asyncio.gather(*(streams.open(client, (a, b)[i % 2]) for i in range(20)))
            assert statuses.count(200) == LIMIT, statuses
            assert statuses.count(429) == 20 - LIMIT, statuses
            assert redis.Redis.from_url(store).zcard(STREAMS) == LIMIT
            figures = {"requests": 20, "gateways": 2, "limit": LIMIT, "admitted": statuses.count(200)}
            print("two-gateway quota:", json.dumps(figures))
        # The streams closed: their slots are free at once (not after the lease time).
        assert await eventually(lambda: redis.Redis.from_url(store).zcard(STREAMS) == 0)
        async with held() as (streams, client):
            assert [await streams.open(client, b), await streams.open(client, a)] == [200, 200]


def _leases(db: redis.Redis) -> list[tuple[bytes, float]]:
    """The stream leases in the store: (member, expiry score)."""
    return cast(list[tuple[bytes, float]], db.zrange(STREAMS, 0, -1, withscores=True))


async def test_a_killed_gateway_frees_its_slots_within_the_lease_time(store: str, worker: str, keys_file: Path) -> None:
    db = redis.Redis.from_url(store)
    with gateway_process(worker, store, keys_file) as (b, _):
        async with held() as (streams, client):
            with gateway_process(worker, store, keys_file) as (a, proc):
                assert [await streams.open(client, a) for _ in range(LIMIT)] == [200] * LIMIT
                # While the streams run, their leases are renewed: the expiry moves forward.
                first = dict(_leases(db))
                assert await eventually(
                    lambda: all(s > first[m] for m, s in _leases(db)),
                    within_s=LEASE_S * 3,
                )
                os.killpg(proc.pid, signal.SIGKILL)  # mid-stream: no release, no more renewals
                proc.wait()
            assert await streams.open(client, b) == 429, "the dead gateway's slots are still leased"

            async def admitted() -> bool:
                async with client.stream(
                    "POST", f"{b}/v1/tts/stream", json={"text": "after"}, headers={"Authorization": f"Bearer {KEY}"}
                ) as response:
                    await response.aread()
                    return response.status_code == 200

            results: list[bool] = []

            def poll() -> bool:
                return bool(results and results[-1])

            async def keep_trying() -> None:
                while not poll():
                    results.append(await admitted())

            task = asyncio.ensure_future(keep_trying())
            try:
                assert await eventually(poll, within_s=LEASE_S * 4), "slots not freed within the lease time"
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def test_an_unreachable_store_fails_closed_by_default_or_open_when_asked(worker: str) -> None:
    nothing = f"redis://127.0.0.1:{free_port()}/0"
    limited = Authenticator([("shared", sha256_hex(KEY), KeyLimits(max_concurrent_streams=LIMIT))])
    headers = {"Authorization": f"Bearer {KEY}"}
    for failure, status in (("closed", 503), ("open", 200)):
        config = GatewayConfig(workers=(worker,), quota_store=nothing, quota_store_failure=failure)
        with run_server(create_app(config, limited)) as gw:
            async with httpx.AsyncClient(timeout=30) as client:
                response = await client.post(f"{gw}/v1/tts/stream", json={"text": "hi"}, headers=headers)
        assert response.status_code == status, response.text
        if status == 503:
            assert response.json()["error"]["code"] == "quota_store_unavailable"
            assert response.json()["error"]["retryable"] is True
            assert "retry-after" in response.headers
